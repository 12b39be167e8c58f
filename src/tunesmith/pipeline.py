"""The workflow, stage by stage. Each stage reads and writes files in the run folder, so any stage
can be re-run on its own (``tunesmith data|train|eval``) or all in order (``tunesmith run``).

run folder layout (``<output_dir>/<name>/``)::

    config.yaml          resolved config of the last command
    data/                train/validation/test.jsonl, rejected.jsonl, stats.json
    adapter/             PEFT adapter (adapter_config.json, adapter_model.safetensors)  [lora/dora/qlora]
    model/               full fine-tuned model                                           [full]
    train_metrics.jsonl  per-step training metrics
    eval/                generations per model (JSONL)
    metrics.json         headline numbers
    report.md            the human-readable report
"""

from __future__ import annotations

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepare import PreparedData, load_prepared, prepare_data
from tunesmith.errors import ConfigError
from tunesmith.utils.io import write_text


def _start(cfg: RunConfig) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_text(cfg.run_dir / "config.yaml", cfg.to_yaml())


def run_data(cfg: RunConfig) -> PreparedData:
    _start(cfg)
    path = cfg.resolve_path(cfg.data.train_file)
    if path is None:
        raise ConfigError("data.train_file is not set", hint="point it at your JSONL file")
    prepared = prepare_data(cfg.data, path, cfg.run_dir / "data", seed=cfg.seed)
    s = prepared.stats
    console.print(
        f"[bold]data[/]: {s['rows_read']} rows read, {s['kept']} kept, {s['rejected']} rejected -> "
        f"train {s['train_examples']}, validation {s['validation_examples']}, test {s['test_examples']}"
        f"  ({cfg.run_dir / 'data'})"
    )
    if s["rejected"]:
        console.print(f"  rejected rows with line numbers and reasons: {cfg.run_dir / 'data' / 'rejected.jsonl'}")
    return prepared


def _prepared(cfg: RunConfig) -> PreparedData:
    data_dir = cfg.run_dir / "data"
    if (data_dir / "train.jsonl").is_file():
        return load_prepared(data_dir)
    return run_data(cfg)


def run_train(cfg: RunConfig, *, resume: bool = False):
    from tunesmith.train.run import train_from_config

    _start(cfg)
    return train_from_config(cfg, _prepared(cfg), resume=resume)


def run_eval(cfg: RunConfig):
    from tunesmith.evaluate.run import evaluate_from_config

    _start(cfg)
    return evaluate_from_config(cfg, _prepared(cfg))


def run_all(cfg: RunConfig):
    prepared = run_data(cfg)
    from tunesmith.evaluate.run import evaluate_from_config
    from tunesmith.train.run import train_from_config

    train_from_config(cfg, prepared)
    return evaluate_from_config(cfg, prepared)
