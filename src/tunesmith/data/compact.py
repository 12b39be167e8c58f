"""Compact per-row bookkeeping for large inputs: a few bytes per row instead of Python objects."""

from __future__ import annotations

from array import array


class IdTable:
    """Row index -> record id ``"file.jsonl:12"``, stored as (file number, line) in two arrays."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._name_idx: dict[str, int] = {}
        self.file = array("i")
        self.line = array("q")

    def append(self, rid: str) -> None:
        name, _, line = rid.rpartition(":")
        fi = self._name_idx.get(name)
        if fi is None:
            fi = self._name_idx[name] = len(self.names)
            self.names.append(name)
        self.file.append(fi)
        self.line.append(int(line))

    def __getitem__(self, i: int) -> str:
        return f"{self.names[self.file[i]]}:{self.line[i]}"

    def __len__(self) -> int:
        return len(self.line)


class Codes:
    """Repeating strings (labels, label-like answers) as small integers; -1 is None. After ``cap``
    distinct values, new ones share the code -2 (``OTHER``)."""

    OTHER = "\x00other"

    def __init__(self, cap: int | None = None) -> None:
        self.values: list[str] = []
        self._idx: dict[str, int] = {}
        self.cap = cap

    def code(self, s: str | None) -> int:
        if s is None:
            return -1
        c = self._idx.get(s)
        if c is None:
            if self.cap is not None and len(self.values) >= self.cap:
                return -2
            c = self._idx[s] = len(self.values)
            self.values.append(s)
        return c

    def value(self, c: int) -> str | None:
        if c == -1:
            return None
        return self.OTHER if c == -2 else self.values[c]
