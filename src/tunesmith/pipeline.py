"""The workflow, stage by stage. Each stage reads and writes files in the run folder, so any stage
can be re-run on its own (``tunesmith data|train|eval``) or all in order (``tunesmith run``).

run folder layout (``<output_dir>/<name>/``)::

    config.yaml          resolved config of the last command
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

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepare import prepare_data
from tunesmith.data.prepared import PreparedData, load_prepared
from tunesmith.errors import ConfigError
from tunesmith.utils.io import write_text


def _start(cfg: RunConfig) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_text(cfg.run_dir / "config.yaml", cfg.to_yaml())


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

    data_dir = cfg.run_dir / "data"
    stats_path = data_dir / "stats.json"
    if (data_dir / "train.jsonl").is_file() and stats_path.is_file():
        try:
            stats = json.loads(stats_path.read_text())
            inputs = resolve_inputs(cfg.data, cfg.resolve_path("."))
            if stats.get("status") == "ok" and stats.get("fingerprint") == fingerprint(cfg.data, inputs, _data_settings(cfg)):
                return load_prepared(data_dir)
        except (OSError, ValueError, TunesmithError):
            pass
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
