"""Per-row work of the first pass, in chunks, so it can run in worker processes: parse, validate,
convert to a record, scrub PII, normalise and hash for exact dedup, MinHash for near dedup.

The caller keeps the decisions that need the whole stream (which row came first) and the order.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.consistency import answer_format
from tunesmith.data.dedup import MinHasher, _hash64, normalise
from tunesmith.data.formats import RowError, apply_columns, detect_format, row_to_record
from tunesmith.data.pii import PiiScanner, PiiTally
from tunesmith.data.readers import RawRow, ReadWarnings, parse_jsonl_line
from tunesmith.data.records import example_text, prompt_text, reference_answer

CHUNK = 2048


class OkRow(NamedTuple):
    rid: str
    line: bytes  # the canonical record as a UTF-8 JSON line, with its newline
    fmt: str
    keys: dict[str, int]  # exact-dedup scope -> 64-bit hash of the normalised text
    label: str | None
    answer_format: str | None
    short_answer: str | None  # the answer itself when it is label-like ("short")


@dataclass
class ChunkResult:
    rejects: list[dict[str, Any]] = field(default_factory=list)
    oks: list[OkRow] = field(default_factory=list)
    sigs: dict[str, np.ndarray] = field(default_factory=dict)
    pii: PiiTally = field(default_factory=PiiTally)
    warnings: ReadWarnings = field(default_factory=ReadWarnings)
    n_rows: int = 0


class RowProcessor:
    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.label_field = cfg.consistency.label_field or cfg.stratify_field
        self.redact = cfg.pii.mode == "redact"
        dd = cfg.dedup
        self.exact_scopes = list(dict.fromkeys(dd.exact_scope)) if dd.exact else []
        # signatures serve near dedup and the cross-split leakage check
        self.near_scopes = list(dict.fromkeys(dd.near_scope)) if (dd.near or dd.cross_split) else []
        self.hasher = MinHasher(dd.num_perm, dd.shingle, seed=1) if self.near_scopes else None
        self._reject_scanner: PiiScanner | None = None

    def _scrub(self, raw: str) -> str:
        """Rejected lines are kept as they were, except that PII is redacted there too (in redact mode)."""
        if not self.redact:
            return raw
        if self._reject_scanner is None:
            self._reject_scanner = PiiScanner.from_config(self.cfg.pii)
        return self._reject_scanner.scan(raw, redact=True)[0]

    def _scan_pii(self, pii: PiiScanner, record: dict[str, Any]) -> None:
        """Every text of the record: message contents (tool results among them) and the string values of tool-call arguments."""
        pii.apply(record, redact=self.redact)

    def process(self, items: list[Any], spec: InputFile, path: str, fname: str, detected_at: int | None = None) -> ChunkResult:
        """``detected_at``: the line the file's format was detected from (format auto), for clearer errors."""
        cfg = self.cfg
        res = ChunkResult()
        pii = PiiScanner.from_config(cfg.pii)
        near_texts: dict[str, list[str]] = {s: [] for s in self.near_scopes}
        for item in items:
            if isinstance(item, RawRow):
                raw = item
            else:
                raw = parse_jsonl_line(item[0], item[1], max_line_bytes=cfg.max_line_bytes, warnings=res.warnings, fix=cfg.fix_encoding)
                if raw is None:
                    continue
            res.n_rows += 1
            if raw.problem is not None:
                p = raw.problem
                res.rejects.append({"file": path, "line": raw.line, "kind": p.kind, "field": p.field, "reason": p.reason, "hint": p.hint,
                                    "raw": self._scrub(raw.raw)})
                continue
            try:
                row = apply_columns(raw.row, spec.columns)
                record, fmt = row_to_record(row, spec.format, system_prompt=cfg.system_prompt)
            except RowError as e:
                if detected_at is not None:
                    e = _format_mismatch(e, row, spec.format, detected_at)
                res.rejects.append({"file": path, "line": raw.line, "kind": e.kind, "field": e.field, "reason": e.reason, "hint": e.hint,
                                    "raw": self._scrub(raw.raw)})
                continue
            rid = f"{fname}:{raw.line}"
            record = {"id": rid, **record}
            if self.label_field:
                v = row.get(self.label_field)
                if v is not None and not isinstance(v, dict | list):
                    record["label"] = str(v)
            if pii is not None:
                self._scan_pii(pii, record)
            ex_norm = normalise(example_text(record))
            pr_norm = normalise(prompt_text(record)) if "messages" in record else None
            keys = {}
            for s in self.exact_scopes:
                # a raw-text record has no prompt side: its whole text stands in, marked so that it
                # cannot meet the prompt of a chat record
                text = ex_norm if s == "example" else (pr_norm if pr_norm is not None else "\x00text " + ex_norm)
                keys[s] = _hash64(text.encode("utf-8"))
            for s in self.near_scopes:
                near_texts[s].append(ex_norm if s == "example" or pr_norm is None else pr_norm)
            afmt = short = None
            if "messages" in record:
                answer = reference_answer(record)
                afmt = answer_format(answer)
                short = answer.strip() if afmt == "short" else None
            try:
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            except UnicodeEncodeError:  # JSON escapes such as \ud800 decode to half a surrogate pair
                res.rejects.append({"file": path, "line": raw.line, "kind": "invalid_unicode", "field": None,
                                    "reason": "a \\uD800-\\uDFFF escape without its pair: not valid Unicode",
                                    "hint": "fix the escape (or write the character itself, UTF-8 encoded)", "raw": self._scrub(raw.raw)})
                for s in self.near_scopes:
                    near_texts[s].pop()
                continue
            res.oks.append(OkRow(rid, line, fmt, keys, record.get("label"), afmt, short))
        for s, texts in near_texts.items():
            res.sigs[s] = self.hasher.signatures(texts, normalised=True)
        if pii is not None:
            res.pii = pii.tally
        return res


