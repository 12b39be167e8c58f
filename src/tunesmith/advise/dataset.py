"""Dataset facts measured for the recommendation: count after dedup, format consistency, label
balance, token lengths (whole examples and answers), the answers' structure.

Accepts a raw JSONL input file (any format `tunesmith data` reads, or rows that already hold
``messages``) or a prepared-data folder (train/validation/test.jsonl).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.chat_template import ChatTemplateError, render_conversation
from tunesmith.data.answer_format import answer_format
from tunesmith.data.answer_schema import AnswerStructure, infer_structure, label_set
from tunesmith.data.records import Record, message_text
from tunesmith.errors import DataError


@dataclass
class DatasetFacts:
    source: str
    rows: int
    rejected: int
    unique: int
    answer_shapes: dict[str, int]  # answer class (data.answer_format: json/code/list/short/prose) -> count
    dominant_shape: str
    format_consistency: float  # share of answers with the dominant shape
    labels: dict[str, int] | None
    label_source: str | None
    token_counter: str
    token_mean: float
    token_p50: int
    token_p95: int
    token_max: int
    answer_token_max: int = 0  # the longest answer alone (what generation must fit)
    structure: AnswerStructure | None = None  # data.answer_schema: JSON Schema / keys / labels of the answers
    answers: list[str] = field(default_factory=list, repr=False)  # the unique examples' last answers
    notes: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.rows - self.unique

    @property
    def imbalance(self) -> float | None:
        """Largest label count / smallest (1.0 = balanced)."""
        if not self.labels or len(self.labels) < 2:
            return None
        return max(self.labels.values()) / min(self.labels.values())

    @property
    def majority_share(self) -> float | None:
        if not self.labels:
            return None
        return max(self.labels.values()) / sum(self.labels.values())


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _last_answer(record: Record) -> str:
    """The last assistant turn as text, its tool calls included (``<tool_call>`` blocks, as evaluation reads it)."""
    return next((message_text(m) for m in reversed(record["messages"]) if m["role"] == "assistant"), "")


def read_any(path: Path, *, stratify_field: str | None = None) -> tuple[list[Record], int]:
    """Records and the number of rejected rows from a JSONL file or a prepared-data folder."""
    if path.is_dir():
        from tunesmith.data.prepared import load_prepared

        prepared = load_prepared(path)
        return prepared.train + prepared.validation + prepared.test, int(prepared.stats.get("rejected", 0))
    if not path.is_file():
        raise DataError(f"dataset {path} does not exist", hint="give a JSONL file or a prepared data folder (runs/<name>/data)")
    path = path.resolve()  # train_file is resolved against base_dir: a relative one would be joined twice
    # The data stage's own readers and validation (every format it knows); dedup is measured below.
    from tunesmith.data.config import DataConfig, DedupConfig, PiiConfig
    from tunesmith.data.prepare import prepare_data

    cfg = DataConfig(train_file=str(path), stratify_field=stratify_field, validation_fraction=0.0, test_fraction=0.0,
                     max_rejected_fraction=1.0, check_length=False, report=False,
                     dedup=DedupConfig(exact=False, near=False, cross_split=False), pii=PiiConfig(mode="off"))
    prepared = prepare_data(cfg, None, None, seed=0, base_dir=path.parent)
    return prepared.train + prepared.validation + prepared.test, int(prepared.stats.get("rejected", 0))


def _count_answer_tokens(answers: list[str], tokenizer: Any | None) -> list[int]:
    if tokenizer is not None:
        return [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    return [math.ceil(len(a) / 4) for a in answers]


def _count_tokens(records: list[Record], tokenizer: Any | None) -> tuple[list[int], str]:
    if tokenizer is not None:
        lengths = []
        for r in records:
            msgs = r["messages"]  # tool calls and results included: the template renders them
            try:
                text = render_conversation(tokenizer, msgs, tools=r.get("tools"))  # the tools are in the prompt too
            except ChatTemplateError:  # no chat template (or it refuses the conversation): plain concatenation
                text = "\n".join(m["content"] for m in msgs)
            lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        name = Path(str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)).name
        return lengths, f"tokenizer {name}"
    # ~4 characters per token for English text, plus a few template tokens per message
    return [sum(math.ceil(len(m["content"]) / 4) + 4 for m in r["messages"]) for r in records], "approx. 4 characters/token"


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def measure_dataset(path: str | Path, *, tokenizer: Any | None = None, stratify_field: str | None = None) -> DatasetFacts:
    path = Path(path)
    records, rejected = read_any(path, stratify_field=stratify_field)
    if not records:
        raise DataError(f"dataset {path} has no usable examples ({rejected} rejected)", hint="run `tunesmith data prepare` to see why")
    unique = _unique(records)
    answers = [_last_answer(r) for r in unique]
    shapes = Counter(answer_format(a) for a in answers)  # the data stage's classes
    dominant, dom_n = shapes.most_common(1)[0]
    labels, label_source = _labels(unique, answers, dominant, stratify_field)
    lengths, counter = _count_tokens(unique, tokenizer)
    lengths_sorted = sorted(lengths)
    answer_max = max(_count_answer_tokens(answers, tokenizer))
    notes = []
    if len(unique) < len(records):
        notes.append(f"{len(records) - len(unique)} duplicate examples removed before counting")
    return DatasetFacts(
        source=str(path), rows=len(records), rejected=rejected, unique=len(unique), answer_shapes=dict(shapes),
        dominant_shape=dominant, format_consistency=dom_n / len(unique), labels=labels, label_source=label_source,
        token_counter=counter, token_mean=sum(lengths) / len(lengths), token_p50=_percentile(lengths_sorted, 0.5),
        token_p95=_percentile(lengths_sorted, 0.95), token_max=lengths_sorted[-1], answer_token_max=answer_max,
        structure=infer_structure(answers), answers=answers, notes=notes,
    )


def _unique(records: list[Record]) -> list[Record]:
    """First occurrence of each example, comparing whitespace/case-normalised messages."""
    seen: set[str] = set()
    unique: list[Record] = []
    for r in records:
        key = "\x1f".join(f"{m['role']}:{_norm(m['content'])}" for m in r["messages"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _labels(unique: list[Record], answers: list[str], dominant: str,
            stratify_field: str | None) -> tuple[dict[str, int] | None, str | None]:
    """Label counts and where they come from: the records' labels, else the answers when most are
    label-like ("short") and few distinct (classification-like); else none."""
    given = [r.get("label") for r in unique if r.get("label") is not None]
    if given:
        return dict(Counter(given).most_common()), f"field '{stratify_field}'" if stratify_field else "record labels"
    if dominant == "short":
        counts = label_set(answers)
        if counts is not None:
            return counts, "short answers"
    return None, None
