"""`tunesmith export ...` and `tunesmith serve` (issue 6: to be built)."""

from __future__ import annotations

import typer

export_app = typer.Typer(help="Merge adapters and export safetensors / GGUF.", no_args_is_help=True)


@export_app.command()
def merge() -> None:
    """Not built yet."""
    typer.echo("tunesmith export merge is not built yet")
    raise typer.Exit(1)


def serve() -> None:
    """Serve an OpenAI-compatible API (not built yet)."""
    typer.echo("tunesmith serve is not built yet")
    raise typer.Exit(1)
