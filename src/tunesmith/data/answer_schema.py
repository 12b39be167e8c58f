"""The structure of a dataset's answers, inferred from the answers themselves: a JSON Schema for JSON
answers, the keys (and value sets) of "Key: value" answers, the label set of label-like answers.

The shape of each answer comes from the one classifier, :func:`tunesmith.data.answer_format.answer_format`
(json / code / list / short / prose); this module looks inside the dominant shape. "Key: value"
answers are not a class of their own there (one such line is "short", several are "prose"): they
are recognised here, in answers of either class, when every line of an answer is ``Key: value``.

Torch-free: `tunesmith advise` uses it to choose the evaluation that fits the data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from tunesmith.data.answer_format import answer_format

CONSISTENT_SHARE = 0.9  # a structure holds when at least this share of the answers have it
ENUM_MAX_VALUES = 12  # a string field (or a "Key: value" key) with at most this many distinct values...
ENUM_MIN_COUNT = 3  # ...each seen at least this often, is an enum; rarer values would likely miss test values
LABEL_MAX_DISTINCT = 20  # short answers are labels when they have at most max(this, answers / 10) values
MAX_PROPERTIES = 50  # objects with more distinct keys than this are maps: their keys are not listed
MAX_DEPTH = 16  # deeper JSON is described as {} (any value)
_FIELD_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _()/&.'-]{0,39}?)\s*:[ \t]*(\S.*?)\s*$")

Kind = Literal["json", "fields", "labels", "short", "text", "code", "mixed"]


@dataclass(frozen=True)
class FieldSpec:
    """One key of "Key: value" answers."""

    key: str  # as written in the answers
    group: str  # a regex group name made from the key
    present: float  # share of the "Key: value" answers that have it
    values: tuple[str, ...] | None  # the value set when it is enum-like, else None (free text)


@dataclass(frozen=True)
class AnswerStructure:
    kind: Kind
    shape: str  # the dominant class of data.answer_format
    share: float  # share of the answers that have this structure
    n: int  # answers looked at
    json_schema: dict[str, Any] | None = None  # kind "json"
    fields: tuple[FieldSpec, ...] = ()  # kind "fields", in the answers' usual order
    field_order_share: float = 0.0  # share of "Key: value" answers with exactly the usual keys in the usual order
    labels: tuple[str, ...] | None = None  # kind "labels", most frequent first
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- JSON Schema


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def is_enum(counts: Counter, n: int) -> bool:
    """Few distinct values, each seen often enough that a test answer is unlikely to hold another."""
    return 2 <= len(counts) <= ENUM_MAX_VALUES and n >= 2 * ENUM_MIN_COUNT and min(counts.values()) >= ENUM_MIN_COUNT


def infer_json_schema(samples: list[Any], *, depth: int = 0) -> dict[str, Any]:
    """A JSON Schema that every sample satisfies: types, nullable values (null seen), required keys
    (present in every object), closed objects (``additionalProperties: false``), enums for strings
    with few values (:func:`is_enum`)."""
    if depth >= MAX_DEPTH:
        return {}
    values = [v for v in samples if v is not None]
    nullable = len(values) < len(samples)
    if not values:
        return {"type": "null"}
    types = {_json_type(v) for v in values}
    if types == {"integer", "number"}:
        types = {"number"}
    if len(types) > 1:  # mixed: the types only
        return {"type": sorted(types) + (["null"] if nullable else [])}
    (kind,) = types
    schema: dict[str, Any] = {"type": [kind, "null"] if nullable else kind}
    if kind == "object":
        schema.update(_object_schema(values, depth))
    elif kind == "array":
        items = [x for v in values for x in v]
        if items:
            schema["items"] = infer_json_schema(items, depth=depth + 1)
    elif kind == "string":
        counts = Counter(values)
        if is_enum(counts, len(values)):
            schema["enum"] = sorted(counts) + ([None] if nullable else [])
    return schema


def _object_schema(objects: list[dict[str, Any]], depth: int) -> dict[str, Any]:
    keys: dict[str, int] = {}  # insertion order = first seen
    for o in objects:
        for k in o:
            keys[k] = keys.get(k, 0) + 1
    if len(keys) > MAX_PROPERTIES:  # a map (ids -> values), not a record
        return {"additionalProperties": infer_json_schema([v for o in objects for v in o.values()], depth=depth + 1)}
    props = {k: infer_json_schema([o[k] for o in objects if k in o], depth=depth + 1) for k in keys}
    out: dict[str, Any] = {"properties": props}
    required = [k for k, c in keys.items() if c == len(objects)]
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def schema_pass_rate(schema: dict[str, Any], samples: list[Any]) -> float:
    """Share of ``samples`` that validate against ``schema`` (a check of the inference itself)."""
    from jsonschema.validators import validator_for

    v = validator_for(schema)(schema)
    return sum(1 for s in samples if v.is_valid(s)) / max(1, len(samples))


# ---------------------------------------------------------------------------- "Key: value" answers


def parse_fields(answer: str) -> list[tuple[str, str]] | None:
    """The (key, value) pairs of an answer whose every non-blank line is ``Key: value``; else None."""
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    out = []
    for ln in lines:
        m = _FIELD_LINE.match(ln)
        if m is None or len(m.group(1).split()) > 4:
            return None
        out.append((m.group(1).strip(), m.group(2)))
    return out or None


def _group_name(key: str, taken: set[str]) -> str:
    name = re.sub(r"\W+", "_", key.strip().lower()).strip("_") or "field"
    if name[0].isdigit():
        name = "f_" + name
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def infer_fields(answers: list[str]) -> tuple[tuple[FieldSpec, ...], float, int] | None:
    """(the keys in their usual order, share of answers with exactly that order, answers parsed) when at
    least :data:`CONSISTENT_SHARE` of the answers are "Key: value" lines; else None."""
    parsed = [p for p in (parse_fields(a) for a in answers) if p is not None]
    if not answers or len(parsed) < CONSISTENT_SHARE * len(answers):
        return None
    orders = Counter(tuple(k.lower() for k, _ in p) for p in parsed)
    usual, usual_n = orders.most_common(1)[0]
    seen: dict[str, str] = {}  # lower-case key -> spelling (most common)
    spell = Counter(k for p in parsed for k, _ in p)
    for k, _ in spell.most_common():
        seen.setdefault(k.lower(), k)
    order = list(usual) + [k for k in dict.fromkeys(k.lower() for p in parsed for k, _ in p) if k not in usual]
    taken: set[str] = set()
    specs = []
    for key in order:
        vals = [v for p in parsed for k, v in p if k.lower() == key]
        present = sum(1 for p in parsed if any(k.lower() == key for k, _ in p)) / len(parsed)
        counts = Counter(v for v in vals)
        enum = tuple(v for v, _ in counts.most_common()) if is_enum(counts, len(vals)) else None
        specs.append(FieldSpec(seen[key], _group_name(seen[key], taken), present, enum))
    return tuple(specs), usual_n / len(parsed), len(parsed)


# ---------------------------------------------------------------------------- labels


def normalise_label(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def label_set(answers: list[str]) -> dict[str, int] | None:
    """Counts of the (normalised) short answers (:func:`answer_format`) when they are few distinct values,
    like classification labels; else None. How many answers are short is the caller's question."""
    short = [normalise_label(a) for a in answers if answer_format(a) == "short"]
    if not short:
        return None
    counts = Counter(short)
    if len(counts) > max(LABEL_MAX_DISTINCT, len(answers) // 10):
        return None
    return dict(counts.most_common())


# ---------------------------------------------------------------------------- the structure


def infer_structure(answers: list[str]) -> AnswerStructure:
    """What the answers are, checked in this order: JSON, "Key: value" lines, labels, other short
    answers, code, free text; "mixed" when no shape holds for :data:`CONSISTENT_SHARE` of them."""
    n = len(answers)
    shapes = Counter(answer_format(a) for a in answers)
    shape, shape_n = shapes.most_common(1)[0] if answers else ("prose", 0)
    share = shape_n / max(1, n)
    if shape == "json" and share >= CONSISTENT_SHARE:
        values = [json.loads(a) for a in answers if answer_format(a) == "json"]
        return AnswerStructure("json", shape, share, n, json_schema=infer_json_schema(values))
    fields = infer_fields(answers) if shape in ("short", "prose") else None
    if fields is not None:
        specs, order_share, parsed = fields
        return AnswerStructure("fields", shape, parsed / n, n, fields=specs, field_order_share=order_share)
    if share < CONSISTENT_SHARE:
        return AnswerStructure("mixed", shape, share, n)
    if shape == "short":
        labels = label_set(answers)
        if labels is not None:
            return AnswerStructure("labels", shape, share, n, labels=tuple(labels))
        return AnswerStructure("short", shape, share, n)
    return AnswerStructure("code" if shape == "code" else "text", shape, share, n)
