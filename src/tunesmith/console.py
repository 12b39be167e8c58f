"""One rich console for the whole CLI (progress bars, tables, error messages)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
