"""What evaluation found as report.md and as a rich table in the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from tunesmith.console import console


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def pct_ci(m: dict[str, Any] | None, key: str) -> str:
    if not m or m.get(key) is None:
        return "-"
    ci = m.get(f"{key}_ci")
    return pct(m[key]) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def num_ci(m: dict[str, Any] | None, key: str, fmt: str = "{:.2f}") -> str:
    if not m or m.get(key) is None:
        return "-"
    ci = m.get(f"{key}_ci")
    return fmt.format(m[key]) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def headline_columns(metrics: dict[str, dict[str, Any]]) -> list[str]:
    keys: list[str] = ["accuracy"]
    for m in metrics.values():
        for k in m:
            if k.endswith("_accuracy") and k not in keys:
                keys.append(k)
    for extra in ("field_f1", "format_compliance"):
        if any(m.get(extra) is not None for m in metrics.values()):
            keys.append(extra)
    return keys


def headline_rows(results: dict[str, Any], metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column names and one row per model: the numbers the terminal, report.md and report.html share."""
    model_metrics = {n: metrics[n] for n in results}
    cols = headline_columns(model_metrics)
    adv = metrics.get("adversarial", {})
    reg = metrics.get("regression", {})
    header = ["model", *[c.replace("_", " ") for c in cols], "n", "hallucination", "perplexity", "general ROUGE-L"]
    rows = []
    for n in results:
        m = metrics[n]
        n_txt = str(m["n"]) + (f" ({m['n_failed']} failed)" if m.get("n_failed") else "")
        rows.append([n, *[pct_ci(m, c) for c in cols], n_txt, pct_ci(adv.get(n), "hallucination_rate"),
                     num_ci(reg.get(n), "perplexity"), pct_ci(reg.get(n), "rouge_l")])
    return header, rows


