"""`tunesmith advise` (issue 7: to be built)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Decide before you spend: fine-tune or not, which method, memory, time, cost.")


@app.callback(invoke_without_command=True)
def advise() -> None:
    """Not built yet."""
    typer.echo("tunesmith advise is not built yet")
    raise typer.Exit(1)
