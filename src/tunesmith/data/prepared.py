"""A prepared dataset: the splits, the rejected rows and the stats of one preparation, in memory
or read from its folder (``<run>/data``) on first use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.data.records import Record
from tunesmith.data.split import SPLITS
from tunesmith.errors import DataError
from tunesmith.utils.io import read_jsonl


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

    @property
    def validation(self) -> list[Record]:
        return self._load("validation")

    @property
    def test(self) -> list[Record]:
        return self._load("test")

    @property
    def rejected(self) -> list[dict[str, Any]]:
        if self._rejected is None:
            path = self.source_dir / "rejected.jsonl" if self.source_dir else None
            self._rejected = read_jsonl(path) if path and path.is_file() else []
        return self._rejected

    def split(self, name: str) -> list[Record]:
        return getattr(self, name)


def load_prepared(out_dir: Path) -> PreparedData:
    out_dir = Path(out_dir)
    missing = [s for s in SPLITS if not (out_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise DataError(f"prepared data in {out_dir} lacks {', '.join(missing)}", hint="run `tunesmith data prepare` first")
    stats = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").is_file() else {}
    return PreparedData(stats=stats, source_dir=out_dir)
