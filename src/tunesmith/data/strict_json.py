"""JSON text of input rows, parsed so that nothing is lost silently and nothing can crash later.

- A key repeated in one object is an error (:class:`DuplicateKey`): the standard library would keep
  the last value and drop the others without a word.
- Nesting deeper than :data:`MAX_DEPTH` is an error (:class:`TooDeep`): Python's parser raises
  ``RecursionError`` at about 1,000 levels, and a value parsed just below that still breaks later
  recursive work (``json.dumps`` from deeper in the stack, pickling to worker processes, schema
  validation). No real training row comes near 100 levels (a chat row has 3).

Malformed JSON still raises :class:`json.JSONDecodeError`, with its usual message and position.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 100  # levels of nested arrays/objects in one row; the row itself is level 1


class UnusableJson(ValueError):
    """Well-formed JSON that cannot be used as a row; ``kind``, ``reason``, ``hint`` and ``field``
    say why, for the quarantine."""

    kind = "unusable_json"
    hint = ""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


class DuplicateKey(UnusableJson):
    kind = "duplicate_key"
    hint = "keep one value per key (rename or remove the repeated key)"

    def __init__(self, key: str):
        super().__init__(f"key {key!r} appears more than once in one object; JSON readers would silently keep only the last value", key)
        self.key = key


class TooDeep(UnusableJson):
    kind = "too_deep"
    hint = f"flatten the row: training rows need at most a few levels (a chat row has 3); the limit is {MAX_DEPTH}"

    def __init__(self) -> None:
        super().__init__(f"JSON nested more than {MAX_DEPTH} levels deep")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object)


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _check_depth(value: Any, text: str, start: int, end: int) -> None:
    # fewer brackets than the limit (nearly every row): the walk is not needed
    if isinstance(value, dict | list) and text.count("{", start, end) + text.count("[", start, end) > MAX_DEPTH:
        if _deeper_than(value, MAX_DEPTH):
            raise TooDeep()


def loads(text: str) -> Any:
    """Like :func:`json.loads`, but raises :class:`DuplicateKey` or :class:`TooDeep` (see the module)."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise TooDeep() from None
    _check_depth(value, text, 0, len(text))
    return value


def raw_decode(text: str, pos: int) -> tuple[Any, int]:
    """Like :meth:`json.JSONDecoder.raw_decode` (the value starting at ``pos`` and where it ends),
    with the checks of :func:`loads`. After :class:`TooDeep`, :func:`end_of_value` finds where the
    value ends, so reading can go on after it."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except RecursionError:
        raise TooDeep() from None
    _check_depth(value, text, pos, end)
    return value, end


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def end_of_value(text: str, pos: int) -> int | None:
    """Where the array or object starting at ``pos`` ends, found by matching brackets outside strings
    (for a value too deep to parse); None when its brackets never balance."""
    depth = 0
    for m in _TOKEN.finditer(text, pos):
        t = m.group()
        if t in "[{":
            depth += 1
        elif t in "]}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None
