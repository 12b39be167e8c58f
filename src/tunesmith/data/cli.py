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
    """Read and validate the input file, quarantine bad rows to rejected.jsonl, split train/validation/test."""
    from tunesmith.config import load_config
    from tunesmith.pipeline import run_data

    run_data(load_config(config, overrides or []))
