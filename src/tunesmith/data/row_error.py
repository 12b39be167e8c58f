"""The error of one input row that cannot become a record: what is wrong, where, and what to do."""

from __future__ import annotations


class RowError(ValueError):
    """A row that cannot become a record (it goes to the quarantine with ``kind``, ``field``, ``reason``, ``hint``)."""

    def __init__(self, reason: str, *, field: str | None = None, kind: str = "invalid_row", hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.kind = kind
        self.hint = hint
