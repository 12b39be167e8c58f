"""`tunesmith data ...` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Prepare data: validate, clean, split. Data enters the pipeline here.", no_args_is_help=True)


@app.command()
def prepare(
    config: Annotated[Path, typer.Argument(help="Run config YAML file.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.", show_default=False)] = None,
) -> None:
    """Read every input file (alpaca, OpenAI chat, ShareGPT, prompt/completion, raw text; JSONL/JSON/CSV/Parquet, gzip'd too),
    validate each row, redact PII, remove exact and near duplicates, check token lengths and answer consistency,
    split train/validation/test (stratified, seeded), check leakage, mix general data, and write the prepared folder
    with rejected.jsonl, removed.jsonl, stats.json and report.md/html. See docs/data.md."""
    from tunesmith.config import load_config
    from tunesmith.pipeline import run_data

    run_data(load_config(config, overrides or []))
