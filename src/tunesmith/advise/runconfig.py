"""The ready run config that `tunesmith advise --output FILE` (and `tunesmith run --data FILE`) writes.

Every value advise chooses is a :class:`~tunesmith.advise.evalplan.Pick` with its reason; the picks
land in the config unless the base config sets that key itself (the user's choice wins), and are
recorded under ``advise.choices``. Relative paths are written relative to the written file's folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from tunesmith.advise.evalplan import Pick
from tunesmith.advise.recommend import Advice, recommended_seq_len
from tunesmith.config import RunConfig, build_config
from tunesmith.utils.io import write_text

# Config keys holding a path relative to the config file ("*" = every item of a list / value of a mapping).
# data.mix.source is also a name ("chatterbot"); it is rebased only when it is a path that exists.
PATH_KEYS = (
    "output_dir", "data.train_file", "data.validation_file", "data.test_file", "data.files.*.path", "data.consistency.json_schema",
    "data.mix.source",
    "eval.json_schema", "eval.local_models.*.path", "eval.endpoints.*.cache_dir", "eval.adversarial.file",
    "eval.regression.text_file", "eval.regression.prompts_file", "serve.adapters.*", "serve.adapter_dir",
    "serve.api_keys_file", "advise.gpu_catalog",
)


# ---------------------------------------------------------------------------- key paths


def explicitly_set(cfg: RunConfig, key: str) -> bool:
    """Whether the config file (or an override) gave ``key`` (dotted path) a value, rather than the default."""
    node: Any = cfg
    for part in key.split("."):
        if part not in getattr(node, "model_fields_set", ()):
            return False
        node = getattr(node, part)
    return True


def get_path(d: dict[str, Any], key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = d
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def rebase_paths(d: dict[str, Any], from_dir: Path, to_dir: Path) -> dict[str, Any]:
    """Rewrite the relative paths of config dict ``d`` (relative to ``from_dir``) relative to ``to_dir``."""
    from_dir, to_dir = Path(from_dir).resolve(), Path(to_dir).resolve()

    def rebase(value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            return value
        target = from_dir / value
        if key == "data.mix.source" and not target.exists():
            return value  # a named source
        return os.path.relpath(target, to_dir)

    def walk(node: Any, parts: list[str], key: str) -> Any:
        if not parts:
            return rebase(node, key)
        head, rest = parts[0], parts[1:]
        if head == "*":
            if isinstance(node, list):
                return [walk(v, rest, key) for v in node]
            if isinstance(node, dict):
                return {k: walk(v, rest, key) for k, v in node.items()}
            return node
        if isinstance(node, dict) and head in node:
            node[head] = walk(node[head], rest, key)
        return node

    for key in PATH_KEYS:
        walk(d, key.split("."), key)
    return d


# ---------------------------------------------------------------------------- what advise chooses


def config_picks(advice: Advice, base: RunConfig) -> list[Pick]:
    """Every setting advise chooses for the run config, with its reason: method, recipe, loss, evaluation."""
    picks: list[Pick] = []
    plan, r = advice.plan, advice.recipe
    if plan is not None:
        picks.append(Pick("train.method", plan.method, f"the cheapest method that fits: {plan.method} on "
                          f"{plan.gpu.name} needs {plan.memory.total_bytes / 2**30:.1f} GiB of its {plan.gpu.memory_gib:g} GiB"))
        if plan.gradient_checkpointing:
            picks.append(Pick("train.gradient_checkpointing", True, f"needed to fit on {plan.gpu.name}"))
    if r is not None:
        batch, accum, why = r.batch_size, r.grad_accum, r.reasons["batch_size"]
        if plan is not None and plan.batch_size < batch:  # memory: same rows per step, smaller micro-batches
            batch, accum = plan.batch_size, math.ceil(r.rows_per_step / plan.batch_size)
            why += f"; micro-batch {batch} so that it fits on {plan.gpu.name}"
        picks += [Pick("train.max_seq_length", r.max_seq_length, r.reasons["max_seq_length"]),
                  Pick("train.batch_size", batch, why), Pick("train.grad_accum", accum, why),
                  Pick("train.epochs", r.epochs, r.reasons["epochs"])]
        if r.lr is not None:
            picks.append(Pick("train.lr", r.lr, r.reasons["lr"]))
    else:
        picks += _picks_without_data(advice, base)
    domain = advice.answers.data_kind == "domain"
    picks.append(Pick("train.completion_only_loss", not domain,
                      "domain adaptation learns the whole text" if domain else
                      "instruction/task tuning: loss on the answers only"))
    return picks + advice.eval_picks


def _picks_without_data(advice: Advice, base: RunConfig) -> list[Pick]:
    """No dataset measured: the config's rows and epochs stay; the batch fits the plan; lr by model size."""
    from tunesmith.estimate.recipe import learning_rate

    picks = []
    plan = advice.plan
    if plan is not None and plan.batch_size != base.train.batch_size:
        effective = base.train.batch_size * base.train.grad_accum
        why = f"micro-batch {plan.batch_size} so that it fits on {plan.gpu.name}, same rows per step"
        picks += [Pick("train.batch_size", plan.batch_size, why),
                  Pick("train.grad_accum", max(1, effective // plan.batch_size), why)]
    picks.append(Pick("train.max_seq_length", recommended_seq_len(None, base.train.max_seq_length),
                      "no dataset measured: the config's row length"))
    if advice.arch is not None and advice.answers.recipe == "auto":
        method = plan.method if plan is not None else base.train.method
        picks.append(Pick("train.lr", *learning_rate(advice.arch.total_params, method, alpha=base.train.lora.alpha)))
    return picks


# ---------------------------------------------------------------------------- the file


def run_config_dict(advice: Advice, base: RunConfig, *, config_dir: Path, data_path: Path | None = None,
                    stratify_field: str | None = None) -> dict[str, Any]:
    """``base`` with advise's picks (where ``base`` does not set them), the dataset and the advise answers;
    relative paths relative to ``config_dir``, the folder the config will be written to."""
    from tunesmith.advise.config import Choice

    d = base.model_dump(mode="json")
    d.pop("base_dir", None)
    output_dir = d["output_dir"]
    rebase_paths(d, Path(base.base_dir), config_dir)
    if not explicitly_set(base, "output_dir"):
        d["output_dir"] = output_dir  # the default, "runs", beside the written config
    if advice.arch is not None and advice.answers.model:
        d["model"]["name_or_path"] = advice.arch.hf_id or advice.answers.model
    local = Path(d["model"]["name_or_path"]).expanduser()
    if local.exists():  # a folder: absolute, since model loading reads it from the working directory, not the config's
        d["model"]["name_or_path"] = str(local.resolve())
    d["model"]["dtype"] = "auto"
    applied = [p for p in advice.picks if not explicitly_set(base, p.key)]
    for p in applied:
        set_path(d, p.key, p.value)
    if d["train"]["method"] == "full":
        d["train"].pop("lora", None)  # a full fine-tune with lora settings is a config error
    if data_path is not None and data_path.is_file():
        d["data"]["train_file"] = os.path.relpath(data_path.resolve(), Path(config_dir).resolve())
        if stratify_field:
            d["data"]["stratify_field"] = stratify_field
    answers = advice.answers.model_copy(update={"choices": [Choice(key=p.key, value=p.value, reason=p.reason)
                                                            for p in applied]})
    d["advise"] = answers.model_dump(mode="json")
    return d


def write_run_config(path: str | Path, data: dict[str, Any]) -> RunConfig:
    """Validate ``data`` as a RunConfig (relative paths against ``path``'s folder) and write it atomically."""
    path = Path(path)
    cfg = build_config(data, source=str(path), base_dir=path.resolve().parent)
    header = ("# Written by `tunesmith advise`. advise.choices says why each chosen value was chosen; edit any of\n"
              "# them (or override: tunesmith run THIS_FILE train.lr=1e-4). Relative paths are relative to this file.\n")
    write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return cfg
