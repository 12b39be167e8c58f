"""The evaluation that fits the data: the scorer, format compliance and generation length follow the
measured structure of the answers (``data.answer_schema``).

* JSON answers -> ``json_fields`` (field-level P/R/F1) + format compliance = parses as JSON and
  validates against a JSON Schema inferred from the training answers;
* "Key: value" lines -> ``label`` with one named group per enum-like key + a format pattern of the lines;
* short labels -> ``label`` over the label set + a format pattern that accepts only a label;
* other short answers -> ``exact``;
* free text -> ``rouge_l`` (code: ``chrf``), and an endpoint of the config as the adversarial judge;
* answers that call tools (``<tool_call>`` blocks, whatever the rest) -> ``tool_calls``: names and arguments
  against the reference's calls, no-call decisions, compliance against the declared parameter schemas.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from tunesmith.data.answer_schema import AnswerStructure, FieldSpec, schema_pass_rate
from tunesmith.tool_calls import parse_tool_calls

GENERATION_MARGIN = 1.25  # max_new_tokens = the longest training answer x this (+ a few tokens), rounded up to 8
MIN_NEW_TOKENS = 16  # room for a label after a word or two of preamble


@dataclass(frozen=True)
class Pick:
    """One value advise chooses for the run config, and why."""

    key: str  # dotted path in the run config, e.g. eval.scorer
    value: Any
    reason: str


def _alternation(values: list[str] | tuple[str, ...]) -> str:
    """Longest first, so that a label that extends another wins; whitespace matches any whitespace."""
    return "|".join(re.sub(r"(\\ )+", r"\\s+", re.escape(v)) for v in sorted(values, key=lambda v: (-len(v), v)))


def label_patterns(labels: tuple[str, ...]) -> tuple[str, str]:
    """(label_pattern: the first label in an answer, format_pattern: the answer is exactly a label)."""
    alt = _alternation(labels)
    return rf"(?i)(?<![\w])(?P<label>{alt})(?![\w])", rf"(?i)\s*(?:{alt})\s*[.!]?"


def fields_label_pattern(fields: tuple[FieldSpec, ...]) -> str | None:
    """One optional look-ahead per enum-like key, so keys may come in any order and a missing key costs
    only its own field; None when no key has a small value set."""
    parts = [rf"(?:(?=[\s\S]*?^[ \t]*{re.escape(f.key)}[ \t]*:[ \t]*(?P<{f.group}>{_alternation(f.values)})(?![\w])))?"
             for f in fields if f.values]
    return "(?mi)" + "".join(parts) if parts else None


def fields_format_pattern(fields: tuple[FieldSpec, ...]) -> str:
    """The lines in their usual order; keys some answers lack are optional; enum-like values from their set."""
    lines = []
    for i, f in enumerate(fields):
        value = f"(?:{_alternation(f.values)})" if f.values else r"[^\n]*\S"
        line = ("" if i == 0 else r"\n") + rf"[ \t]*{re.escape(f.key)}[ \t]*:[ \t]*{value}[ \t]*"
        lines.append(line if f.present >= 1.0 else f"(?:{line})?")
    return "".join(lines)


def _format_share(pattern: str, answers: list[str]) -> float:
    """Share of ``answers`` that comply with ``pattern`` as eval's format check reads it (DOTALL, fullmatch)."""
    rx = re.compile(pattern, flags=re.DOTALL)
    return sum(1 for a in answers if rx.fullmatch(a.strip())) / max(1, len(answers))


def _labelled_share(pattern: str, answers: list[str]) -> float:
    """Share of ``answers`` in which ``pattern`` finds a value for every group."""
    rx = re.compile(pattern)
    found = (rx.search(a) for a in answers)
    return sum(1 for m in found if m and None not in m.groupdict().values()) / max(1, len(answers))


def max_new_tokens(answer_token_max: int) -> int:
    return max(MIN_NEW_TOKENS, int(math.ceil((answer_token_max * GENERATION_MARGIN + 4) / 8) * 8))


def tool_call_pick(answers: list[str]) -> Pick | None:
    """``eval.scorer: tool_calls`` when some answers call functions (None when none does)."""
    calls = [parse_tool_calls(a)[1] for a in answers]
    calling = sum(1 for c in calls if c)
    if not calling:
        return None
    names = sorted({c.name for cs in calls for c in cs})
    parallel = sum(1 for c in calls if len(c) > 1)
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} functions)" if len(names) > 6 else "")
    return Pick("eval.scorer", "tool_calls",
                f"{calling:,} of {len(answers):,} answers call functions ({shown}"
                + (f"; {parallel:,} call several at once" if parallel else "") + f"), {len(answers) - calling:,} answer "
                "in text: scored call by call (function names, arguments as JSON, parallel calls as a set), with the "
                "no-call decisions and compliance against the declared parameter schemas, not as one exact string")


