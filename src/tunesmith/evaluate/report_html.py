"""report.html: one self-contained file (inline CSS, plots as base64 PNG), no network needed to view it.

Plots: headline numbers of every model side by side with 95% CIs, per-class F1 bars, confusion
matrices, per-example score distributions. Every wrong answer, failed request and adversarial
failure is listed (collapsed) with input, expected and got.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from tunesmith.evaluate.report import headline_rows, markdown

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}
details{margin:.3em 0;border:1px solid #ddd;padding:.3em .6em;border-radius:4px}summary{cursor:pointer}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em;margin:.2em 0}.bad{color:#b00}.ok{color:#070}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _headline_plot(results: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series: list[tuple[str, dict[str, Any] | None, str]] = [("accuracy", None, "accuracy")]
    first = next(iter(results))
    for k in metrics[first]:
        if k.endswith("_accuracy"):
            series.append((k.replace("_", " "), None, k))
    if any(metrics[n].get("format_compliance") is not None for n in results):
        series.append(("format compliance", None, "format_compliance"))
    if metrics.get("adversarial"):
        series.append(("hallucination rate", metrics["adversarial"], "hallucination_rate"))
    if metrics.get("regression"):
        series.append(("general ROUGE-L", metrics["regression"], "rouge_l"))
    names = list(results)
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.8 * len(series) * max(1, len(names)))), 3.6))
    width = 0.8 / len(names)
    x = np.arange(len(series))
    for j, n in enumerate(names):
        vals, lo, hi = [], [], []
        for _, src, key in series:
            m = (src or metrics).get(n) or {}
            v = m.get(key)
            ci = m.get(f"{key}_ci")
            vals.append(v if v is not None else 0)
            lo.append(v - ci[0] if v is not None and ci else 0)
            hi.append(ci[1] - v if v is not None and ci else 0)
        ax.bar(x + j * width, vals, width, yerr=[lo, hi], capsize=3, label=n)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [s[0] for s in series], rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_title("All models side by side (95% CI)")
    ax.legend(fontsize=8)
    return _png(fig)


def _per_class_plots(results: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    fields = sorted({f for n in results for f in metrics[n].get("classification", {})})
    for f in fields:
        classes = sorted({c for n in results for c in metrics[n].get("classification", {}).get(f, {}).get("per_class", {})})
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(classes)), 3.2))
        width = 0.8 / len(results)
        for j, n in enumerate(results):
            pc = metrics[n].get("classification", {}).get(f, {}).get("per_class", {})
            ax.bar(np.arange(len(classes)) + j * width, [pc.get(c, {}).get("f1", 0) for c in classes], width, label=n)
        ax.set_xticks(np.arange(len(classes)) + width * (len(results) - 1) / 2, classes)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{f}: F1 per class")
        ax.legend(fontsize=8)
        out.append(_png(fig))
        confs = [(n, metrics[n]["classification"][f]["confusion"]) for n in results
                 if f in metrics[n].get("classification", {})]
        fig, axes = plt.subplots(1, len(confs), figsize=(4.2 * len(confs), 3.8), squeeze=False)
        for j, (ax, (n, conf)) in enumerate(zip(axes[0], confs, strict=True)):
            mat = np.array(conf["matrix"], dtype=float)
            ax.imshow(mat, cmap="Blues")
            ax.set_xticks(range(len(conf["predicted"])), conf["predicted"], rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(conf["expected"])), conf["expected"], fontsize=7)
            for (i, k), v in np.ndenumerate(mat):
                ax.text(k, i, int(v), ha="center", va="center", fontsize=7, color="white" if v > mat.max() / 2 else "black")
            ax.set_title(f"{n}: {f}", fontsize=9)
            ax.set_xlabel("predicted", fontsize=8)
            if j == 0:
                ax.set_ylabel("expected", fontsize=8)
        fig.tight_layout()
        out.append(_png(fig))
    return out


def _distribution_plot(results: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    panels = [("test split: per-example task score", {n: [s.score for s in r.scores.values()] for n, r in results.items()})]
    gen = {n: list(r.general_scores.values()) for n, r in results.items() if r.general_scores}
    if gen:
        panels.append(("general prompts: per-prompt ROUGE-L", gen))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels, strict=True):
        ax.hist([v for v in data.values()], bins=10, range=(0, 1), label=list(data), alpha=0.85)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return _png(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _example(e: dict[str, Any], extra: str = "") -> str:
    def pre(t: str | None) -> str:
        return f"<pre>{html.escape(t or '(empty)')}</pre>"

    summary = html.escape(str(e["id"])) + (f" — {html.escape(extra)}" if extra else "")
    parts = [f"<details><summary>{summary}</summary><b>input</b>{pre(e.get('prompt'))}"]
    if "reference" in e:
        parts.append(f"<b>expected</b>{pre(e['reference'])}")
    elif "expect" in e:
        parts.append(f"<b>expected behaviour</b>{pre(e['expect'])}")
    parts.append(f"<b>got</b>{pre(e.get('prediction'))}")
    if e.get("error"):
        parts.append(f"<b class='bad'>error</b>{pre(e['error'])}")
    if e.get("format_error"):
        parts.append(f"<b>format</b>{pre(e['format_error'])}")
    parts.append("</details>")
    return "".join(parts)


def html_report(results: dict[str, Any], metrics: dict[str, Any], *, title: str, show_failures: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    header, rows = headline_rows(results, metrics)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Numbers in brackets are 95% bootstrap confidence intervals.</p>",
             "<h2>Headline numbers</h2>", _table(header, rows)]
    plot = _headline_plot(results, metrics)
    if plot:
        parts.append(plot)
    parts += _per_class_plots(results, metrics)
    parts.append(_distribution_plot(results))
    # the detailed tables are the same as in report.md: render them from its markdown tables
    parts.append("<h2>Details</h2>" + _markdown_tables_to_html(markdown(results, metrics, title=title, show_failures=0)))
    for n, r in results.items():
        wrong = [e for e in r.examples if e.get("correct") is False]
        failed = [e for e in r.examples if e.get("error")]
        adv_bad = [e for e in r.adversarial_examples if e.get("passed") is False]
        parts.append(f"<h2>Examples: {html.escape(n)}</h2><p>{len(wrong)} wrong, {len(failed)} failed requests "
                     f"(not scored), {len(adv_bad)} adversarial failures.</p>")
        parts += [_example(e, f"score {e.get('score')}") for e in wrong]
        parts += [_example(e, "request failed") for e in failed]
        parts += [_example(e, f"adversarial {e['kind']}, expected {e['expect']}") for e in adv_bad]
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown_tables_to_html(md: str) -> str:
    """Headings, bullet lines and pipe tables of report.md as HTML (the rest is left out)."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            out.append(_table(table[0], table[2:] if len(table) > 1 else []))
            table.clear()

    skip = False
    for line in md.splitlines():
        if line.startswith("## "):
            skip = line.startswith(("## Wrong answers", "## Failed requests"))
        if skip or line.startswith("# ") or line.startswith("```"):
            continue
        if line.startswith("|"):
            table.append([c.strip().replace("**", "") for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line:
            out.append(f"<p>{html.escape(line.lstrip('- ').replace('**', ''))}</p>")
    flush()
    return "\n".join(out)
