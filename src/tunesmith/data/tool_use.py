"""Tool definitions, calls and tool results of input rows: read into the canonical form of
:mod:`tunesmith.data.records` and checked, each problem a :class:`RowError` that names the field.

- :func:`read_tools` reads ``tools`` (OpenAI ``{"type": "function", "function": {...}}``), legacy
  ``functions`` and ShareGPT ``tools`` (bare ``{"name", "description", "parameters"}``), checking each
  ``parameters`` is a JSON Schema.
- :func:`read_call` reads one call (OpenAI ``tool_calls`` item, legacy ``function_call``, ShareGPT
  ``function_call`` value).
- :func:`resolve_tool_use` checks a whole conversation: every call names a declared function, its
  arguments are a JSON object valid against that function's ``parameters``, and every tool result answers
  exactly one call of the assistant turn just before it (results without an id answer that turn's calls in
  order, a legacy ``function`` result the call with its name). It fills in each result's
  ``tool_call_id`` and ``name``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tunesmith.data import strict_json
from tunesmith.data.row_error import RowError

TOOLS_HINT = 'declare each tool as {"type": "function", "function": {"name": ..., "description": ..., "parameters": {JSON Schema}}}'


@dataclass
class Source:
    """Where a canonical message came from in the input row, for error messages."""

    path: str  # "messages[3]"
    calls: list[str] = field(default_factory=list)  # where each of its calls is: "messages[3].tool_calls[0]"
    fn: str = ""  # from a call's path to its name/arguments: ".function" (OpenAI tool_calls) or ""


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A JSON Schema validator for a ``parameters`` schema; raises ``SchemaError`` for an invalid schema."""
    from jsonschema.validators import validator_for

    schema = json.loads(schema_json)
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)


def _read_function(fn: Any, where: str) -> dict[str, Any]:
    if not isinstance(fn, dict):
        raise RowError(f"{where} must be an object, got {type(fn).__name__}", field=where, kind="invalid_tools", hint=TOOLS_HINT)
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowError(f"{where}.name must be a non-empty string, got {name!r}", field=f"{where}.name", kind="invalid_tools", hint=TOOLS_HINT)
    if "description" in fn and not isinstance(fn["description"], str):
        raise RowError(f"{where}.description must be a string", field=f"{where}.description", kind="invalid_tools", hint=TOOLS_HINT)
    params = fn.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise RowError(f"{where}.parameters must be a JSON Schema object, got {type(params).__name__}",
                           field=f"{where}.parameters", kind="invalid_tools", hint=TOOLS_HINT)
        from jsonschema.exceptions import SchemaError

        try:
            _validator(_schema_key(params))
        except SchemaError as e:
            raise RowError(f"{where}.parameters of {name!r} is not a valid JSON Schema: {_short(e.message)}",
                           field=f"{where}.parameters", kind="invalid_tools", hint="fix the schema (https://json-schema.org)") from None
    return dict(fn)


def read_tools(value: Any, key: str) -> list[dict[str, Any]]:
    """The declared tools of row field ``key``, as ``[{"type": "function", "function": {...}}]``."""
    if not isinstance(value, list):
        raise RowError(f"field '{key}' must be a list of tool definitions, got {type(value).__name__}", field=key, kind="invalid_tools",
                       hint=TOOLS_HINT)
    tools: list[dict[str, Any]] = []
    first: dict[str, str] = {}
    for i, t in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(t, dict):
            raise RowError(f"{where} must be an object, got {type(t).__name__}", field=where, kind="invalid_tools", hint=TOOLS_HINT)
        if "type" in t or "function" in t:  # the OpenAI tools form
            if t.get("type", "function") != "function":
                raise RowError(f"{where}.type is {t['type']!r}: only function tools can be trained", field=f"{where}.type",
                               kind="invalid_tools", hint="drop tools of other types")
            fn = _read_function(t.get("function"), f"{where}.function")
            name_field = f"{where}.function.name"
        else:  # a bare function: legacy `functions`, ShareGPT `tools`
            fn = _read_function(t, where)
            name_field = f"{where}.name"
        if fn["name"] in first:
            raise RowError(f"{name_field} {fn['name']!r} is declared twice (also {first[fn['name']]})", field=name_field,
                           kind="invalid_tools", hint="give each tool a distinct name")
        first[fn["name"]] = name_field
        tools.append({"type": "function", "function": fn})
    return tools


