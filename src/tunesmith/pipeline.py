"""The workflow, stage by stage. Each stage reads and writes files in the run folder, so any stage
can be re-run on its own (``tunesmith data|train|eval``) or all in order (``tunesmith run``); with
``tunesmith run --data FILE`` advise writes the config first (:func:`zero_config`).

run folder layout (``<output_dir>/<name>/``)::

    config.yaml          resolved config of the last command (paths relative to this folder)
    data/                train/validation/test.jsonl, rejected.jsonl, stats.json
    adapter/             PEFT adapter (adapter_config.json, adapter_model.safetensors)  [lora/dora/qlora]
    model/               full fine-tuned model                                           [full]
    train_metrics.jsonl  per-step training metrics
    eval/                generations per model (JSONL)       [latest evaluation]
    metrics.json         headline numbers                     [latest evaluation]
    report.md, .html     the human-readable report            [latest evaluation]
    evaluations/<UTC start>/   every evaluation kept (metrics.json, report.md/html, config.yaml, eval/)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepare import prepare_data
from tunesmith.data.prepared import PreparedData, load_prepared
from tunesmith.errors import ConfigError, DataError
from tunesmith.utils.io import write_text


def _start(cfg: RunConfig) -> None:
    """The run folder, and the config of this command in it, its relative paths relative to the folder
    (so that `tunesmith run <run folder>/config.yaml` runs the same again)."""
    from tunesmith.advise.runconfig import rebase_paths

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    d = rebase_paths(cfg.model_dump(mode="json"), Path(cfg.base_dir), cfg.run_dir)
    write_text(cfg.run_dir / "config.yaml", yaml.safe_dump(d, sort_keys=False, allow_unicode=True))


def print_choices(cfg: RunConfig, prefix: str = "") -> None:
    """What `tunesmith advise` chose for this config (keys starting with ``prefix``) and why; a value the
    config no longer holds is shown as yours, with advise's choice beside it."""
    from tunesmith.advise.render import show_value
    from tunesmith.advise.runconfig import get_path

    choices = [c for c in cfg.advise.choices if c.key.startswith(prefix)]
    if not choices:
        return
    current = cfg.model_dump(mode="json")
    console.print("[bold]chosen by tunesmith advise[/] (advise.choices in the config):")
    for c in choices:
        now = get_path(current, c.key)
        if now == c.value:
            console.print(f"  {c.key} = {show_value(now)}: {c.reason}", soft_wrap=True, markup=False)
        else:
            console.print(f"  {c.key} = {show_value(now)} (yours; advise chose {show_value(c.value)}: {c.reason})",
                          soft_wrap=True, markup=False)


def _data_settings(cfg: RunConfig) -> dict:
    """Everything outside ``data:`` that the prepared data depends on. prepare_data fingerprints these
    (stats.json keeps the fingerprint), so a change to any of them prepares the data again."""
    return {"seed": cfg.seed, "max_seq_length": cfg.train.max_seq_length, "truncation": cfg.train.truncation,
            "model": cfg.model.name_or_path, "revision": cfg.model.revision}


def run_data(cfg: RunConfig) -> PreparedData:
    from tunesmith.data.report import print_summary
    from tunesmith.errors import DataError

    _start(cfg)
    if not cfg.data.train_file and not cfg.data.files:
        raise ConfigError("data.train_file is not set", hint="point it at your data file (or list files under data.files)")
    tokenizer = None
    if cfg.data.check_length:
        from tunesmith.models.loading import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    data_dir = cfg.run_dir / "data"
    try:
        prepared = prepare_data(
            cfg.data,
            None,
            data_dir,
            seed=cfg.seed,
            base_dir=cfg.resolve_path("."),
            tokenizer=tokenizer,
            max_seq_length=cfg.train.max_seq_length,
            truncation=cfg.train.truncation,
            # all of them, so that the fingerprint is the one _prepared computes
            fingerprint_extra=_data_settings(cfg),
        )
    except DataError:
        stats_path = data_dir / "stats.json"
        if stats_path.is_file():
            import json

            print_summary(json.loads(stats_path.read_text()), data_dir, console)
        raise
    print_summary(prepared.stats, data_dir, console)
    if prepared.stats["rejected"]:
        console.print(f"  rejected rows with line numbers and reasons: {data_dir / 'rejected.jsonl'}")
    console.print(f"  report: {data_dir / 'report.md'} and report.html")
    return prepared


def _prepared(cfg: RunConfig) -> PreparedData:
    """The prepared data of this run; prepared again when missing, failed or made from another
    config/input (stats.json keeps a fingerprint of both)."""
    import json

    from tunesmith.data.inputs import fingerprint, resolve_inputs
    from tunesmith.errors import TunesmithError

    from tunesmith.utils.io import exclusive_lock

    data_dir = cfg.run_dir / "data"
    stats_path = data_dir / "stats.json"

    def up_to_date() -> PreparedData | None:
        if not ((data_dir / "train.jsonl").is_file() and stats_path.is_file()):
            return None
        try:
            stats = json.loads(stats_path.read_text())
            inputs = resolve_inputs(cfg.data, cfg.resolve_path("."))
            if stats.get("status") == "ok" and stats.get("fingerprint") == fingerprint(cfg.data, inputs, _data_settings(cfg)):
                return load_prepared(data_dir)
        except (OSError, ValueError, TunesmithError):
            pass
        return None

    # the ranks torchrun starts all get here: one prepares, the others wait and then load its result
    with exclusive_lock(cfg.run_dir / ".data.lock"):
        return up_to_date() or run_data(cfg)


