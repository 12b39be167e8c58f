"""Score answers with the configured task scorer and aggregate them into headline numbers with CIs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunesmith.evaluate import scorers
from tunesmith.evaluate.compliance import FormatChecker, load_schema
from tunesmith.evaluate.invented_values import value_summary
from tunesmith.evaluate.stats import bootstrap_ci, bootstrap_ratio_ci, mcnemar_exact, paired_delta_ci, paired_permutation
from tunesmith.evaluate.tool_call_scoring import ToolCallOutcome, has_tool_calls, score_tool_calls

if TYPE_CHECKING:
    from tunesmith.evaluate.config import EvalConfig

NONE_LABEL = "(none)"
CONTINUOUS = ("rouge_l", "chrf")


@dataclass
class ExampleScore:
    score: float  # per-example task score in [0, 1]; 1/0 for exact/label/json (all fields right)
    correct: bool
    format_ok: bool | None = None
    fields: dict[str, bool] = field(default_factory=dict)
    labels: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # field -> (expected, got)
    json_counts: tuple[int, int, int] | None = None  # (tp, fp, fn)
    # field -> invented / missing / right ...: JSON leaves, label groups, or "answer" (the whole answer)
    values: dict[str, scorers.ValueOutcome] = field(default_factory=dict)
    tool: ToolCallOutcome | None = None  # scorer tool_calls


def user_text(messages: list[dict]) -> str:
    """The input of an example, where its values are looked up: the content of its user messages."""
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


class TaskScorer:
    """Scores one answer against its reference as the eval config says."""

    def __init__(self, kind: str, *, label_pattern: str | None = None, fmt: FormatChecker | None = None,
                 abstain_values: tuple[str, ...] | list[str] = scorers.DEFAULT_ABSTAIN_VALUES):
        self.kind = kind
        self.label_re = re.compile(label_pattern) if label_pattern else None
        self.fmt = fmt or FormatChecker()
        self.abstain = scorers.abstain_set(abstain_values)

    def __call__(self, pred: str, ref: str, source: str | None = None,
                 tools: list[dict[str, Any]] | None = None) -> ExampleScore:
        """``source``: the example's input (:func:`user_text`), for "a value found nowhere in the input" (JSON);
        ``tools``: the example's declared functions, whose parameter schemas tool calls must validate against."""
        fmt_ok = self.fmt(pred)
        if self.kind == "tool_calls":
            t = score_tool_calls(pred, ref, tools)
            return ExampleScore(float(t.exact), t.exact, t.compliant and fmt_ok is not False, tool=t)
        if self.kind == "label":
            assert self.label_re is not None
            want = scorers.extract_labels(ref, self.label_re) or {}
            got = scorers.extract_labels(pred, self.label_re) or {}
            fields = {k: got.get(k) == v for k, v in want.items()}
            ok = bool(want) and all(fields.values())
            labels = {k: (v, got.get(k)) for k, v in want.items()}
            values = {k: scorers.value_outcome(v, got.get(k), same=fields[k], abstain=self.abstain)
                      for k, v in want.items()}
            return ExampleScore(float(ok), ok, fmt_ok, fields, labels, values=values)
        if self.kind == "json_fields":
            tp, fp, fn = scorers.json_field_counts(pred, ref)
            ok = fp == 0 and fn == 0
            values = scorers.json_value_outcomes(pred, ref, abstain=self.abstain, source=source)
            return ExampleScore(float(ok), ok, fmt_ok, json_counts=(tp, fp, fn), values=values)
        if self.kind in CONTINUOUS:
            s = scorers.rouge_l(pred, ref) if self.kind == "rouge_l" else scorers.chrf(pred, ref)
            ok = s >= 0.5
        else:
            ok = scorers.exact_match(pred, ref)
            s = float(ok)
        answer = scorers.value_outcome(ref, pred, same=ok, abstain=self.abstain)
        return ExampleScore(s, ok, fmt_ok, values={"answer": answer})