def read_call(call: Any, where: str, call_id: str, *, fn_key: str | None) -> dict[str, Any]:
    """One call as ``{"id", "type": "function", "function": {"name", "arguments": JSON text}}``.

    ``fn_key``: the key holding name and arguments ("function" in OpenAI ``tool_calls``), or None when
    they are on the call itself. ``call_id`` is used when the call has no ``id``. Arguments given as a
    JSON object are written as JSON text; whether they are valid is :func:`resolve_tool_use`'s job."""
    if not isinstance(call, dict):
        raise RowError(f"{where} must be an object, got {type(call).__name__}", field=where, kind="invalid_tool_call",
                       hint='write {"id": ..., "type": "function", "function": {"name": ..., "arguments": "{...}"}}')
    if call.get("type", "function") != "function":
        raise RowError(f"{where}.type is {call['type']!r}; only function calls are supported", field=f"{where}.type", kind="invalid_tool_call",
                       hint='set "type": "function"')
    cid = call.get("id", call_id)
    if not isinstance(cid, str) or not cid:
        raise RowError(f"{where}.id must be a non-empty string, got {cid!r}", field=f"{where}.id", kind="invalid_tool_call",
                       hint="give each call an id that its tool result names in tool_call_id")
    fn = call.get(fn_key) if fn_key else call
    fpath = f"{where}.{fn_key}" if fn_key else where
    if not isinstance(fn, dict):
        raise RowError(f"{fpath} must be an object with name and arguments", field=fpath, kind="invalid_tool_call",
                       hint='write {"name": ..., "arguments": "{...}"}')
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise RowError(f"{fpath}.name must be the called function's name, got {name!r}", field=f"{fpath}.name", kind="invalid_tool_call",
                       hint="name one of the declared tools")
    args = fn.get("arguments")
    if isinstance(args, dict):
        args = json.dumps(args, ensure_ascii=False)
    if not isinstance(args, str):
        raise RowError(f"{fpath}.arguments must be JSON text of an object, got {type(args).__name__}", field=f"{fpath}.arguments",
                       kind="invalid_arguments", hint='write the arguments as a JSON string, e.g. "{\\"city\\": \\"Paris\\"}"')
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_arguments(call: dict[str, Any], fpath: str, declared: dict[str, dict[str, Any]]) -> None:
    name = call["function"]["name"]
    if name not in declared:
        have = ", ".join(sorted(declared)) if declared else "none: the row has no 'tools'"
        raise RowError(f"{fpath}.name calls {name!r}, which is not declared in tools (declared: {have})", field=f"{fpath}.name",
                       kind="unknown_function", hint="declare the function in the row's tools, or fix the name")
    apath = f"{fpath}.arguments"
    try:
        args = strict_json.loads(call["function"]["arguments"])
    except json.JSONDecodeError as e:
        raise RowError(f"{apath} of {name!r} is not valid JSON: {e.msg} (char {e.pos})", field=apath, kind="invalid_arguments",
                       hint="write the arguments as JSON text of an object") from None
    except strict_json.UnusableJson as e:
        raise RowError(f"{apath} of {name!r}: {e.reason}", field=apath, kind="invalid_arguments", hint=e.hint) from None
    if not isinstance(args, dict):
        raise RowError(f"{apath} of {name!r} must be a JSON object, got {type(args).__name__}", field=apath, kind="invalid_arguments",
                       hint='wrap them in an object: {"name": value, ...}')
    params = declared[name].get("parameters")
    if params is None:
        return
    from jsonschema.exceptions import best_match

    err = best_match(_validator(_schema_key(params)).iter_errors(args))
    if err is not None:
        raise RowError(f"{apath} do not match the parameters of {name!r}: {_short(err.message)} (at {err.json_path})", field=apath,
                       kind="arguments_schema", hint=f"fix the arguments to fit the parameters schema of tools' {name!r}")