def prepare_for_launch(cfg: RunConfig) -> None:
    """Before torchrun starts the ranks: prepare the data once here, so its summary prints once and
    every rank loads the same prepared files."""
    _start(cfg)
    _prepared(cfg)


def run_train(cfg: RunConfig, *, resume: bool = False):
    from tunesmith.train.run import train_from_config

    _start(cfg)
    print_choices(cfg, "train.")
    return train_from_config(cfg, _prepared(cfg), resume=resume)


def run_eval(cfg: RunConfig):
    from tunesmith.evaluate.run import evaluate_from_config

    _start(cfg)
    print_choices(cfg, "eval.")
    return evaluate_from_config(cfg, _prepared(cfg))


def run_verify(cfg: RunConfig, kind: str, location: str, *, margin_points: float | None = None,
               served_model: str | None = None, api_key: str | None = None) -> dict:
    """`export ... --verify`: the artifact against the run's adapter on the run's prepared test split; printed."""
    from tunesmith.evaluate.verify import Artifact, print_verification, verify_artifact

    artifact = Artifact(kind, location, served_model=served_model, api_key=api_key)
    result = verify_artifact(cfg, load_prepared(cfg.run_dir / "data"), artifact, margin_points=margin_points)
    print_verification(result, cfg.run_dir / "verify" / f"{artifact.name}.json")
    return result


def run_all(cfg: RunConfig):
    print_choices(cfg)
    prepared = run_data(cfg)
    from tunesmith.evaluate.run import evaluate_from_config
    from tunesmith.train.run import train_from_config

    train_from_config(cfg, prepared)
    return evaluate_from_config(cfg, prepared)


# ---------------------------------------------------------------------------- zero config


# file stems and folders that say nothing about the task: ``examples/order-emails/data/train.jsonl`` is named
# after the nearest folder that does (``order-emails-train``), so two tasks' train.jsonl never share a run folder
GENERIC_NAMES = frozenset({"train", "training", "data", "dataset", "datasets", "test", "validation", "valid", "dev",
                           "all", "input", "inputs", "raw", "processed", "jsonl", "examples"})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def _run_name(data: Path) -> str:
    """The run folder's name for ``tunesmith run --data FILE``: the file's stem, prefixed by the nearest folder
    with a meaningful name when the stem is generic (train, data, ...)."""
    stem = _slug(data.stem)
    if stem.lower() not in GENERIC_NAMES:
        return stem or "run"
    folder = next((_slug(p.name) for p in data.resolve().parents
                   if _slug(p.name) and _slug(p.name).lower() not in GENERIC_NAMES), "")
    return "-".join(part for part in (folder, stem) if part) or "run"


def zero_config(data: str | Path, *, model: str | None = None, overrides: list[str] | None = None,
                recipe: str = "auto", probe: bool = True) -> RunConfig:
    """`tunesmith run --data FILE`: advise measures FILE and writes the run config it would recommend into
    the run folder (``runs/<name>/config.yaml`` from where you stand, named by :func:`_run_name`; overrides such as ``name=x`` or
    ``train.lr=1e-3`` win over its choices); returns that config, loaded back from the file."""
    from tunesmith.advise.advisor import build_advice
    from tunesmith.advise.runconfig import run_config_dict, write_run_config
    from tunesmith.config import apply_overrides, build_config

    from tunesmith.estimate.recipe import RECIPES

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}'", hint=f"use one of: {', '.join(RECIPES)}")
    path = Path(data).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", hint="give the JSONL (or CSV/Parquet) file with your examples")
    d: dict = {"name": _run_name(path)}
    if model:
        d["model"] = {"name_or_path": model}
    base = build_config(apply_overrides(d, overrides or []), source="command line", base_dir=Path.cwd())
    answers = base.advise.model_copy(update={"recipe": recipe})
    advice = build_advice(base, answers, data_path=path, gpu_catalog=base.advise.gpu_catalog,
                          stratify_field=base.data.stratify_field, probe=probe)
    run_dir = base.run_dir
    d = run_config_dict(advice, base, config_dir=run_dir, data_path=path, stratify_field=base.data.stratify_field)
    d["output_dir"] = os.path.relpath(run_dir.parent, run_dir)  # the config lives in its own run folder
    cfg = write_run_config(run_dir / "config.yaml", d)
    console.print(f"[bold]{advice.headline}[/] (verdict: {advice.verdict})")
    if advice.verdict not in ("fine-tune", "both"):
        console.print("[yellow]advise would not fine-tune yet (`tunesmith advise --data ...` says why); running as asked.[/]")
    if advice.local is not None:
        from tunesmith.advise.recommend import local_reason

        console.print(local_reason(advice.local), soft_wrap=True, markup=False)
    rel = cfg.run_dir / "config.yaml"
    console.print(f"run config written to {rel}: edit it and run `tunesmith run {rel}` to repeat or change this run",
                  soft_wrap=True, markup=False)
    return cfg
