"""The checks stage of a preparation: token lengths (reject or truncate) and answer consistency,
in a second pass over the spooled records that survived deduplication.

The rows that pass are written to a second spool, in order; rows that fail go to
``rejected.jsonl`` (``too_long``, ``schema``, ``template_refused``: the model's chat template cannot
render the conversation, e.g. a template that allows one tool call per turn given two). The first spool is deleted once read.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from tunesmith.data.config import DataConfig
from tunesmith.data.consistency import ANSWER_FORMATS, ConsistencyChecker
from tunesmith.data.first_pass import ReadResult
from tunesmith.data.records import Record
from tunesmith.data.spool import JsonlSink, iter_records
from tunesmith.errors import DataError

if TYPE_CHECKING:
    from tunesmith.data.length import TokenCounter

LENGTH_BATCH = 512
REFUSED = -1  # the token length of a row the chat template refuses


@dataclass(frozen=True)
class CheckResult:
    spool: Path  # the records that passed, in first-pass order
    survivors: array  # "q": first-pass row index of each row of ``spool``
    label_codes: array  # "i": label code (``ReadResult.rows.labels``) of each row of ``spool``
    token_lengths: list[int] | None  # None when lengths were not counted
    truncated: int
    rejected_by_kind: dict[str, int]
    consistency: dict[str, Any]  # ConsistencyChecker.summary


def load_schema(cfg: DataConfig, base_dir: Path) -> dict[str, Any] | None:
    s = cfg.consistency.json_schema
    if s is None or isinstance(s, dict):
        return s
    p = Path(s).expanduser()
    p = p if p.is_absolute() else base_dir / p
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"data.consistency.json_schema: cannot read {p}: {e}", hint="give a JSON Schema file or an inline mapping") from None


class _Checks:
    """The per-record checks and what they gather (private to :func:`check_rows`)."""

    def __init__(self, cfg: DataConfig, read: ReadResult, counter: TokenCounter | None, max_len: int | None, truncation: str,
                 checker: ConsistencyChecker, spool: TextIO, rejected: JsonlSink):
        self.cfg, self.read, self.checker, self.spool, self.rejected = cfg, read, checker, spool, rejected
        self.counter, self.max_len, self.truncation = counter, max_len, truncation
        self.file_of_name = {Path(p).name: p for p in read.per_file}
        self.survivors, self.label_codes, self.token_lengths = array("q"), array("i"), array("i")
        self.truncated = 0
        self.rejected_by_kind: Counter[str] = Counter()

    def copy_known(self, i: int, line: str) -> None:
        """A row that needs no check of its own: what the consistency summary needs is known from the first pass."""
        rows = self.read.rows
        fc = rows.answer_formats[i]
        self.checker.add_known(i, rows.labels.value(rows.label_codes[i]), None if fc < 0 else ANSWER_FORMATS[fc],
                               rows.short_answers.value(rows.short_codes[i]))
        self.survivors.append(i)
        self.label_codes.append(rows.label_codes[i])
        self.spool.write(line)

    def _lengths(self, records: list[Record]) -> list[int]:
        """Token lengths; a batch the template refuses is counted row by row, and each refused row is rejected."""
        from tunesmith.chat_template import TemplateRefusal

        try:
            return self.counter.count(records)
        except TemplateRefusal:
            pass
        out = []
        for rec in records:
            try:
                out.append(self.counter.count([rec])[0])
            except TemplateRefusal as e:
                self._reject(rec, "template_refused", e.message, "change the conversation so the model's chat template can render it, "
                             "or train a model whose template accepts it")
                out.append(REFUSED)
        return out

    def check_batch(self, batch: list[tuple[int, Record]]) -> None:
        max_len = self.max_len
        lengths = self._lengths([r for _, r in batch]) if self.counter else [None] * len(batch)
        for (i, rec), n_tok in zip(batch, lengths, strict=True):
            if n_tok == REFUSED:
                continue
            if n_tok is not None and n_tok > max_len:
                new, n_new = None, n_tok
                if self.truncation == "truncate":
                    new, n_new, _ = self.counter.truncate(rec, n_tok)
                if new is None:
                    how = "the prompt cannot be cut enough" if self.truncation == "truncate" else "train.truncation is 'reject'"
                    self._reject(rec, "too_long", f"{n_tok} tokens with the chat template, over train.max_seq_length={max_len} ({how})",
                                 "shorten the example, raise train.max_seq_length, or set train.truncation: truncate")
                    continue
                rec, n_tok = new, n_new
                self.truncated += 1
            err = self.checker.schema_error(rec)
            if err is not None and self.cfg.consistency.json_schema_action == "reject":
                self._reject(rec, "schema", err, "fix the answer so it matches data.consistency.json_schema")
                continue
            self.checker.add(rec, i)
            if n_tok is not None:
                self.token_lengths.append(n_tok)
            self.survivors.append(i)
            self.label_codes.append(self.read.rows.labels.code(rec.get("label")))
            self.spool.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def _reject(self, rec: Record, kind: str, reason: str, hint: str) -> None:
        name, _, line = rec["id"].rpartition(":")
        self.rejected_by_kind[kind] += 1
        self.rejected.write({"file": self.file_of_name.get(name, name), "line": int(line) if line.isdigit() else None, "kind": kind,
                             "field": None, "reason": reason, "hint": hint, "raw": json.dumps(rec, ensure_ascii=False)})


def check_rows(cfg: DataConfig, read: ReadResult, removed: np.ndarray, work: Path, *, counter: TokenCounter | None,
               max_seq_length: int | None, truncation: str, base_dir: Path, rejected: JsonlSink) -> CheckResult:
    """Check every row of ``read`` not marked in ``removed`` (duplicates). With ``counter`` None,
    lengths are not checked; ``truncation`` (reject | truncate) says what happens to longer rows."""
    checker = ConsistencyChecker(load_schema(cfg, base_dir))
    spool_path = work / "spool2.jsonl"
    with open(spool_path, "w", encoding="utf-8") as spool:
        checks = _Checks(cfg, read, counter, max_seq_length, truncation, checker, spool, rejected)
        if counter is None and not checker.needs_records:
            # nothing needs the records themselves: copy the lines through
            with open(read.spool, encoding="utf-8") as src:
                for i, line in enumerate(src):
                    if not removed[i]:
                        checks.copy_known(i, line)
        else:
            batch: list[tuple[int, Record]] = []
            for i, rec in enumerate(iter_records(read.spool)):
                if removed[i]:
                    continue
                batch.append((i, rec))
                if len(batch) >= LENGTH_BATCH:
                    checks.check_batch(batch)
                    batch = []
            if batch:
                checks.check_batch(batch)
    read.spool.unlink()
    return CheckResult(
        spool=spool_path, survivors=checks.survivors, label_codes=checks.label_codes,
        token_lengths=list(checks.token_lengths) if counter is not None else None, truncated=checks.truncated,
        rejected_by_kind=dict(checks.rejected_by_kind), consistency=checker.summary(lambda i: read.rows.ids[i]),
    )
