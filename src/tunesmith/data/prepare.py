"""Prepare a dataset: read every input row, validate, scrub PII, deduplicate, check lengths and
consistency, split, check leakage, mix general data, write.

Every input row ends up in exactly one place and ``stats.json`` counts them::

    rows_read = kept (train + validation + test task rows) + rejected + duplicates
                + leakage_removed + unused_by_max_examples

``rejected.jsonl`` holds each rejected row with its file, line, field, reason, hint and original
text; ``removed.jsonl`` names each duplicate or leaking row and the row it duplicates.

Streaming: rows are read one at a time and spooled to disk as canonical records; MinHash
signatures go to a memory-mapped file; what stays in memory per row is a few bytes in compact
arrays (id, hashes, label code). Only the split files are shuffled through bounded in-memory
buckets. The stages themselves are in :mod:`tunesmith.data.stages`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.readers import data_files, input_container
from tunesmith.data.records import Record
from tunesmith.data.split import SPLITS
from tunesmith.data.stages import Preparation
from tunesmith.errors import DataError
from tunesmith.utils.io import atomic_dir, read_jsonl, write_json


class PreparedData:
    """The prepared splits. Created from lists, or backed by a prepared folder whose split files
    are read (as lists) the first time each split is used."""

    def __init__(
        self,
        train: list[Record] | None = None,
        validation: list[Record] | None = None,
        test: list[Record] | None = None,
        rejected: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
        *,
        source_dir: Path | None = None,
    ):
        self._splits: dict[str, list[Record] | None] = {"train": train, "validation": validation, "test": test}
        self._rejected = rejected
        self.stats = stats or {}
        self.source_dir = source_dir

    def _load(self, name: str) -> list[Record]:
        value = self._splits.get(name)
        if value is None:
            path = self.source_dir / f"{name}.jsonl" if self.source_dir else None
            value = read_jsonl(path) if path and path.is_file() else []
            self._splits[name] = value
        return value

    @property
    def train(self) -> list[Record]:
        return self._load("train")

    @train.setter
    def train(self, v: list[Record]) -> None:
        self._splits["train"] = v

    @property
    def validation(self) -> list[Record]:
        return self._load("validation")

    @validation.setter
    def validation(self, v: list[Record]) -> None:
        self._splits["validation"] = v

    @property
    def test(self) -> list[Record]:
        return self._load("test")

    @test.setter
    def test(self, v: list[Record]) -> None:
        self._splits["test"] = v

    @property
    def rejected(self) -> list[dict[str, Any]]:
        if self._rejected is None:
            path = self.source_dir / "rejected.jsonl" if self.source_dir else None
            self._rejected = read_jsonl(path) if path and path.is_file() else []
        return self._rejected

    def split(self, name: str) -> list[Record]:
        return getattr(self, name)


# ---------------------------------------------------------------------------------------------
# inputs


def resolve_inputs(cfg: DataConfig, base_dir: Path, input_path: Path | None = None) -> list[tuple[Path, InputFile]]:
    """(file, its settings) for every input file; a folder yields each data file in it, sorted by name."""
    specs = cfg.inputs()
    if input_path is not None:
        specs = [InputFile(path=str(input_path), format=cfg.format, columns=cfg.columns)] + list(cfg.files)
    if not specs:
        raise DataError("no input data: data.train_file and data.files are both empty", hint="set data.train_file to your data file")
    out = []
    for spec in specs:
        p = Path(spec.path).expanduser()
        p = p if p.is_absolute() else (base_dir / p).resolve()
        for f in data_files(p):  # a folder stands for the data files in it
            input_container(f, spec.container)  # a clear error now when the content is not what the name says
            out.append((f, spec))
    return out


def fingerprint(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], extra: dict[str, Any]) -> str:
    """Identifies a preparation: config, input files (path, size, mtime) and tokenizer settings."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for p, _ in inputs:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the stages


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
    if out_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="tunesmith-data-"))
        try:
            stats = Preparation(cfg, inputs, tmp, seed=seed, base_dir=base_dir, tokenizer=tokenizer,
                                max_seq_length=max_seq_length, truncation=truncation, fingerprint=fp).run()
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
        stats = Preparation(cfg, inputs, tmp, seed=seed, base_dir=base_dir, tokenizer=tokenizer,
                            max_seq_length=max_seq_length, truncation=truncation, fingerprint=fp).run()
    _readable(out_dir)
    _raise_if_too_many_rejected(stats, cfg, out_dir)
    return PreparedData(stats=stats, source_dir=out_dir)


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


def save_prepared(data: PreparedData, out_dir: Path) -> None:
    from tunesmith.utils.io import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_jsonl(out_dir / f"{s}.jsonl", data.split(s))
    write_jsonl(out_dir / "rejected.jsonl", data.rejected)
    write_json(out_dir / "stats.json", data.stats)


def load_prepared(out_dir: Path) -> PreparedData:
    out_dir = Path(out_dir)
    missing = [s for s in SPLITS if not (out_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise DataError(f"prepared data in {out_dir} lacks {', '.join(missing)}", hint="run `tunesmith data prepare` first")
    stats = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").is_file() else {}
    return PreparedData(stats=stats, source_dir=out_dir)
