"""The data report: Markdown and self-contained HTML (inline SVG charts), and the terminal summary."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tunesmith.utils.io import write_text


def _rows_table(stats: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("rows read", stats["rows_read"]),
        ("rejected", f"{stats['rejected']} ({stats['rejected_fraction']:.2%}; limit {stats['max_rejected_fraction']:.0%})"),
        ("duplicates removed", f"{stats['duplicates']} {stats['duplicates_by_kind'] or ''}".strip()),
        ("leaking held-out rows removed", stats["leakage_removed"]),
        ("unused (max_examples)", stats["unused_by_max_examples"]),
        ("kept", stats["kept"]),
        ("train / validation / test", f"{stats['train_examples']} / {stats['validation_examples']} / {stats['test_examples']}"),
        ("general rows mixed into train", stats["general_train_examples"]),
        ("truncated", stats["truncated"]),
    ]


def _svg_bars(labels: list[str], values: list[int], *, width: int = 640, height: int = 220, color: str = "#4a7bd0") -> str:
    if not values:
        return ""
    top = max(values) or 1
    n = len(values)
    bw = (width - 40) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img">']
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        h = (height - 20) * v / top
        x = 30 + i * bw
        y = height - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" fill="{color}"><title>{html.escape(lab)}: {v}</title></rect>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">{v}</text>')
        if n <= 24:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{height + 14}" font-size="9" text-anchor="end" transform="rotate(-35 {x + bw / 2:.1f} {height + 14})">'
                f"{html.escape(lab)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _hist_labels(h: dict[str, Any]) -> list[str]:
    e = h["edges"]
    return [f"{e[i]}-{e[i + 1]}" for i in range(len(e) - 1)]


def markdown_report(stats: dict[str, Any]) -> str:
    lines = ["# Data report", ""]
    if stats["status"] == "failed":
        lines += [f"**FAILED**: {stats['rejected_fraction']:.1%} of rows rejected, above the limit of {stats['max_rejected_fraction']:.0%}. "
                  "No split files were written; see `rejected.jsonl`.", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in _rows_table(stats)] + [""]
    lines += [f"Inputs: {', '.join(f'`{p}`' for p in stats['input_files'])}; formats: {stats['formats']}", ""]
    if stats["rejected_by_kind"]:
        lines += ["## Rejected rows by reason", "", "| kind | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in stats["rejected_by_kind"].items()] + ["", "Each is in `rejected.jsonl` with file, line, reason and what to do.", ""]
    if stats["warnings"]:
        lines += ["## Fixed while reading", ""]
        for f, w in stats["warnings"].items():
            lines += [f"- `{f}`: " + ", ".join(f"{k} x{v['count']} (first at line {v['first_line']})" for k, v in w.items())]
        lines += [""]
    pii = stats["pii"]
    lines += ["## Personal data", "", f"mode: **{pii['mode']}**; rows with findings: {pii['rows_with_pii']}", ""]
    if pii["counts"]:
        lines += ["| type | found | in the prepared files |", "|---|---|---|"] + [f"| {k} | {v} | {_pii_action(pii, k)} |" for k, v in pii["counts"].items()] + [""]
    lines += [f"{note}\n" for note in _pii_notes(pii)]
    lk = stats["leakage"]
    lines += ["## Duplicates and leakage", "", f"- duplicates removed: {stats['duplicates_by_kind'] or 0} (see `removed.jsonl`)",
              f"- held-out rows with a near-duplicate in train: {lk['found']} (action: {lk['action']}; checked: {lk['checked']})", ""]
    lines += _held_out_lines(stats.get("held_out_files") or {})
    tl = stats.get("token_lengths")
    if tl and tl.get("count"):
        lines += ["## Token lengths", "", f"min {tl['min']}, mean {tl['mean']}, p50 {tl['p50']}, p95 {tl['p95']}, max {tl['max']} "
                  f"(max_seq_length {tl['max_seq_length']})", "", "| tokens | examples |", "|---|---|"]
        lines += [f"| {lab} | {c} |" for lab, c in zip(_hist_labels(tl["histogram"]), tl["histogram"]["counts"], strict=True)] + [""]
    cons = stats["consistency"]
    if cons.get("labels"):
        lines += ["## Labels", "", "| label | count | share |", "|---|---|---|"]
        lines += [f"| {k} | {v['count']} | {v['share']:.1%} |" for k, v in cons["labels"].items()] + [""]
        if stats["labels_by_split"]:
            lines += ["Per split: " + "; ".join(f"{s}: {d}" for s, d in stats["labels_by_split"].items()), ""]
    if cons.get("answer_labels"):
        lines += ["## Answer labels (classification-like answers)", "", "| answer | count | share |", "|---|---|---|"]
        lines += [f"| {k} | {v['count']} | {v['share']:.1%} |" for k, v in cons["answer_labels"].items()] + [""]
    if cons.get("answer_formats"):
        lines += ["## Answer formats", "", f"{cons['answer_formats']}; majority **{cons['majority_format']}**; "
                  f"{cons['format_outliers']} answers differ from it" + (f" (e.g. {', '.join(cons['format_outlier_ids'][:10])})" if cons["format_outliers"] else ""), ""]
    if cons.get("json_schema"):
        js = cons["json_schema"]
        lines += [f"JSON schema: {js['valid']} of {js['checked']} answers valid ({(js['valid_share'] or 0):.1%})", ""]
        lines += [f"- `{f['id']}`: {f['error']}" for f in js["failures"][:20]] + [""]
    mix = stats["mix"]
    if mix.get("ratio"):
        lines += ["## General data mixed in", "", f"source {mix.get('source')}: {mix.get('added')} rows into train "
                  f"(asked ratio {mix['ratio']}, actual {mix.get('actual_ratio')}); general eval rows: {mix.get('eval', 0)}; "
                  "never in validation/test.", ""]
    lines += [f"Seconds: {stats['seconds']}", ""]
    return "\n".join(lines)


def _held_out_lines(held: dict[str, Any]) -> list[str]:
    """The held-out files used as given, and the train rows removed as duplicates of their rows."""
    if not held:
        return []
    lines = ["## Held-out files (used as given, never re-split)", ""]
    lines += [f"- {s}: {d['examples']} examples from {', '.join(f'`{f}`' for f in d['files'])}" for s, d in held.items() if s != "train_removed"]
    tr = held["train_removed"]
    lines += [f"- train rows removed because they duplicate a held-out row: exact {tr['exact_duplicate']}, near {tr['near_duplicate']}, "
              f"leakage {tr['leakage']} (each in `removed.jsonl`)", ""]
    return lines


def html_report(stats: dict[str, Any]) -> str:
    esc = html.escape
    body = ["<h1>Data report</h1>"]
    if stats["status"] == "failed":
        body.append(f"<p style='color:#b00'><b>FAILED</b>: {stats['rejected_fraction']:.1%} of rows rejected "
                    f"(limit {stats['max_rejected_fraction']:.0%}); no split files written.</p>")
    body.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in _rows_table(stats)) + "</table>")
    if stats["rejected_by_kind"]:
        body.append("<h2>Rejected rows by reason</h2>")
        body.append(_svg_bars(list(stats["rejected_by_kind"]), list(stats["rejected_by_kind"].values()), color="#c0504d"))
    tl = stats.get("token_lengths")
    if tl and tl.get("count"):
        body.append(f"<h2>Token lengths</h2><p>min {tl['min']}, mean {tl['mean']}, p95 {tl['p95']}, max {tl['max']} "
                    f"(max_seq_length {tl['max_seq_length']})</p>")
        body.append(_svg_bars(_hist_labels(tl["histogram"]), tl["histogram"]["counts"]))
    cons = stats["consistency"]
    if cons.get("labels"):
        body.append("<h2>Label distribution</h2>")
        body.append(_svg_bars(list(cons["labels"]), [v["count"] for v in cons["labels"].values()], color="#6a9f58"))
    if cons.get("answer_labels"):
        body.append("<h2>Answer labels (classification-like answers)</h2>")
        body.append(_svg_bars(list(cons["answer_labels"]), [v["count"] for v in cons["answer_labels"].values()], color="#8064a2"))
    pii = stats["pii"]
    body.append(f"<h2>Personal data</h2><p>mode {esc(pii['mode'])}; rows with findings {pii['rows_with_pii']}</p>")
    if pii["counts"]:
        body.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td><td>{_pii_action(pii, k)}</td></tr>"
                                        for k, v in pii["counts"].items()) + "</table>")
    body += [f"<p>{esc(note).replace('**', '')}</p>" for note in _pii_notes(pii)]
    body.append(f"<h2>Duplicates and leakage</h2><p>{esc(str(stats['duplicates_by_kind']))}; held-out rows with a near-duplicate "
                f"in train: {stats['leakage']['found']} ({esc(stats['leakage']['action'])})</p>")
    held = _held_out_lines(stats.get("held_out_files") or {})
    if held:
        body.append("<h2>" + esc(held[0].lstrip("# ")) + "</h2><ul>" + "".join(f"<li>{esc(x[2:])}</li>" for x in held[2:] if x) + "</ul>")
    style = "body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Data report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def write_reports(out: Path, stats: dict[str, Any]) -> None:
    write_text(out / "report.md", markdown_report(stats))
    write_text(out / "report.html", html_report(stats))


def _pii_action(pii: dict[str, Any], kind: str) -> str:
    if kind in pii.get("redacted_types", pii["counts"] if pii["mode"] == "redact" else ()):  # (stats.json of older versions)
        return "replaced"
    return "kept (report only)" if pii["mode"] == "redact" else "kept"


def _pii_notes(pii: dict[str, Any]) -> list[str]:
    """What personal data in answers means for training (the warning when redaction changes answers)."""
    notes = []
    if pii.get("rows_answer_redacted"):
        notes.append(f"**Warning: redaction changed the answer of {pii['rows_answer_redacted']} rows.** The model learns to write "
                     "placeholders such as `<EMAIL_1>` there. A value gets the same placeholder in the prompt and the answer, so "
                     "it learns to copy it, not to invent one; if answers must hold the real values, set `data.pii.mode: report` "
                     "or add the type to `data.pii.report_only`.")
    kept = pii.get("rows_with_pii_in_answer", 0) - pii.get("rows_answer_redacted", 0)
    if kept > 0:
        why = "only report-only types there" if pii["mode"] == "redact" else f"mode {pii['mode']}"
        notes.append(f"{kept} rows have personal data in an answer that was left unchanged ({why}).")
    return notes


def print_summary(stats: dict[str, Any], data_dir: Path, console: Any) -> None:
    from rich.table import Table

    title = "data prepared" if stats["status"] == "ok" else "data preparation FAILED"
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in _rows_table(stats):
        t.add_row(k, str(v))
    if stats["rejected_by_kind"]:
        t.add_row("rejected by kind", ", ".join(f"{k} {v}" for k, v in stats["rejected_by_kind"].items()))
    pii = stats["pii"]
    if pii["counts"]:
        found = ", ".join(f"{k} {v}" for k, v in pii["counts"].items() if v) or "none"
        t.add_row(f"PII ({pii['mode']})", found)
    if pii.get("rows_with_pii_in_answer"):
        t.add_row("PII in answers", f"{pii['rows_with_pii_in_answer']} rows, {pii['rows_answer_redacted']} changed by redaction (see report.md)")
    t.add_row("leakage (held-out ~ train)", f"{stats['leakage']['found']} ({stats['leakage']['action']})")
    held = stats.get("held_out_files") or {}
    for s, d in held.items():
        if s != "train_removed":
            t.add_row(f"{s} (file, as given)", f"{d['examples']} examples")
    if held:
        t.add_row("train rows removed (dup of held-out)", ", ".join(f"{k} {v}" for k, v in held["train_removed"].items()))
    tl = stats.get("token_lengths")
    if tl and tl.get("count"):
        t.add_row("tokens", f"p50 {tl['p50']}, p95 {tl['p95']}, max {tl['max']} / {tl['max_seq_length']}")
    labels = stats["consistency"].get("labels")
    if labels:
        t.add_row("labels", ", ".join(f"{k} {v['share']:.0%}" for k, v in list(labels.items())[:8]))
    t.add_row("folder", str(data_dir))
    console.print(t)