def _answer(msg: dict[str, Any], src: Source, pending: dict[str, tuple[str, str]], answered: dict[str, str]) -> None:
    """Pair one tool result with a pending call of the turn before it; fill in its tool_call_id and name."""
    cid = msg.get("tool_call_id")
    if cid is None:  # no id: the result answers the next call (of its function, when it names one)
        cid = next((c for c, (_, n) in pending.items() if msg.get("name") in (None, n)), None)
        if cid is None:
            what = f"call to {msg['name']!r}" if msg.get("name") else "call"
            raise RowError(f"{src.path} is a tool result, but the turn before it made no {what} still waiting for its result",
                           field=src.path, kind="orphan_tool_result",
                           hint="remove the result, or add the call it answers to the assistant turn before it")
    if cid not in pending:
        if cid in answered:
            reason, kind = f"{src.path} answers call {cid!r} a second time (already answered by {answered[cid]})", "duplicate_tool_result"
        else:
            reason, kind = f"{src.path} answers call {cid!r}, but no assistant turn made a call with that id", "orphan_tool_result"
        raise RowError(reason, field=f"{src.path}.tool_call_id", kind=kind,
                       hint="put each tool result right after the assistant turn that made the call, once, with that call's id")
    where, name = pending.pop(cid)
    if msg.get("name") not in (None, name):
        raise RowError(f"{src.path} names function {msg['name']!r}, but call {cid!r} ({where}) is to {name!r}", field=f"{src.path}.name",
                       kind="wrong_tool_name", hint="fix the name or the tool_call_id")
    msg.pop("tool_call_id", None)
    msg.pop("name", None)
    msg["tool_call_id"], msg["name"] = cid, name  # in this order, whatever the input's
    answered[cid] = src.path


def resolve_tool_use(messages: list[dict[str, Any]], sources: list[Source], tools: list[dict[str, Any]],
                     parallel_tool_calls: bool | None = None) -> None:
    """Check the calls and results of a conversation (see the module); fills in the results' ids and names."""
    declared = {t["function"]["name"]: t["function"] for t in tools}
    pending: dict[str, tuple[str, str]] = {}  # calls of the last calling turn still waiting: id -> (where, name)
    answered: dict[str, str] = {}
    made: dict[str, str] = {}
    for j, (m, src) in enumerate(zip(messages, sources, strict=True)):
        if m["role"] == "tool":
            _answer(m, src, pending, answered)
            continue
        if pending:
            cid, (where, name) = next(iter(pending.items()))
            raise RowError(f"{where} (call {cid!r} to {name!r}) gets no tool result before {src.path}", field=where, kind="unanswered_call",
                           hint="add a tool turn with its result right after the calling turn, or drop the call")
        calls = m.get("tool_calls") or []
        if parallel_tool_calls is False and len(calls) > 1:
            raise RowError(f"{src.path} makes {len(calls)} calls in one turn, but parallel_tool_calls is false", field=src.path,
                           kind="parallel_calls", hint="make one call per turn, or set parallel_tool_calls: true")
        for call, cpath in zip(calls, src.calls, strict=True):
            if call["id"] in made:
                raise RowError(f"{cpath}.id {call['id']!r} is used twice (also {made[call['id']]})", field=f"{cpath}.id",
                               kind="duplicate_call_id", hint="give each call of a conversation its own id")
            _check_arguments(call, cpath + src.fn, declared)
            made[call["id"]] = cpath
            pending[call["id"]] = (cpath, call["function"]["name"])
        if j == len(messages) - 1:
            pending.clear()  # the example ends with the calls to learn: nothing answers them
    if pending:
        cid, (where, name) = next(iter(pending.items()))
        raise RowError(f"{where} (call {cid!r} to {name!r}) gets no tool result before the conversation ends", field=where,
                       kind="unanswered_call", hint="add its result and the assistant's answer, or end the example with the calling turn")