def _format_mismatch(e: RowError, row: dict[str, Any], file_format: str, detected_at: int) -> RowError:
    """A row of another format than its file's: say so instead of naming a missing field."""
    try:
        own = detect_format(row)
    except RowError:
        return e
    if own == file_format:
        return e
    return RowError(
        f"this row is in {own} format, but the file's format was detected as {file_format} (from line {detected_at})",
        field=None, kind="format_mismatch",
        hint="fix the row, or set format: mixed for this file if it mixes formats on purpose",
    )


# ---- worker processes ---------------------------------------------------------------------------

_WORKER: RowProcessor | None = None


def _init_worker(cfg_json: str) -> None:
    global _WORKER
    _WORKER = RowProcessor(DataConfig.model_validate_json(cfg_json))


def _work(args: tuple[list[Any], str, str, str, int | None]) -> ChunkResult:
    items, spec_json, path, fname, detected_at = args
    return _WORKER.process(items, InputFile.model_validate_json(spec_json), path, fname, detected_at)


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for it in items:
        buf.append(it)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


class ChunkRunner:
    """Runs :meth:`RowProcessor.process` over chunks, in order, in-process or in ``workers``
    processes with at most ``2 x workers`` chunks in flight (so a huge file is never read ahead)."""

    def __init__(self, cfg: DataConfig, workers: int):
        self.workers = workers
        self.local = RowProcessor(cfg) if workers <= 1 else None
        self.pool = None
        if workers > 1:
            ctx = mp.get_context("spawn")  # no fork: the parent may hold tokenizer threads
            self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(cfg.model_dump_json(),))

    def run(self, items: Iterable[Any], spec: InputFile, path: str, fname: str, detected_at: int | None = None) -> Iterator[ChunkResult]:
        if self.pool is None:
            for chunk in _chunks(items, CHUNK):
                yield self.local.process(chunk, spec, path, fname, detected_at)
            return
        spec_json = spec.model_dump_json()
        pending: deque = deque()
        for chunk in _chunks(items, CHUNK):
            pending.append(self.pool.apply_async(_work, ((chunk, spec_json, path, fname, detected_at),)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self, *, failed: bool = False) -> None:
        """Stop the workers: wait for them normally, kill them after an error or Ctrl-C."""
        if self.pool is not None:
            if failed:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None
