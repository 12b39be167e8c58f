"""Scorers: where a metric is computed. Each takes predictions and references, returns numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def extract_labels(text: str, pattern: re.Pattern[str]) -> dict[str, str] | None:
    """Named groups of the first match of ``pattern`` in ``text``, normalised; None if no match."""
    m = pattern.search(text)
    if not m:
        return None
    return {k: normalise(v) for k, v in m.groupdict().items() if v is not None}


@dataclass
class ExampleScore:
    correct: bool
    format_ok: bool | None
    fields: dict[str, bool]


def score_example(pred: str, ref: str, *, label_pattern: str | None, format_pattern: str | None) -> ExampleScore:
    fields: dict[str, bool] = {}
    if label_pattern:
        pat = re.compile(label_pattern)
        want = extract_labels(ref, pat) or {}
        got = extract_labels(pred, pat) or {}
        fields = {k: got.get(k) == v for k, v in want.items()}
        correct = bool(want) and all(fields.values())
    else:
        correct = normalise(pred) == normalise(ref)
    format_ok = None
    if format_pattern:
        format_ok = re.fullmatch(format_pattern, pred.strip(), flags=re.DOTALL) is not None
    return ExampleScore(correct, format_ok, fields)


def aggregate(scores: list[ExampleScore]) -> dict[str, float | int | None]:
    n = len(scores)
    out: dict[str, float | int | None] = {"n": n, "accuracy": sum(s.correct for s in scores) / n if n else None}
    fmt = [s.format_ok for s in scores if s.format_ok is not None]
    out["format_compliance"] = sum(fmt) / len(fmt) if fmt else None
    field_names = sorted({k for s in scores for k in s.fields})
    for k in field_names:
        vals = [s.fields[k] for s in scores if k in s.fields]
        out[f"{k}_accuracy"] = sum(vals) / len(vals) if vals else None
    return out
