"""The evaluation :class:`~tunesmith.evaluate.report_content.Report` in the terminal: the headline table,
the paired comparisons and any forgetting or invented-values flag."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from tunesmith.console import console
from tunesmith.evaluate.report_content import Report, plain


def print_summary(report: Report) -> None:
    table = Table(title=escape(f"{' vs '.join(report.models)}: held-out test split [95% CI]"), show_lines=False)
    for i, h in enumerate(report.headline.header):
        table.add_column(escape(h), justify="left" if i == 0 else "right")
    for row in report.headline.rows:
        table.add_row(*[escape(plain(c)) for c in row])
    console.print(table)
    for c in report.comparisons:
        console.print(escape(f"{c.a} vs {c.b}: {c.b} - {c.a} = {c.delta_points:+.1f} points"
                             + (f" [95% CI {c.ci[0]:+.1f}, {c.ci[1]:+.1f}]" if c.ci else "")
                             + f", p={c.p_value:.3g} ({c.test})"))
    for name, flags in report.forgetting:
        console.print(f"[bold red]forgetting flagged for {escape(name)}[/]: " + escape("; ".join(flags)))
    if report.parity is not None:
        console.print("parity " + escape(plain(report.parity)))
    for name, why in report.invented_flags:
        console.print(f"[bold red]invented values flagged for {escape(name)}[/]: " + escape(why))
