"""Grammars that hold an output to tool calls in the format of :mod:`tunesmith.tool_calls`, or keep it free of them.

Each builder returns an :class:`~tunesmith.constrained_decoding.OutputConstraint` of kind ``structural_tag``
(xgrammar's structural tags: https://xgrammar.mlc.ai/docs/tutorials/structural_tag.html), compiled and applied
like any other constraint. A call is the exact text :meth:`tunesmith.tool_calls.ToolCall.block` writes::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

with the name one of the declared functions and the arguments compact JSON that follows that function's
``parameters`` schema; several calls are joined by a newline, as :func:`tunesmith.tool_calls.render_assistant_turn`
joins them. Function names are plain (``[A-Za-z0-9_-]``), so they are written into the tag without escaping.

The JSON of arguments and of ``response_format`` inside a structural tag is xgrammar's compact JSON-Schema
grammar (``any_whitespace=False``, the separators of ``json.dumps``), with raw control characters refused in
every string (xgrammar 0.2 lets them into strings with ``minLength``/``maxLength``: mlc-ai/xgrammar#800).
xgrammar is imported when a grammar is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tunesmith.constrained_decoding import ConstraintError, OutputConstraint
from tunesmith.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}  # a function declared without parameters
# xgrammar's string characters for strings with a length bound, and the same class without control characters
_LOOSE_CHARS, _STRICT_CHARS = r'[^\"\\\r\n]', r'[^\0-\x1f\"\\]'


def compact_json_ebnf(schema: dict[str, Any], *, strict: bool = True) -> str:
    """The EBNF of compact JSON that follows ``schema`` (``strict``: no properties beyond the declared ones)."""
    import xgrammar as xgr

    try:
        grammar = xgr.Grammar.from_json_schema(json.dumps(schema, ensure_ascii=False), any_whitespace=False,
                                               strict_mode=strict)
    except (RuntimeError, ValueError) as e:
        raise ConstraintError(f"cannot compile the JSON Schema: {str(e).strip().splitlines()[0]}") from None
    return str(grammar).replace(_LOOSE_CHARS, _STRICT_CHARS)


def _json_format(schema: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    return {"type": "grammar", "grammar": compact_json_ebnf(schema, strict=strict)}


def _call_tag(name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "tag", "begin": f'{TOOL_CALL_OPEN}\n{{"name": "{name}", "arguments": ',
            "content": _json_format(parameters or NO_PARAMETERS), "end": f"}}\n{TOOL_CALL_CLOSE}"}


def _calls_format(functions: Sequence[dict[str, Any]], *, parallel: bool) -> dict[str, Any]:
    """One call or more (one only unless ``parallel``) to any of ``functions`` (OpenAI ``function`` objects)."""
    if not functions:
        raise ConstraintError("tool calls need at least one declared function")
    return {"type": "tags_with_separator", "tags": [_call_tag(f["name"], f.get("parameters")) for f in functions],
            "separator": "\n", "at_least_one": True, "stop_after_first": not parallel}


def _constraint(fmt: dict[str, Any]) -> OutputConstraint:
    return OutputConstraint.structural_tag(json.dumps({"type": "structural_tag", "format": fmt}, ensure_ascii=False))


def forced_tool_calls(functions: Sequence[dict[str, Any]], *, parallel: bool = True) -> OutputConstraint:
    """The output is tool calls only: at least one (exactly one unless ``parallel``), each to one of ``functions``."""
    return _constraint(_calls_format(functions, parallel=parallel))


def auto_tool_calls(functions: Sequence[dict[str, Any]], *, parallel: bool = True) -> OutputConstraint:
    """Free text in which every ``<tool_call>`` opened is a well-formed call to one of ``functions``; without
    ``parallel`` at most one call, and the answer ends with it."""
    if not functions:
        raise ConstraintError("tool calls need at least one declared function")
    return _constraint({"type": "triggered_tags", "triggers": [TOOL_CALL_OPEN],
                        "tags": [_call_tag(f["name"], f.get("parameters")) for f in functions],
                        "at_least_one": False, "stop_after_first": not parallel})


def calls_or_json(functions: Sequence[dict[str, Any]], schema: dict[str, Any] | None, *,
                  parallel: bool = True) -> OutputConstraint:
    """Either tool calls (as :func:`forced_tool_calls`) or one JSON value following ``schema`` (None: any object)."""
    if schema is None:
        json_fmt = _json_format({"type": "object"}, strict=False)  # any object (json_object)
    else:
        json_fmt = _json_format(schema, strict=True)
    return _constraint({"type": "or", "elements": [_calls_format(functions, parallel=parallel), json_fmt]})


def no_tool_calls() -> OutputConstraint:
    """Any text that never opens a tool call (``tool_choice: none`` with tools shown to the model)."""
    return _constraint({"type": "any_text", "excludes": [TOOL_CALL_OPEN]})
