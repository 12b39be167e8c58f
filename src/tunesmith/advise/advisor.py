"""One advice from a run config and the answers: resolve the GPUs and the architecture, measure the
dataset (and this machine), choose the recipe and the evaluation, and ask the recommender.

Shared by `tunesmith advise` and the zero-config `tunesmith run --data FILE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.advise.config import AdviseConfig
from tunesmith.advise.recommend import Advice
from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError

APPROX_LENGTH_MARGIN = 1.25  # rows get this much room when token lengths are approximate (no tokenizer)


def build_advice(cfg: RunConfig, answers: AdviseConfig, *, data_path: Path | None, gpu_catalog: str | None,
                 stratify_field: str | None, probe: bool = True) -> Advice:
    """The advice for ``cfg`` (the base run config) and ``answers``; ``probe``: measure this machine too."""
    from tunesmith.advise.dataset import measure_dataset
    from tunesmith.advise.evalplan import plan_eval
    from tunesmith.advise.recommend import advise as make_advice
    from tunesmith.advise.runconfig import config_picks, explicitly_set
    from tunesmith.estimate.arch import Architecture
    from tunesmith.estimate.hardware import get_gpu, load_gpu_catalog

    gpus = load_gpu_catalog(gpu_catalog)
    if answers.gpu:
        get_gpu(answers.gpu, gpus)  # unknown name -> error with the known ones
    arch_spec = answers.model or cfg.model.name_or_path
    try:
        arch, unresolved = Architecture.resolve(arch_spec), None
    except TunesmithError as err:
        if answers.model:  # asked for explicitly: a typo deserves an error
            raise
        arch, unresolved = None, err.message
    facts = None
    if data_path is not None:
        tokenizer = _tokenizer_for(arch_spec, cfg) if arch is not None else None
        facts = measure_dataset(data_path, tokenizer=tokenizer, stratify_field=stratify_field)
    machine = None
    if probe and arch is not None:
        from tunesmith.advise.machine import probe_machine

        machine = probe_machine()
    shape = _recipe(cfg, answers, facts, params=None, method="lora")  # rows and epochs: the method is not known yet
    t = cfg.train
    batch = t.batch_size if shape is None or explicitly_set(cfg, "train.batch_size") else shape.batch_size
    seq = t.max_seq_length if shape is None or explicitly_set(cfg, "train.max_seq_length") else shape.max_seq_length
    epochs = t.epochs if shape is None or explicitly_set(cfg, "train.epochs") else shape.epochs
    advice = make_advice(
        answers, arch=arch, gpus=gpus, facts=facts, batch_size=batch, seq_len=seq, epochs=epochs, lora_r=t.lora.r,
        lora_targets=t.lora.target_modules, eval_fraction=cfg.data.test_fraction, eval_new_tokens=cfg.eval.max_new_tokens,
        machine=machine,
    )
    method = advice.plan.method if advice.plan is not None else t.method
    advice.recipe = _recipe(cfg, answers, facts, params=arch.total_params if arch else None, method=method)
    if facts is not None and facts.structure is not None:
        advice.eval_picks = plan_eval(facts.structure, facts.answers, answer_token_max=facts.answer_token_max,
                                      endpoints=[e.name for e in cfg.eval.endpoints], judge=cfg.eval.adversarial.judge)
    advice.picks = config_picks(advice, cfg)
    advice.kept = [p.key for p in advice.picks if explicitly_set(cfg, p.key)]
    if unresolved:
        advice.reasons.append(f"Memory, time and cost are not estimated: {unresolved}. Pass --model with a catalogue "
                              "architecture (tunesmith advise --list-models) or a folder holding the model's config.json.")
    return advice


def _recipe(cfg: RunConfig, answers: AdviseConfig, facts, *, params: float | None, method: str):
    """The recipe for the measured data (None without a dataset: the config's own values stay)."""
    from tunesmith.estimate.recipe import choose_recipe

    if facts is None:
        return None
    held_out = cfg.data.validation_fraction + cfg.data.test_fraction
    return choose_recipe(
        answers.recipe, params=params, method=method, train_examples=max(1, round(facts.unique * (1 - held_out))),
        token_mean=facts.token_mean, token_max=facts.token_max, alpha=cfg.train.lora.alpha,
        length_margin=APPROX_LENGTH_MARGIN if facts.token_counter.startswith("approx") else 1.0,
        seed_max_seq_length=cfg.train.max_seq_length, budgeted=cfg.train.time_budget is not None,
    )


def _tokenizer_for(arch_spec: str, cfg: RunConfig) -> Any | None:
    """The model's own tokenizer when it is on disk (embedded or a local folder); else None (approximate)."""
    from tunesmith.models.embedded import EMBEDDED_PREFIX

    local = arch_spec.startswith(EMBEDDED_PREFIX) or (Path(arch_spec).expanduser() / "tokenizer.json").is_file()
    if not local:
        return None
    try:
        from tunesmith.models.config import ModelConfig
        from tunesmith.models.loading import load_tokenizer

        return load_tokenizer(ModelConfig(name_or_path=arch_spec, cache_dir=cfg.model.cache_dir))
    except TunesmithError:
        return None
