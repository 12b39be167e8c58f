"""The first stage of a preparation: read every input row once.

Each row goes through validation, PII and hashing (:mod:`.rowproc`, in worker processes for large
inputs). Rejected rows go to ``rejected.jsonl``; the records of the others are spooled to disk with
their MinHash signatures beside them, and what later stages need of each row stays in compact
arrays (:class:`RowIndex`). Exact duplicates are then marked (:func:`.dedup.mark_exact_duplicates`).
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tunesmith.data.compact import Codes, IdTable
from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.consistency import ANSWER_FORMATS
from tunesmith.data.dedup import Duplicates, SignatureFile, mark_exact_duplicates
from tunesmith.data.formats import RowError, apply_columns, detect_format
from tunesmith.data.pii import PiiTally
from tunesmith.data.readers import ReadWarnings, input_container, iter_jsonl_lines, iter_rows
from tunesmith.data.rowproc import ChunkResult, ChunkRunner
from tunesmith.data.split import SPLITS
from tunesmith.data.spool import JsonlSink

DETECT_ROWS = 1000


@dataclass(frozen=True)
class RowIndex:
    """What later stages need of each row that passed the first pass, a few bytes per row; the
    position in these arrays is the row's line in the spool."""

    ids: IdTable
    labels: Codes
    label_codes: array  # "i": code in ``labels`` (-1: none)
    answer_formats: array  # "b": index in ANSWER_FORMATS (-1: a raw-text record)
    short_answers: Codes  # label-like answers
    short_codes: array  # "i": code in ``short_answers``
    given_split: array  # "b": the split a held-out file gives the row (index in split.SPLITS), -1: split by the fractions


@dataclass(frozen=True)
class ReadResult:
    rows_read: int
    rows: RowIndex
    spool: Path  # the records, one JSON line per row of ``rows``
    signatures: dict[str, Path]  # scope -> MinHash signatures of every row (:func:`.dedup.read_signatures`)
    exact: Duplicates
    formats: dict[str, int]  # records per input format
    pii: PiiTally  # what the PII scanner found (stats.json's ``pii`` block: :meth:`.pii.PiiTally.summary`)
    rejected_by_kind: dict[str, int]
    per_file: dict[str, dict[str, Any]]
    warnings: dict[str, dict[str, Any]]  # per file: fixes made while reading, with a count and the first line
    workers: int


def signature_scopes(cfg: DataConfig) -> list[str]:
    """Scopes with MinHash signatures: they serve near dedup and the leakage check."""
    dd = cfg.dedup
    return list(dict.fromkeys(dd.near_scope)) if (dd.near or dd.cross_split) else []


def n_workers(cfg: DataConfig, inputs: list[tuple[Path, InputFile]]) -> int:
    """Worker processes for the first pass: ``data.workers``, or for inputs over 64 MB one per CPU
    core (at most 4); small inputs run in-process (starting workers costs about a second)."""
    if cfg.workers is not None:
        return cfg.workers
    size = sum(p.stat().st_size for p, _ in inputs)
    if size < 64 * 2**20:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def detect_file_format(path: Path, container: str, cfg: DataConfig, columns: dict[str, str]) -> tuple[str, int] | None:
    """(format, line) of the first row among the first DETECT_ROWS whose format can be told; the
    whole file is then read in that format, so a stray row of another format is rejected rather
    than silently becoming another kind of example. None: no row tells (all will be rejected)."""
    rows = iter_rows(path, container, max_line_bytes=cfg.max_line_bytes, warnings=ReadWarnings(), fix=cfg.fix_encoding)
    try:
        for k, raw in enumerate(rows):
            if k >= DETECT_ROWS:
                break
            if raw.row is None:
                continue
            try:
                return detect_format(apply_columns(raw.row, columns)), raw.line
            except RowError:
                continue
    finally:
        close = getattr(rows, "close", None)
        if close:
            close()
    return None


