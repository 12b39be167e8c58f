"""Prepare a dataset: the entry point of the data stage, and the order of its stages.

Each stage is a function that takes the results of the stages before it and returns a small frozen
result of its own; ``stats.json`` is built from those results (:mod:`.stats`):

1. read (:mod:`.first_pass`): every input row through validation, PII and hashing; records spooled
   to disk; exact duplicates marked (:mod:`.dedup`)
2. near duplicates (:func:`.dedup.mark_near_duplicates`)
3. checks (:mod:`.checks`): token lengths and answer consistency, a second pass over the spool
4. split (:mod:`.split`): ``max_examples``, seeded stratified splits, leakage into train; the rows of held-out
   files (``data.validation_file``, ``data.test_file``) keep their split as given
5. mix (:mod:`.mix`): general data for train (and ``general_eval.jsonl``)
6. write (:mod:`.split_files`): the shuffled split files, unless the preparation failed

Every input row ends up in exactly one place and ``stats.json`` counts them::

    rows_read = kept (train + validation + test task rows) + rejected + duplicates
                + leakage_removed + unused_by_max_examples

``rejected.jsonl`` holds each rejected row with its file, line, field, reason, hint and original
text; ``removed.jsonl`` names each duplicate or leaking row and the row it duplicates.

Streaming: rows are read one at a time and spooled to disk as canonical records; MinHash
signatures go to a memory-mapped file; what stays in memory per row is a few bytes in compact
arrays (id, hashes, label code). Only the split files are shuffled through bounded in-memory
buckets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunesmith.data.checks import check_rows
from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.dedup import mark_near_duplicates
from tunesmith.data.first_pass import read_inputs
from tunesmith.data.inputs import fingerprint, resolve_inputs
from tunesmith.data.mix import mix_general
from tunesmith.data.prepared import PreparedData
from tunesmith.data.spool import JsonlSink
from tunesmith.data.split import SPLITS, split_rows
from tunesmith.data.split_files import write_split_files
from tunesmith.data.stats import build_stats, judge
from tunesmith.errors import DataError
from tunesmith.utils.io import atomic_dir, write_json


def prepare_data(
    cfg: DataConfig,
    input_path: Path | None = None,
    out_dir: Path | None = None,
    *,
    seed: int,
    base_dir: Path | None = None,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    truncation: str = "reject",
    fingerprint_extra: dict[str, Any] | None = None,
) -> PreparedData:
    """Prepare the data described by ``cfg`` (plus ``input_path`` as the train file if given).

    With ``out_dir`` the folder is written atomically and the returned splits are read from it on
    first use; without it, everything is prepared in a temporary folder and returned in memory.
    Raises :class:`DataError` (after writing the folder, without split files) when the share of
    rejected rows exceeds ``cfg.max_rejected_fraction``.
    """
    base_dir = Path(base_dir) if base_dir is not None else (Path(input_path).parent if input_path else Path.cwd())
    inputs = resolve_inputs(cfg, base_dir, input_path)
    fp = fingerprint(cfg, inputs, {"seed": seed, "max_seq_length": max_seq_length, "truncation": truncation, **(fingerprint_extra or {})})

    def run(folder: Path) -> dict[str, Any]:
        return run_stages(cfg, inputs, folder, seed=seed, base_dir=base_dir, tokenizer=tokenizer, max_seq_length=max_seq_length,
                          truncation=truncation, fingerprint=fp)

    if out_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="tunesmith-data-"))
        try:
            stats = run(tmp)
            data = PreparedData(stats=stats, source_dir=tmp)
            for s in (*SPLITS, "rejected"):
                getattr(data, s)  # load into memory before the folder goes
            data.source_dir = None
            _raise_if_too_many_rejected(stats, cfg, tmp)
            return data
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        stats = run(tmp)
    _readable(out_dir)
    _raise_if_too_many_rejected(stats, cfg, out_dir)
    return PreparedData(stats=stats, source_dir=out_dir)


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t


def run_stages(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], out: Path, *, seed: int, base_dir: Path, tokenizer: Any,
               max_seq_length: int | None, truncation: str, fingerprint: str) -> dict[str, Any]:
    """Run the stages in order into the folder ``out``; write ``stats.json`` and the reports there and return the stats."""
    t0 = time.perf_counter()
    counter = None
    if tokenizer is not None and cfg.check_length and max_seq_length:
        from tunesmith.data.length import TokenCounter

        counter = TokenCounter(tokenizer, max_seq_length, truncation)
    work = out / ".work"
    work.mkdir()
    seconds: dict[str, float] = {}
    rejected, removed = JsonlSink(out / "rejected.jsonl"), JsonlSink(out / "removed.jsonl")
    try:
        with _timed(seconds, "read_validate_pii_exact"):
            read = read_inputs(cfg, inputs, work, rejected=rejected, removed=removed)
        with _timed(seconds, "near_dedup"):
            near = mark_near_duplicates(read.signatures, cfg.dedup, read.exact.is_duplicate, read.rows.ids, removed)
        with _timed(seconds, "length_consistency"):
            check = check_rows(cfg, read, read.exact.is_duplicate | near.is_duplicate, work, counter=counter,
                               max_seq_length=max_seq_length, truncation=truncation, base_dir=base_dir, rejected=rejected)
        with _timed(seconds, "split_leakage"):
            split = split_rows(cfg, check.survivors, check.label_codes, read.rows.labels, read.rows.ids, read.signatures,
                               seed=seed, removed=removed, given_split=read.rows.given_split)
        with _timed(seconds, "mix"):
            mix = mix_general(cfg, split.counts["train"], out, counter=counter, max_seq_length=max_seq_length, base_dir=base_dir,
                              seed=seed)
        with _timed(seconds, "write"):
            outcome = judge(cfg, read, check, split)
            if outcome.failure is None:  # a failed preparation writes no split to train on
                write_split_files(check.spool, split.assign, mix.general_train, out, work, seed=seed)
    finally:
        rejected.close()
        removed.close()
        shutil.rmtree(work, ignore_errors=True)
    seconds["total"] = time.perf_counter() - t0
    stats = build_stats(cfg, inputs, fingerprint, read=read, near=near, check=check, split=split, mix=mix, outcome=outcome,
                        max_seq_length=max_seq_length, seconds=seconds)
    write_json(out / "stats.json", stats)
    if cfg.report:
        from tunesmith.data.report import write_reports

        write_reports(out, stats)
    return stats


def _readable(folder: Path) -> None:
    """Temporary folders/files are created private (0700/0600); give the result the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        folder.chmod(0o777 & ~umask)
        for f in folder.iterdir():
            f.chmod(0o666 & ~umask)
    except OSError:
        pass


def _raise_if_too_many_rejected(stats: dict[str, Any], cfg: DataConfig, where: Path) -> None:
    if stats.get("failure") == "no_usable_rows":
        raise DataError(
            f"no usable rows: {stats['rows_read']} read, {stats['rejected']} rejected, {stats['duplicates']} duplicates",
            hint=f"see {where / 'rejected.jsonl'} for why each row was rejected",
        )
    if stats.get("status") == "failed":
        top = ", ".join(f"{k}: {v}" for k, v in Counter(stats["rejected_by_kind"]).most_common(4))
        raise DataError(
            f"{stats['rejected']} of {stats['rows_read']} input rows ({stats['rejected_fraction']:.1%}) were rejected, "
            f"above data.max_rejected_fraction={cfg.max_rejected_fraction} ({top})",
            hint=f"see {where / 'rejected.jsonl'} (line numbers, reasons, what to do); fix the data or raise the threshold",
        )
