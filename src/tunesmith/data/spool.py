"""Append-only JSONL files written while preparing: ``rejected.jsonl``, ``removed.jsonl`` and the
spools of records that pass from one stage to the next."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.data.records import Record


class JsonlSink:
    """An append-only JSONL file that counts its rows."""

    def __init__(self, path: Path):
        self.f = open(path, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - closed in close()
        self.n = 0

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.n += 1

    def close(self) -> None:
        self.f.close()


def iter_records(path: Path) -> Iterator[Record]:
    """The records of a spool, one per line."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