def print_table(results: dict[str, Any], metrics: dict[str, Any]) -> None:
    header, rows = headline_rows(results, metrics)
    table = Table(title=f"{' vs '.join(results)}: held-out test split [95% CI]", show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for name, c in metrics.get("comparisons", {}).items():
        ci = c.get("delta_points_ci")
        b, a = name.split("_vs_", 1) if "_vs_" in name else (name, "?")
        console.print(f"{a} vs {b}: {b} - {a} = {c['delta_points']:+.1f} points"
                      + (f" [95% CI {ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "") + f", p={c['p_value']:.3g} ({c['test']})")
    for name, r in metrics.get("regression", {}).items():
        if isinstance(r, dict) and r.get("forgetting"):
            console.print(f"[bold red]forgetting flagged for {name}[/]: " + "; ".join(r["flags"]))


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *["| " + " | ".join(str(c) for c in r) + " |" for r in rows]]


def _fence(text: str | None, limit: int = 600) -> list[str]:
    t = "(empty)" if not text else text if len(text) <= limit else "…" + text[-limit:]
    return ["```", t.replace("```", "ˋˋˋ"), "```"]


def markdown(results: dict[str, Any], metrics: dict[str, Any], *, title: str, show_failures: int) -> str:
    lines = [f"# {title}", ""]
    for k in ("model", "method", "test_examples", "scorer"):
        if k in metrics:
            lines.append(f"- **{k}**: {metrics[k]}")
    if "evaluation" in metrics:
        lines.append(f"- **evaluation**: {metrics['evaluation']['id']} (`{metrics['evaluation']['folder']}/`)")
    lines += ["", "## 1. Task accuracy and format compliance (held-out test split)", "",
              "Numbers in brackets are 95% bootstrap confidence intervals. Format compliance is measured apart from "
              "correctness.", ""]
    header, rows = headline_rows(results, metrics)
    lines += _md_table(header, rows)
    if "delta_accuracy_points" in metrics:
        lines += ["", f"Tuned minus base accuracy: **{metrics['delta_accuracy_points']:+.1f} points**."]
    comps = metrics.get("comparisons", {})
    if comps:
        lines += ["", "### Paired comparisons (same examples)", ""]
        lines += _md_table(["comparison", "Δ points", "95% CI", "test", "p"],
                           [[k.replace("_vs_", " vs "), f"{c['delta_points']:+.1f}",
                             f"[{c['delta_points_ci'][0]:+.1f}, {c['delta_points_ci'][1]:+.1f}]" if c.get("delta_points_ci") else "-",
                             c["test"], f"{c['p_value']:.3g}"] for k, c in comps.items()])
    # classification detail
    fields = sorted({f for n in results for f in metrics[n].get("classification", {})})
    for f in fields:
        lines += ["", f"### {f}: per-class precision / recall", ""]
        classes = sorted({c for n in results for c in metrics[n].get("classification", {}).get(f, {}).get("per_class", {})})
        hdr = ["class"] + [f"{n} P / R" for n in results]
        body = []
        for c in classes:
            row = [c]
            for n in results:
                pc = metrics[n].get("classification", {}).get(f, {}).get("per_class", {}).get(c)
                row.append(f"{pct(pc['precision'])} / {pct(pc['recall'])}" if pc else "-")
            body.append(row)
        body.append(["**macro-F1**"] + [pct_ci(metrics[n].get("classification", {}).get(f), "macro_f1") for n in results])
        lines += _md_table(hdr, body)
        for n in results:
            conf = metrics[n].get("classification", {}).get(f, {}).get("confusion")
            if conf:
                lines += ["", f"Confusion matrix, {n} (rows expected, columns predicted):", ""]
                lines += _md_table(["expected \\ predicted", *conf["predicted"]],
                                   [[e, *row] for e, row in zip(conf["expected"], conf["matrix"], strict=True)])
    # adversarial
    adv = metrics.get("adversarial")
    if adv:
        lines += ["", "## 2. Hallucination on adversarial inputs", "",
                  f"{adv['items']} inputs outside the training distribution ({', '.join(f'{k}: {v}' for k, v in adv['kinds'].items())}); "
                  "an answer that breaks its rule (abstain / keep the format / ignore the injection) is a hallucination.", ""]
        kinds = list(adv["kinds"])
        has_judge = any(isinstance(adv.get(n), dict) and "judge" in adv[n] for n in results)
        hdr = ["model", "hallucination rate", *kinds] + (["judge hallucination rate"] if has_judge else [])
        body = []
        for n in results:
            a = adv.get(n)
            if not a:
                continue
            row = [n, pct_ci(a, "hallucination_rate"), *[pct(a["by_kind"].get(k, {}).get("hallucination_rate")) for k in kinds]]
            if has_judge:
                row.append(pct_ci(a, "judge_hallucination_rate"))
            body.append(row)
        lines += _md_table(hdr, body)
    # regression
    reg = metrics.get("regression")
    if reg:
        th = reg["thresholds"]
        lines += ["", "## 3. Regression on general tasks (forgetting)", "",
                  f"- general text: {reg['text_source']} ({reg['text_chars']} characters)",
                  f"- general prompts: {reg['prompts_source']}",
                  f"- forgetting is flagged when perplexity rises more than {th['max_perplexity_increase_pct']:g}% or "
                  f"general ROUGE-L drops more than {th['max_rouge_drop_points']:g} points vs base", ""]
        body = []
        for n in results:
            r = reg.get(n)
            if not r:
                continue
            ch = r.get("perplexity_change_pct")
            rc = r.get("rouge_l_change_points")
            body.append([n, num_ci(r, "perplexity"), "-" if ch is None else f"{ch:+.1f}%", pct_ci(r, "rouge_l"),
                         "-" if rc is None else f"{rc:+.1f}", "-" if "forgetting" not in r else
                         ("**yes**: " + "; ".join(r["flags"]) if r["forgetting"] else "no")])
        lines += _md_table(["model", "perplexity", "Δ", "general ROUGE-L", "Δ points", "forgetting"], body)
    gates = metrics.get("gates")
    if gates:
        lines += ["", "## CI gates", ""]
        lines += _md_table(["metric", "≥", "value", "result"],
                           [[g["key"], f"{g['threshold']:g}", str(g["value"]), "pass" if g["passed"] else "**FAIL**"] for g in gates])
    # failures
    for n, r in results.items():
        failed = [e for e in r.examples if e.get("error")]
        if failed:
            lines += ["", f"## Failed requests: {n} ({len(failed)}, not scored)", ""]
            lines += [f"- `{e['id']}`: {e['error']}" for e in failed[:show_failures]]
        wrong = [e for e in r.examples if e.get("correct") is False][:show_failures]
        if wrong:
            lines += ["", f"## Wrong answers: {n} (first {len(wrong)})", ""]
            for e in wrong:
                lines += [f"**{e['id']}**", "", "input:", *_fence(e["prompt"]), "expected:", *_fence(e["reference"]),
                          "got:", *_fence(e["prediction"]), ""]
    return "\n".join(lines) + "\n"
