"""Consistency of the answers: label set and distribution, JSON answers against a schema, and
examples whose answer format differs from the majority."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from tunesmith.data.answer_format import ANSWER_FORMATS, answer_format
from tunesmith.data.records import Record, is_text_record, reference_answer
from tunesmith.errors import ConfigError

MAX_LISTED = 50
MAX_ANSWER_LABELS = 50  # more distinct short answers than this: not classification-like


class ConsistencyChecker:
    def __init__(self, json_schema: dict[str, Any] | None = None):
        self.labels: Counter[str] = Counter()
        self.formats: Counter[str] = Counter()
        self._fmt_idx = array("q")  # row index of each chat record counted, and its answer format code
        self._fmt_code = array("b")
        self.schema_checked = 0
        self.schema_failed: list[dict[str, str]] = []
        self.n_schema_failed = 0
        self.short_answers: Counter[str] = Counter()  # label-like answers, for classification-like tasks
        self._validator = None
        if json_schema is not None:
            try:
                import jsonschema
            except ImportError as e:  # pragma: no cover - jsonschema is a dependency
                raise ConfigError("data.consistency.json_schema needs the jsonschema package", hint="pip install jsonschema") from e
            cls = jsonschema.validators.validator_for(json_schema)
            try:
                cls.check_schema(json_schema)
            except jsonschema.SchemaError as e:
                raise ConfigError(f"data.consistency.json_schema is not a valid JSON Schema: {e.message}") from None
            self._validator = cls(json_schema)

    def schema_error(self, record: Record) -> str | None:
        """Why the answer fails the schema (None if it passes or no schema is set)."""
        if self._validator is None or is_text_record(record):
            return None
        self.schema_checked += 1
        answer = reference_answer(record)
        try:
            obj = json.loads(answer)
            best = next(iter(sorted(self._validator.iter_errors(obj), key=lambda e: e.path)), None)
        except json.JSONDecodeError as e:
            err = f"answer is not JSON: {e.msg} at column {e.colno}"
        except RecursionError:  # parsing or validating recurses once per level
            err = "answer is JSON nested too deeply to check against the schema"
        else:
            if best is None:
                return None
            where = "/".join(str(p) for p in best.absolute_path) or "(root)"
            err = f"answer fails the JSON schema at {where}: {best.message}"
        self.n_schema_failed += 1
        if len(self.schema_failed) < MAX_LISTED:
            self.schema_failed.append({"id": record["id"], "error": err})
        return err

    def add(self, record: Record, idx: int) -> None:
        """Count one kept record; ``idx`` identifies it for :meth:`summary` (see ``id_of`` there)."""
        if record.get("label") is not None:
            self.labels[str(record["label"])] += 1
        if is_text_record(record):
            return
        answer = reference_answer(record)
        fmt = answer_format(answer)
        self.add_known(idx, None, fmt, answer.strip() if fmt == "short" else None)

    def add_known(self, idx: int, label: str | None, fmt: str | None, short_answer: str | None = None) -> None:
        """Like :meth:`add` with the label, answer format and label-like answer already known (no parsing)."""
        if label is not None:
            self.labels[label] += 1
        if fmt is not None:
            self.formats[fmt] += 1
            self._fmt_idx.append(idx)
            self._fmt_code.append(ANSWER_FORMATS.index(fmt))
        if short_answer is not None and (short_answer in self.short_answers or len(self.short_answers) < MAX_ANSWER_LABELS):
            self.short_answers[short_answer] += 1

    @property
    def needs_records(self) -> bool:
        return self._validator is not None

    def summary(self, id_of: Callable[[int], str] = str) -> dict[str, Any]:
        """``id_of`` turns the ``idx`` given to :meth:`add` into a record id (for the outlier list)."""
        out: dict[str, Any] = {}
        if self.labels:
            total = sum(self.labels.values())
            out["labels"] = {k: {"count": v, "share": round(v / total, 4)} for k, v in self.labels.most_common()}
        if self.formats:
            majority = self.formats.most_common(1)[0][0]
            odd_mask = np.frombuffer(self._fmt_code, dtype=np.int8) != ANSWER_FORMATS.index(majority)
            odd = np.frombuffer(self._fmt_idx, dtype=np.int64)[odd_mask]
            out["answer_formats"] = dict(self.formats.most_common())
            out["majority_format"] = majority
            out["format_outliers"] = int(len(odd))
            out["format_outlier_ids"] = [id_of(int(i)) for i in odd[:MAX_LISTED]]
            out["json_answers"] = self.formats.get("json", 0)
            # classification-like: most answers are label-like and there are few distinct ones
            if majority == "short" and len(self.short_answers) < MAX_ANSWER_LABELS:
                total = sum(self.short_answers.values())
                out["answer_labels"] = {k: {"count": v, "share": round(v / total, 4)} for k, v in self.short_answers.most_common()}
        if self._validator is not None:
            out["json_schema"] = {
                "checked": self.schema_checked,
                "valid": self.schema_checked - self.n_schema_failed,
                "valid_share": round((self.schema_checked - self.n_schema_failed) / self.schema_checked, 4) if self.schema_checked else None,
                "failures": self.schema_failed,
            }
        return out