def plan_eval(structure: AnswerStructure, answers: list[str], *, answer_token_max: int,
              endpoints: list[str], judge: str | None) -> list[Pick]:
    """The eval settings for answers of this structure, each with its reason (checked against ``answers``)."""
    s = structure
    picks = [Pick("eval.max_new_tokens", max_new_tokens(answer_token_max),
                  f"the longest training answer is {answer_token_max} tokens; generation gets {GENERATION_MARGIN:g}x that "
                  f"(at least {MIN_NEW_TOKENS})")]
    measured = f"{s.share:.0%} of {s.n:,} answers"
    tool_pick = tool_call_pick(answers)
    if tool_pick is not None:
        return [*picks, tool_pick]
    if s.kind == "json":
        import json

        values = [json.loads(a) for a in answers if a.strip()[:1] in "{["]
        ok = schema_pass_rate(s.json_schema, values) if values else 0.0
        props = s.json_schema.get("properties", {}) if isinstance(s.json_schema, dict) else {}
        nullable = [k for k, v in props.items() if isinstance(v.get("type"), list) and "null" in v["type"]]
        enums = [k for k, v in props.items() if "enum" in v]
        optional = [k for k in props if k not in s.json_schema.get("required", [])]
        detail = (f"{len(props)} keys" + (f", nullable: {', '.join(nullable)}" if nullable else "")
                  + (f", enums: {', '.join(enums)}" if enums else "") + (f", optional: {', '.join(optional)}" if optional else ""))
        picks += [
            Pick("eval.scorer", "json_fields", f"{measured} are JSON: scored field by field (precision/recall/F1; "
                 "accuracy = every field right), not as one exact string"),
            Pick("eval.format_json", True, "format compliance: the answer must parse as JSON"),
            Pick("eval.json_schema", s.json_schema, f"inferred from the training answers ({detail}); it accepts "
                 f"{ok:.0%} of them"),
        ]
        return picks
    if s.kind == "fields":
        keys = ", ".join(f.key for f in s.fields)
        label = fields_label_pattern(s.fields)
        if s.field_order_share >= 0.9:
            fmt = fields_format_pattern(s.fields)
            picks.append(Pick("eval.format_pattern", fmt, f"format compliance: the lines {keys} in this order "
                              f"({s.field_order_share:.0%} of the answers have it; the pattern accepts "
                              f"{_format_share(fmt, answers):.0%} of them)"))
        if label is None:
            picks.append(Pick("eval.scorer", "rouge_l", f"{measured} are 'Key: value' lines ({keys}) with free-text "
                              "values only: scored by ROUGE-L"))
            return picks
        enum = [f.key for f in s.fields if f.values]
        free = [f.key for f in s.fields if not f.values]
        picks += [
            Pick("eval.scorer", "label", f"{measured} are 'Key: value' lines; per key accuracy, macro-F1 and a "
                 f"confusion matrix for {', '.join(enum)}" + (f" ({', '.join(free)}: free text, not scored)" if free else "")),
            Pick("eval.label_pattern", label, f"one group per key with few values; it finds all of them in "
                 f"{_labelled_share(label, answers):.0%} of the training answers"),
        ]
        return picks
    if s.kind == "labels":
        label, fmt = label_patterns(s.labels)
        picks += [
            Pick("eval.scorer", "label", f"{measured} are short labels ({len(s.labels)} distinct: "
                 f"{', '.join(s.labels[:8])}{', ...' if len(s.labels) > 8 else ''}): accuracy, macro-F1, per-class "
                 "precision/recall and a confusion matrix"),
            Pick("eval.label_pattern", label, "the first label of the set in an answer"),
            Pick("eval.format_pattern", fmt, f"format compliance: the answer is one label of the set (accepts "
                 f"{_format_share(fmt, answers):.0%} of the training answers)"),
        ]
        return picks
    if s.kind == "short":
        picks.append(Pick("eval.scorer", "exact", f"{measured} are short ({s.shape}) but too varied for labels: "
                          "exact match after normalising case and spaces"))
        return picks
    scorer, why = ("chrf", "code: character n-gram F-score (chrF)") if s.kind == "code" else (
        "rouge_l", "free text: ROUGE-L (longest common word subsequence)")
    what = (f"{measured} are {s.shape}" if s.kind != "mixed" else
            f"the answers have no one shape (the commonest, {s.shape}, is {measured})")
    picks.append(Pick("eval.scorer", scorer, f"{what}: {why}"))
    if endpoints and not judge:
        picks.append(Pick("eval.adversarial.judge", endpoints[0], f"an endpoint is configured ({endpoints[0]}): it judges "
                          "the adversarial answers, which a pattern cannot score for free text"))
    return picks