class _Tally:
    """What the first pass gathers from the chunks of every file (private to :func:`read_inputs`)."""

    def __init__(self, cfg: DataConfig, work: Path, spool: BinaryIO, rejected: JsonlSink):
        self.spool, self.rejected = spool, rejected
        exact_scopes = list(dict.fromkeys(cfg.dedup.exact_scope)) if cfg.dedup.exact else []
        self.exact_keys = {s: array("Q") for s in exact_scopes}  # row -> 64-bit hash of the normalised text
        self.rows = RowIndex(ids=IdTable(), labels=Codes(), label_codes=array("i"), answer_formats=array("b"),
                             short_answers=Codes(cap=1000), short_codes=array("i"), given_split=array("b"))
        self.signature_paths = {s: work / f"signatures-{s}.u32" for s in signature_scopes(cfg)}
        self.signatures = {s: SignatureFile(p) for s, p in self.signature_paths.items()}
        self.formats: Counter[str] = Counter()
        self.pii = PiiTally()
        self.rejected_by_kind: Counter[str] = Counter()

    def add(self, res: ChunkResult, given_split: int) -> None:
        for r in res.rejects:
            self.rejected_by_kind[r["kind"]] += 1
            self.rejected.write(r)
        self.pii.add(res.pii)
        rows = self.rows
        for ok in res.oks:
            for scope, keys in self.exact_keys.items():
                keys.append(ok.keys[scope])
            rows.ids.append(ok.rid)
            rows.label_codes.append(rows.labels.code(ok.label))
            rows.answer_formats.append(-1 if ok.answer_format is None else ANSWER_FORMATS.index(ok.answer_format))
            rows.short_codes.append(rows.short_answers.code(ok.short_answer))
            rows.given_split.append(given_split)
            self.formats[ok.fmt] += 1
            self.spool.write(ok.line)
        for scope, sigs in self.signatures.items():
            sigs.extend(res.sigs[scope])

    def close(self) -> None:
        for sigs in self.signatures.values():
            sigs.close()


def _read_file(path: Path, spec: InputFile, cfg: DataConfig, runner: ChunkRunner, tally: _Tally) -> tuple[int, dict[str, Any], ReadWarnings]:
    """Read one file into ``tally``: (rows read, its ``per_file`` entry, what was fixed while reading)."""
    warns = ReadWarnings()
    container = input_container(path, spec.container)
    detected = None
    if spec.format == "auto":
        detected = detect_file_format(path, container, cfg, spec.columns)
        if detected is not None:
            spec = spec.model_copy(update={"format": detected[0]})
    if container == "jsonl":  # parsed in the workers
        items: Any = iter_jsonl_lines(path)
    else:
        items = iter_rows(path, container, max_line_bytes=cfg.max_line_bytes, warnings=warns, fix=cfg.fix_encoding)
    n_rows = 0
    for res in runner.run(items, spec, str(path), path.name, detected[1] if detected else None):
        n_rows += res.n_rows
        for k, v in res.warnings.counts.items():
            warns.counts[k] = warns.counts.get(k, 0) + v
            warns.first_line.setdefault(k, res.warnings.first_line[k])
        tally.add(res, -1 if spec.split == "auto" else SPLITS.index(spec.split))
    entry: dict[str, Any] = {"rows": n_rows, "format": spec.format}
    if spec.split != "auto":
        entry["split"] = spec.split  # a held-out file, used as given
    if detected is not None:
        entry["format_detected_at_line"] = detected[1]
    return n_rows, entry, warns


def read_inputs(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], work: Path, *, rejected: JsonlSink, removed: JsonlSink) -> ReadResult:
    """Read every row of ``inputs`` (spool and signatures go to ``work``), then mark exact duplicates."""
    workers = n_workers(cfg, inputs)
    spool_path = work / "spool.jsonl"
    runner = ChunkRunner(cfg, workers)
    rows_read = 0
    per_file: dict[str, dict[str, Any]] = {}
    warnings: dict[str, dict[str, Any]] = {}
    failed = True
    try:
        with open(spool_path, "wb") as spool:
            tally = _Tally(cfg, work, spool, rejected)
            try:
                for path, spec in inputs:
                    n, per_file[str(path)], warns = _read_file(path, spec, cfg, runner, tally)
                    rows_read += n
                    if warns.counts:
                        warnings[str(path)] = {k: {"count": v, "first_line": warns.first_line[k]} for k, v in warns.counts.items()}
            finally:
                tally.close()
        failed = False
    finally:
        runner.close(failed=failed)
    exact = mark_exact_duplicates(tally.exact_keys, tally.rows.ids, removed)
    return ReadResult(
        rows_read=rows_read, rows=tally.rows, spool=spool_path, signatures=tally.signature_paths, exact=exact,
        formats=dict(tally.formats), pii=tally.pii,
        rejected_by_kind=dict(tally.rejected_by_kind), per_file=per_file, warnings=warnings, workers=workers,
    )