def task_scorer_from_config(ec: EvalConfig, base_dir: Path, records: list[dict[str, Any]] | None = None) -> TaskScorer:
    """The task scorer the ``eval:`` section describes (scorer, label pattern, format check, abstain values):
    the one `tunesmith eval` scores with, and training's validation when it selects by task score.
    ``base_dir``: where a relative ``eval.json_schema`` path starts (the config's folder); ``records``: the
    data scored (scorer ``auto`` picks ``tool_calls`` when it carries tool calls)."""
    fmt = FormatChecker(ec.format_pattern, json_required=ec.format_json, schema=load_schema(ec.json_schema, base_dir))
    return TaskScorer(ec.resolved_scorer(tool_calls=has_tool_calls(records or [])), label_pattern=ec.label_pattern, fmt=fmt,
                      abstain_values=ec.abstain_values)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def classification_report(pairs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Per-class precision/recall/F1, macro-F1 over the reference classes, confusion matrix.

    ``pairs`` are (expected, predicted); a missing prediction is ``None`` and counts against the
    expected class's recall. Matrix rows: expected classes; columns: those classes, then other
    predicted strings, then "(none)" when some answers had no label.
    """
    classes = sorted({w for w, _ in pairs})
    per_class: dict[str, dict[str, float | int]] = {}
    for c in classes:
        tp = sum(1 for w, g in pairs if w == c and g == c)
        fp = sum(1 for w, g in pairs if w != c and g == c)
        fn = sum(1 for w, g in pairs if w == c and g != c)
        p, r, f = _prf(tp, fp, fn)
        per_class[c] = {"precision": p, "recall": r, "f1": f, "support": tp + fn}
    macro_f1 = sum(v["f1"] for v in per_class.values()) / len(per_class) if per_class else None
    extra = sorted({g for _, g in pairs if g is not None and g not in classes})
    cols = classes + extra + ([NONE_LABEL] if any(g is None for _, g in pairs) else [])
    matrix = [[sum(1 for w, g in pairs if w == r and (g if g is not None else NONE_LABEL) == c) for c in cols]
              for r in classes]
    return {"macro_f1": macro_f1, "per_class": per_class, "confusion": {"expected": classes, "predicted": cols,
                                                                           "matrix": matrix}}


def _macro_f1_of(pairs: list[tuple[str, str | None]]):
    def stat(idx: np.ndarray) -> float:
        return classification_report([pairs[i] for i in idx])["macro_f1"] or 0.0

    return stat


def aggregate(scores: list[ExampleScore], *, kind: str = "exact", n_resamples: int = 1000, seed: int = 0,
              max_invented_value_rate: float | None = None) -> dict[str, Any]:
    """Headline numbers of one model on one set, each with a 95% bootstrap interval (``<key>_ci``), and the
    invented / missing values (:func:`~tunesmith.evaluate.invented_values.value_summary`)."""
    n = len(scores)
    out: dict[str, Any] = {"n": n}

    def with_ci(key: str, values: list[float]) -> None:
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_ci"] = bootstrap_ci(values, n_resamples=n_resamples, seed=seed) if values else None

    with_ci("accuracy", [s.score for s in scores])
    if kind in CONTINUOUS:
        out[f"mean_{kind}"] = out["accuracy"]
    with_ci("format_compliance", [float(s.format_ok) for s in scores if s.format_ok is not None])
    field_names = sorted({k for s in scores for k in s.fields})
    for k in field_names:
        with_ci(f"{k}_accuracy", [float(s.fields[k]) for s in scores if k in s.fields])
    if any(s.labels for s in scores):
        cls: dict[str, Any] = {}
        for k in field_names:
            pairs = [s.labels[k] for s in scores if k in s.labels]
            rep = classification_report(pairs)
            rep["macro_f1_ci"] = bootstrap_ci(pairs, statistic=_macro_f1_of(pairs), n_resamples=n_resamples, seed=seed)
            out[f"{k}_macro_f1"] = rep["macro_f1"]
            cls[k] = rep
        out["classification"] = cls
    counts = [s.json_counts for s in scores if s.json_counts is not None]
    if counts:
        tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
        p, r, f = _prf(tp, fp, fn)
        out.update({"field_precision": p, "field_recall": r, "field_f1": f})

        def f1_stat(idx: np.ndarray) -> float:
            sel = [counts[i] for i in idx]
            return _prf(*(sum(c[j] for c in sel) for j in range(3)))[2]

        out["field_f1_ci"] = bootstrap_ci(counts, statistic=f1_stat, n_resamples=n_resamples, seed=seed)
    tools = [s.tool for s in scores if s.tool is not None]
    if tools:
        out["tool_calls"] = tool_call_summary(tools, n_resamples=n_resamples, seed=seed)
    out.update(value_summary([s.values for s in scores], complete_fields=kind == "json_fields",
                             max_invented_value_rate=max_invented_value_rate, n_resamples=n_resamples, seed=seed))
    return out


TOOL_CALL_RATES = {  # metrics.json key -> what it is the share of
    "exact_call_accuracy": "examples whose calls are exactly the reference's (no call where it makes none)",
    "name_accuracy": "examples whose reference calls, with the same multiset of function names",
    "argument_accuracy": "arguments right, of the reference's arguments and those the answer adds",
    "no_call_accuracy": "examples whose reference makes no call, answered without a call",
    "call_decision_accuracy": "examples where the answer calls exactly when the reference does",
    "compliance": "answers whose calls all parse, name declared functions and validate against their schemas",
}


def tool_call_summary(outcomes: list[ToolCallOutcome], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The tool-call rates (:data:`TOOL_CALL_RATES`), each with a 95% bootstrap interval (``<key>_ci``; None
    when no example has it), and the called-vs-not confusion (rows: reference, columns: answer)."""
    boot = {"n_resamples": n_resamples, "seed": seed}
    calling = [o for o in outcomes if o.expected_call]
    shares = {"exact_call_accuracy": [o.exact for o in outcomes], "name_accuracy": [o.names_right for o in calling],
              "no_call_accuracy": [not o.predicted_call for o in outcomes if not o.expected_call],
              "call_decision_accuracy": [o.decision_right for o in outcomes],
              "compliance": [o.compliant for o in outcomes]}
    out: dict[str, Any] = {}
    for key, hits in shares.items():
        out[key] = float(np.mean(hits)) if hits else None
        out[f"{key}_ci"] = bootstrap_ci([float(h) for h in hits], **boot) if hits else None
    right, total = [o.args_right for o in outcomes], [o.args_total for o in outcomes]
    out["argument_accuracy"] = sum(right) / sum(total) if sum(total) else None
    out["argument_accuracy_ci"] = bootstrap_ratio_ci(right, total, **boot) if sum(total) else None
    out.update({"arguments": sum(total), "examples_with_calls": len(calling),
                "examples_without_calls": len(outcomes) - len(calling),
                "unparsed_blocks": sum(o.unparsed for o in outcomes)})
    out["confusion"] = {"expected": ["call", "no call"], "predicted": ["call", "no call"],
                        "matrix": [[sum(o.expected_call == e and o.predicted_call == p for o in outcomes)
                                    for p in (True, False)] for e in (True, False)]}
    return out


def paired_comparison(a: list[ExampleScore], b: list[ExampleScore], *, kind: str, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Model b vs model a on the same examples: difference in points with its CI and a paired test."""
    sa, sb = [s.score for s in a], [s.score for s in b]
    out: dict[str, Any] = {"n": len(sa), "delta_points": 100 * (float(np.mean(sb)) - float(np.mean(sa))) if sa else None}
    ci = paired_delta_ci(sa, sb, n_resamples=n_resamples, seed=seed)
    out["delta_points_ci"] = [100 * ci[0], 100 * ci[1]] if ci else None
    if kind in CONTINUOUS:
        out.update(paired_permutation(sa, sb, seed=seed))
    else:
        out.update(mcnemar_exact([s.correct for s in a], [s.correct for s in b]))
    return out


def pairwise_comparisons(scores: dict[str, dict[str, ExampleScore]], *, kind: str, n_resamples: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """``<b>_vs_<a>`` for every model b vs base, and tuned vs every other model, on the examples both answered.

    ``scores``: model name -> example id -> score (successful answers only), in display order.
    """
    pairs = [(b, "base") for b in scores if b != "base"]
    if "tuned" in scores:
        pairs += [("tuned", o) for o in scores if o not in ("base", "tuned")]
    out: dict[str, Any] = {}
    for b, a in pairs:
        if a not in scores:
            continue
        common = [i for i in scores[a] if i in scores[b]]
        if common:
            out[f"{b}_vs_{a}"] = paired_comparison([scores[a][i] for i in common], [scores[b][i] for i in common],
                                                   kind=kind, n_resamples=n_resamples, seed=seed)
    return out
