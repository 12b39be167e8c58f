"""Write what evaluation found: metrics.json, report.md and a rich table in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from tunesmith.console import console
from tunesmith.utils.io import write_json, write_text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def headline_columns(results: dict[str, dict[str, Any]]) -> list[str]:
    keys: list[str] = ["accuracy"]
    for r in results.values():
        for k in r["metrics"]:
            if k.endswith("_accuracy") and k not in keys:
                keys.append(k)
    if any(r["metrics"].get("format_compliance") is not None for r in results.values()):
        keys.append("format_compliance")
    return keys


def print_table(results: dict[str, dict[str, Any]]) -> None:
    cols = headline_columns(results)
    table = Table(title="base vs tuned on the held-out test split", show_lines=False)
    table.add_column("model")
    for c in cols:
        table.add_column(c.replace("_", " "), justify="right")
    table.add_column("n", justify="right")
    for name, r in results.items():
        m = r["metrics"]
        table.add_row(name, *[_pct(m.get(c)) for c in cols], str(m["n"]))
    console.print(table)


def write_report(run_dir: Path, results: dict[str, dict[str, Any]], *, title: str, extra: dict[str, Any], show_failures: int) -> None:
    metrics = {name: r["metrics"] for name, r in results.items()}
    if "base" in metrics and "tuned" in metrics and metrics["base"]["accuracy"] is not None:
        metrics["delta_accuracy_points"] = 100 * (metrics["tuned"]["accuracy"] - metrics["base"]["accuracy"])
    write_json(run_dir / "metrics.json", {**metrics, **extra})

    cols = headline_columns(results)
    lines = [f"# {title}", ""]
    for k, v in extra.items():
        if not isinstance(v, dict | list):
            lines.append(f"- **{k}**: {v}")
    lines += ["", "## Held-out test split", "", "| model | " + " | ".join(c.replace("_", " ") for c in cols) + " | n |",
              "|---|" + "---:|" * (len(cols) + 1)]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(f"| {name} | " + " | ".join(_pct(m.get(c)) for c in cols) + f" | {m['n']} |")
    if "delta_accuracy_points" in metrics:
        lines += ["", f"Tuned minus base accuracy: **{metrics['delta_accuracy_points']:+.1f} points**."]
    for name, r in results.items():
        failures = [e for e in r["examples"] if not e["correct"]][:show_failures]
        if not failures:
            continue
        lines += ["", f"## Wrong answers: {name} (first {len(failures)})", ""]
        for e in failures:
            lines += [f"**{e['id']}**", "", "input:", "```", e["prompt"][-600:], "```", "expected:", "```", e["reference"],
                      "```", "got:", "```", e["prediction"] or "(empty)", "```", ""]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
