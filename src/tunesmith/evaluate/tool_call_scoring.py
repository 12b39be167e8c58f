"""The ``tool_calls`` scorer: a model's function calls against the reference's, one example at a time.

Both the answer and the reference are read with :func:`tunesmith.tool_calls.parse_tool_calls` (the
``<tool_call>{json}</tool_call>`` format a model without native tool support is trained on, and the
native output of Hermes/Qwen-style models; an endpoint's ``message.tool_calls`` are written in it too,
see ``endpoint.py``). Per example (:class:`ToolCallOutcome`):

* **exact**: the calls are the reference's as a multiset (same names, arguments equal as JSON: parsed,
  key order irrelevant, parallel calls in any order) and nothing extra; where the reference makes no call,
  the answer makes none (its text is not scored);
* **names right**: the multiset of called function names is the reference's (examples whose reference calls);
* **arguments**: reference calls are paired with answer calls of the same name (identical calls first, then
  the one sharing most argument values); every reference argument of a call is right when its pair has it
  with an equal value; an argument the pair adds is wrong too (``args_right`` of ``args_total``);
* **call decision**: the answer calls a tool exactly when the reference does (the no-call decisions are the
  examples whose reference makes none);
* **compliance**: every ``<tool_call>`` block of the answer parses as a call, names a declared function and
  its arguments validate against that function's ``parameters`` JSON Schema (jsonschema). Without declared
  tools, only the parsing is checked.

A ``<tool_call>`` block that does not parse counts as an attempted call: the example is not exact and not
compliant. Torch-free.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tunesmith.tool_calls import TOOL_CALL_OPEN, ToolCall, parse_tool_calls


@dataclass(frozen=True)
class ToolCallOutcome:
    expected_call: bool  # the reference calls at least one function
    predicted_call: bool  # the answer calls (or tries to call: an unparseable block) at least one function
    exact: bool
    names_right: bool
    args_right: int
    args_total: int
    unparsed: int  # <tool_call> blocks of the answer that are not calls
    compliant: bool
    compliance_error: str | None = None  # why the answer does not comply

    @property
    def decision_right(self) -> bool:
        return self.expected_call == self.predicted_call


def _json_value(v: Any) -> Any:
    """``v`` with JSON's equality: a whole float is its integer (1.0 is 1), a boolean stays a boolean."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def _text(v: Any) -> str:
    return json.dumps(_json_value(v), sort_keys=True, ensure_ascii=False)


def _canonical(call: ToolCall) -> str:
    return _text([call.name, call.arguments])


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: key order ignored, 1 and 1.0 equal, true and 1 not."""
    return _text(a) == _text(b)


def _pairs(ref: list[ToolCall], pred: list[ToolCall]) -> list[tuple[ToolCall, ToolCall | None]]:
    """Each reference call with the answer call it is compared with (None: no answer call of its name left)."""
    left = list(pred)
    out: list[tuple[ToolCall, ToolCall | None]] = []
    pending = []
    for r in ref:  # identical calls first, so a parallel call is never paired with its sibling's twin
        twin = next((p for p in left if _canonical(p) == _canonical(r)), None)
        if twin is not None:
            left.remove(twin)
            out.append((r, twin))
        else:
            pending.append(r)
    for r in pending:
        same_name = [p for p in left if p.name == r.name]
        best = max(same_name, key=lambda p: sum(k in p.arguments and _same(v, p.arguments[k])
                                                for k, v in r.arguments.items()), default=None)
        if best is not None:
            left.remove(best)
        out.append((r, best))
    return out


def argument_counts(ref: list[ToolCall], pred: list[ToolCall]) -> tuple[int, int]:
    """(right, total) arguments: every reference argument, plus the arguments paired answer calls add."""
    right = total = 0
    for r, p in _pairs(ref, pred):
        total += len(r.arguments)
        if p is None:
            continue
        right += sum(k in p.arguments and _same(v, p.arguments[k]) for k, v in r.arguments.items())
        total += len(set(p.arguments) - set(r.arguments))
    return right, total


def declared_functions(tools: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Function name -> its ``parameters`` schema ({} when it declares none), from OpenAI-style tools."""
    out: dict[str, dict[str, Any]] = {}
    for t in tools or ():
        fn = t.get("function", t) if isinstance(t, dict) else {}
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    from jsonschema.validators import validator_for

    schema = json.loads(schema_json)
    return validator_for(schema)(schema)


def compliance_error(calls: list[ToolCall], unparsed: int, tools: Sequence[dict[str, Any]] | None) -> str | None:
    """Why an answer's calls are not well formed (None when they are)."""
    if unparsed:
        return f"{unparsed} <tool_call> block(s) are not a call (JSON with a name and an object of arguments)"
    if tools is None:
        return None
    declared = declared_functions(tools)
    for c in calls:
        if c.name not in declared:
            return f"calls {c.name!r}, which is not a declared function"
        err = next(iter(_validator(json.dumps(declared[c.name], sort_keys=True)).iter_errors(c.arguments)), None)
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
            return f"{c.name}: {where}: {err.message}"
    return None


def score_tool_calls(pred: str, ref: str, tools: Sequence[dict[str, Any]] | None = None) -> ToolCallOutcome:
    """The outcome of one answer against its reference (both as text); ``tools``: the declared functions
    (None: unknown, only parsing is checked for compliance)."""
    _, want = parse_tool_calls(ref)
    rest, got = parse_tool_calls(pred)
    unparsed = rest.count(TOOL_CALL_OPEN)
    right, total = argument_counts(want, got)
    exact = unparsed == 0 and Counter(map(_canonical, want)) == Counter(map(_canonical, got))
    names = Counter(c.name for c in want) == Counter(c.name for c in got) and unparsed == 0
    error = compliance_error(got, unparsed, tools)
    return ToolCallOutcome(expected_call=bool(want), predicted_call=bool(got) or unparsed > 0, exact=exact,
                           names_right=names, args_right=right, args_total=total, unparsed=unparsed,
                           compliant=error is None, compliance_error=error)


def has_tool_calls(records: Sequence[dict[str, Any]]) -> bool:
    """Whether the data carries tool calling: a record declares tools or an answer calls one."""
    return any(r.get("tools") or any(m.get("tool_calls") for m in r.get("messages", ())) for r in records)
