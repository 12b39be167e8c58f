"""Readers that turn input rows into canonical records (see :mod:`tunesmith.data.records`)."""

from __future__ import annotations

from typing import Any

from tunesmith.data.records import Record


class RowError(ValueError):
    """A row that cannot become a record; the message names the field and what to do."""


def _text_field(row: dict[str, Any], key: str, *, required: bool) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise RowError(f"field '{key}' is missing; every row needs it")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RowError(f"field '{key}' is empty or whitespace only")
    return value


def detect_format(row: dict[str, Any]) -> str:
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise RowError(
        f"cannot tell the format from keys {sorted(row)}; expected instruction/input/output (alpaca)"
    )


def alpaca_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    instruction = _text_field(row, "instruction", required=True)
    output = _text_field(row, "output", required=True)
    inp = _text_field(row, "input", required=False)
    system = _text_field(row, "system", required=False) or system_prompt
    user = instruction if not inp or not inp.strip() else f"{instruction}\n\n{inp}"
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}


READERS = {"alpaca": alpaca_to_record}
