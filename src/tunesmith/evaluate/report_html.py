"""report.html: the evaluation :class:`~tunesmith.evaluate.report_content.Report` as one self-contained file
(inline CSS, plots as base64 PNG), no network needed to view it.

Plots: the headline rates of every model side by side with 95% CIs (the headline table's rate
columns), per-class F1 bars, confusion matrices, per-example score distributions. The detail tables
are the report's tables. Every wrong answer, failed request and adversarial failure is listed
(collapsed) with input, expected and got.
"""

from __future__ import annotations

import base64
import html
import io

from tunesmith.evaluate.report_content import (
    Block, Bullets, ClassDetail, Code, Distribution, Example, Paragraph, Report, Strong, Table, Text,
)

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}
details{margin:.3em 0;border:1px solid #ddd;padding:.3em .6em;border-radius:4px}summary{cursor:pointer}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em;margin:.2em 0}.bad{color:#b00}.ok{color:#070}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}"""


def _png(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _headline_plot(report: Report) -> str | None:
    import matplotlib.pyplot as plt
    import numpy as np

    series = report.plotted_measures
    if not series:
        return None
    names = report.models
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.8 * len(series) * max(1, len(names)))), 3.6))
    width = 0.8 / len(names)
    x = np.arange(len(series))
    for j, n in enumerate(names):
        vals = [m.values[j] for m in series]
        ax.bar(x + j * width, [v.value if v.value is not None else 0 for v in vals], width, capsize=3, label=n,
               yerr=[[v.value - v.ci[0] if v.value is not None and v.ci else 0 for v in vals],
                     [v.ci[1] - v.value if v.value is not None and v.ci else 0 for v in vals]])
    ax.set_xticks(x + width * (len(names) - 1) / 2, [m.label for m in series], rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_title("All models side by side (95% CI)")
    ax.legend(fontsize=8)
    return _png(fig, "All models side by side (95% CI): " + ", ".join(m.label for m in series))


def _f1_plot(d: ClassDetail) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(d.classes)), 3.2))
    width = 0.8 / len(d.f1)
    for j, (n, f1) in enumerate(d.f1.items()):
        ax.bar(np.arange(len(d.classes)) + j * width, f1, width, label=n)
    ax.set_xticks(np.arange(len(d.classes)) + width * (len(d.f1) - 1) / 2, d.classes)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{d.field}: F1 per class")
    ax.legend(fontsize=8)
    return _png(fig, f"{d.field}: F1 per class")


def _confusion_plot(d: ClassDetail) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(d.confusions), figsize=(4.2 * len(d.confusions), 3.8), squeeze=False)
    for j, (ax, conf) in enumerate(zip(axes[0], d.confusions, strict=True)):
        mat = np.array(conf.matrix, dtype=float)
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(conf.predicted)), conf.predicted, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(conf.expected)), conf.expected, fontsize=7)
        for (i, k), v in np.ndenumerate(mat):
            ax.text(k, i, int(v), ha="center", va="center", fontsize=7, color="white" if v > mat.max() / 2 else "black")
        ax.set_title(f"{conf.model}: {d.field}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        if j == 0:
            ax.set_ylabel("expected", fontsize=8)
    fig.tight_layout()
    return _png(fig, f"{d.field}: confusion matrices")


def _distribution_plot(panels: tuple[Distribution, ...]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.hist(list(panel.scores.values()), bins=10, range=(0, 1), label=list(panel.scores), alpha=0.85)
        ax.set_title(panel.title, fontsize=10)
        ax.legend(fontsize=8)
    return _png(fig, "; ".join(p.title for p in panels))


def _text(t: Text) -> str:
    if isinstance(t, tuple):
        return "".join(_text(x) for x in t)
    if isinstance(t, Strong):
        return f"<b>{html.escape(t.text)}</b>"
    if isinstance(t, Code):
        return f"<code>{html.escape(t.text)}</code>"
    return html.escape(t)


def _table(t: Table) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _block(b: Block) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Bullets):
        return "\n".join(f"<p>{_text(i)}</p>" for i in b.items)
    assert isinstance(b, Paragraph)
    return f"<p>{_text(b.text)}</p>"


def _example(e: Example) -> str:
    def pre(t: str | None) -> str:
        return f"<pre>{html.escape(t or '(empty)')}</pre>"

    parts = [f"<details><summary>{html.escape(e.id)} — {html.escape(e.note)}</summary><b>input</b>{pre(e.input)}",
             f"<b>{html.escape(e.expected_label)}</b>{pre(e.expected)}", f"<b>got</b>{pre(e.got)}"]
    if e.error:
        parts.append(f"<b class='bad'>error</b>{pre(e.error)}")
    if e.format_error:
        parts.append(f"<b>format</b>{pre(e.format_error)}")
    parts.append("</details>")
    return "".join(parts)


def render_html(report: Report) -> str:
    import matplotlib

    matplotlib.use("Agg")
    title = html.escape(report.title)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{CSS}</style></head><body><h1>{title}</h1>",
             "<p>Numbers in brackets are 95% bootstrap confidence intervals.</p>",
             "<h2>Headline numbers</h2>", _table(report.headline)]
    plot = _headline_plot(report)
    if plot:
        parts.append(plot)
    for d in report.class_details:
        parts += [_f1_plot(d), _confusion_plot(d)]
    parts.append(_distribution_plot(report.distributions))
    parts += ["<h2>Details</h2>", _block(report.meta)]
    for s in report.sections:
        parts.append(f"<h3>{html.escape(s.title)}</h3>")
        parts += [_block(b) for b in s.blocks]
    for m in report.examples:
        parts.append(f"<h2>Examples: {html.escape(m.model)}</h2><p>{len(m.wrong)} wrong, {len(m.failed)} failed "
                     f"requests (not scored), {len(m.adversarial_failures)} adversarial failures.</p>")
        parts += [_example(e) for e in (*m.wrong, *m.failed, *m.adversarial_failures)]
    parts.append("</body></html>")
    return "\n".join(parts)
