"""Turn input rows of every supported format into canonical records (see :mod:`tunesmith.data.records`).

Formats (auto-detected per row from its keys, or fixed per file):

- ``alpaca``: ``instruction``, optional ``input``, ``output``, optional ``system``
- ``openai``: ``{"messages": [{"role", "content", "weight"?}]}`` (OpenAI fine-tuning chat JSONL), with tool
  calling: ``tools`` (or legacy ``functions``), assistant ``tool_calls`` (or legacy ``function_call``),
  ``role: tool`` results (or legacy ``role: function``), ``parallel_tool_calls``
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system"|"function_call"|"observation", "value"}], "tools"?}``
- ``completion``: ``prompt`` / ``completion`` pairs (become one user and one assistant turn)
- ``text``: raw ``text`` for domain adaptation (becomes ``{"id", "text"}``)

Every problem raises :class:`RowError` naming the field, what is wrong and what to do.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.data import strict_json
from tunesmith.data.records import Record
from tunesmith.data.row_error import RowError
from tunesmith.data.tool_use import Source, read_call, read_tools, resolve_tool_use

__all__ = ["RowError", "apply_columns", "check_messages", "detect_format", "row_to_record"]

ROLES = ("system", "user", "assistant", "tool")
OPENAI_ROLES = (*ROLES, "function")  # "function": a legacy function result, read as a tool result
OPENAI_MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call"}
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant", "bing": "assistant", "bard": "assistant",
    "system": "system",
    "function_call": "assistant", "observation": "tool", "tool": "tool",
}


def _text_field(row: dict[str, Any], key: str, *, required: bool) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise RowError(f"field '{key}' is missing", field=key, kind="missing_field", hint=f"add a non-empty '{key}' (or map your key to it with data.columns)")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, got {type(value).__name__}", field=key, kind="wrong_type", hint=f"write '{key}' as a JSON string")
    if required and not value.strip():
        raise RowError(f"field '{key}' is empty or whitespace only", field=key, kind="empty_field", hint=f"fill in '{key}' or remove the row")
    return value


PREFERENCE_KEYS = ("preferred_output", "non_preferred_output")  # OpenAI's preference (DPO) fine-tuning rows


def is_preference_row(row: dict[str, Any]) -> bool:
    """An OpenAI preference (DPO) row: {input: {messages}, preferred_output: [...], non_preferred_output: [...]}."""
    return any(k in row for k in PREFERENCE_KEYS)


def detect_format(row: dict[str, Any]) -> str:
    if is_preference_row(row):
        raise RowError(
            "a preference (DPO) row (input / preferred_output / non_preferred_output): tunesmith does not train on "
            "preference pairs yet, and reading only one side would silently change what the model learns",
            kind="preference_pair",
            hint="train on supervised rows ({messages: [...]}), e.g. each input with its preferred_output as the answer, "
            "written by you on purpose; see docs/data.md#preference-dpo-files",
        )
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    if "prompt" in row or "completion" in row:
        return "completion"
    if "text" in row:
        return "text"
    raise RowError(
        f"cannot tell the format from keys {sorted(row)}",
        kind="unknown_format",
        hint="expected instruction/output (alpaca), messages (openai), conversations (sharegpt), prompt/completion or text; "
        "map differing keys with data.columns",
    )


def _maybe_json_list(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    if isinstance(value, str) and value.lstrip().startswith("["):  # CSV cells hold JSON text
        try:
            return strict_json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError(f"field '{key}' holds malformed JSON: {e.msg}", field=key, kind="malformed_json", hint="fix the JSON in this cell") from None
        except strict_json.UnusableJson as e:
            raise RowError(f"field '{key}': {e.reason}", field=key, kind=e.kind, hint=e.hint) from None
    return value


def _order_reason(where: str, expected: tuple[str, ...], role: str) -> str:
    if expected == ("tool", "assistant"):
        return f"{where}: expected another tool result or the assistant's answer to the tool results, got {role}"
    if expected == ("tool",):
        return f"{where}: expected the tool results of the assistant's calls, got {role}"
    article = "an" if expected[0] == "assistant" else "a"
    return f"{where}: expected {article} {expected[0]} turn, got {role} (turns must alternate user/assistant, starting with user)"


def _next_roles(message: dict[str, Any]) -> tuple[str, ...]:
    role = message["role"]
    if role == "user":
        return ("assistant",)
    if role == "assistant":
        return ("tool",) if message.get("tool_calls") else ("user",)
    return ("tool", "assistant")  # after a tool result: more results, or the assistant's answer


def check_messages(messages: list[dict[str, Any]], field: str = "messages", where: list[str] | None = None, role_key: str = "role") -> None:
    """Role order: optional system turn(s) first, then user/assistant alternating, ending with an assistant turn;
    an assistant turn that calls tools is followed by their results (role ``tool``) before the assistant speaks
    again. ``where``: each message's place in the input row, for the messages (default ``field[j]``)."""
    if not messages:
        raise RowError(f"'{field}' is empty", field=field, kind="empty_field", hint="add at least a user and an assistant turn")
    where = where or [f"{field}[{j}]" for j in range(len(messages))]
    i = 0
    while i < len(messages) and messages[i]["role"] == "system":
        i += 1
    expected: tuple[str, ...] = ("user",)
    for j in range(i, len(messages)):
        role = messages[j]["role"]
        if role == "system":
            raise RowError(f"{where[j]}: a system message after the conversation started", field=f"{where[j]}.{role_key}",
                           kind="role_order", hint="put system messages first")
        if role not in expected:
            raise RowError(_order_reason(where[j], expected, role), field=f"{where[j]}.{role_key}", kind="role_order",
                           hint="merge consecutive turns of one role, or fix the roles")
        expected = _next_roles(messages[j])
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("the conversation has no assistant turn: nothing to learn from", field=field, kind="no_assistant",
                       hint="add the answer as an assistant turn")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"the conversation ends with a {messages[-1]['role']} turn, not an assistant turn", field=where[-1],
                       kind="role_order", hint="end each example with the answer to learn")
    if all(m.get("weight", 1) == 0 for m in messages if m["role"] == "assistant"):
        raise RowError("every assistant turn has weight 0: nothing to train on", field=field, kind="no_assistant",
                       hint="set weight 1 on the turns to learn")


def _content(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{where} must be a string, got {type(value).__name__}", field=where, kind="wrong_type", hint="write it as a JSON string")
    if not value.strip():
        raise RowError(f"{where} is empty or whitespace only", field=where, kind="empty_field", hint="fill it in or drop the turn")
    return value


def _with_system(messages: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _with_system_sources(messages: list[dict[str, Any]], sources: list[Source], system_prompt: str | None):
    """:func:`_with_system`, keeping each message's source in step."""
    out = _with_system(messages, system_prompt)
    return out, [Source("data.system_prompt")] * (len(out) - len(messages)) + sources


def _weight(m: dict[str, Any], role: str, where: str) -> int | None:
    if "weight" not in m:
        return None
    w = m["weight"]
    if role != "assistant":
        raise RowError(f"{where}.weight is set on a {role} turn; only assistant turns have a weight", field=f"{where}.weight",
                       kind="wrong_type", hint="remove it")
    if isinstance(w, bool) or w not in (0, 1):
        raise RowError(f"{where}.weight must be 0 or 1, got {w!r}", field=f"{where}.weight", kind="wrong_type",
                       hint="0 = context only, 1 = train on this turn")
    return int(w)


def _conversation(messages: list[dict[str, Any]], sources: list[Source], tools: list[dict[str, Any]], *, field: str,
                  role_key: str = "role", parallel_tool_calls: bool | None = None) -> Record:
    """The record of a checked conversation: its tool use (calls, arguments, results) and its role order."""
    if tools or any(m["role"] == "tool" or "tool_calls" in m for m in messages):
        resolve_tool_use(messages, sources, tools, parallel_tool_calls)
    check_messages(messages, field, [s.path for s in sources], role_key)
    record: Record = {"messages": messages}
    if tools:
        record["tools"] = tools
    if parallel_tool_calls is not None:
        record["parallel_tool_calls"] = parallel_tool_calls
    return record


def alpaca_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    instruction = _text_field(row, "instruction", required=True)
    output = _text_field(row, "output", required=True)
    inp = _text_field(row, "input", required=False)
    system = _text_field(row, "system", required=False)
    system = system if system and system.strip() else system_prompt
    user = instruction if not inp or not inp.strip() else f"{instruction}\n\n{inp}"
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _row_tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's declared tools: ``tools`` or legacy ``functions`` (a JSON list in a CSV cell too)."""
    keys = [k for k in ("tools", "functions") if row.get(k) is not None]
    if len(keys) == 2:
        raise RowError("the row has both 'tools' and legacy 'functions'", field="functions", kind="invalid_tools",
                       hint="declare the functions once, in 'tools'")
    return read_tools(_maybe_json_list(row, keys[0]), keys[0]) if keys else []


def _openai_assistant(m: dict[str, Any], j: int, where: str) -> tuple[dict[str, Any], Source]:
    """An assistant turn: its text, and its calls (``tool_calls``, or a legacy ``function_call``)."""
    if "tool_calls" in m and "function_call" in m:
        raise RowError(f"{where} has both tool_calls and legacy function_call", field=f"{where}.function_call", kind="invalid_tool_call",
                       hint="write the calls once, in tool_calls")
    calls, paths, fn = [], [], ""
    if m.get("tool_calls") is not None:
        raw = m["tool_calls"]
        if not isinstance(raw, list):
            raise RowError(f"{where}.tool_calls must be a list, got {type(raw).__name__}", field=f"{where}.tool_calls", kind="wrong_type",
                           hint='write "tool_calls": [{"id": ..., "type": "function", "function": {...}}]')
        paths = [f"{where}.tool_calls[{k}]" for k in range(len(raw))]
        calls = [read_call(c, p, f"call_{j}_{k}", fn_key="function") for k, (c, p) in enumerate(zip(raw, paths, strict=True))]
        fn = ".function"
    elif m.get("function_call") is not None:
        paths = [f"{where}.function_call"]
        calls = [read_call(m["function_call"], paths[0], f"call_{j}", fn_key=None)]
    content = m.get("content")
    if calls and content is None:
        content = ""  # a turn that only calls tools
    elif calls and not isinstance(content, str):
        _content(content, f"{where}.content")  # raises: wrong type
    elif not calls:
        content = _content(content, f"{where}.content")
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    if (w := _weight(m, "assistant", where)) is not None:
        msg["weight"] = w
    return msg, Source(where, paths, fn)


def _openai_tool_result(m: dict[str, Any], role: str, where: str) -> dict[str, Any]:
    """A ``role: tool`` result (or a legacy ``role: function`` one, which names its function instead of a call id)."""
    content = m.get("content")
    if not isinstance(content, str):
        raise RowError(f"{where}.content must be a string (the tool's result as text), got {type(content).__name__}",
                       field=f"{where}.content", kind="wrong_type", hint="write the result as a JSON string (JSON results as text)")
    msg: dict[str, Any] = {"role": "tool", "content": content}
    for key in ("tool_call_id", "name"):
        if m.get(key) is not None:
            if not isinstance(m[key], str) or not m[key]:
                raise RowError(f"{where}.{key} must be a non-empty string, got {m[key]!r}", field=f"{where}.{key}", kind="wrong_type",
                               hint="tool_call_id: the id of the call this answers; name: the called function")
            msg[key] = m[key]
    if role == "function" and "name" not in msg:
        raise RowError(f"{where} is a legacy function result without a name", field=f"{where}.name", kind="missing_field",
                       hint="name the function whose result this is")
    _weight(m, "tool", where)  # raises if set
    return msg


def _openai_message(m: Any, j: int) -> tuple[dict[str, Any], Source]:
    where = f"messages[{j}]"
    if not isinstance(m, dict):
        raise RowError(f"{where} must be an object, got {type(m).__name__}", field=where, kind="wrong_type", hint='use {"role": ..., "content": ...}')
    role = m.get("role")
    if role not in OPENAI_ROLES:
        raise RowError(f"{where}.role is {role!r}; allowed: system, user, assistant, tool", field=f"{where}.role", kind="unknown_role",
                       hint="rewrite other turns as user or assistant text, or drop them")
    unknown = set(m) - OPENAI_MESSAGE_KEYS
    if unknown:
        raise RowError(f"{where} has unsupported keys {sorted(unknown)}", field=where, kind="wrong_type",
                       hint="keep role, content and weight (and tool_calls / tool_call_id / name for tool calling)")
    owner = {"tool_calls": "assistant", "function_call": "assistant", "tool_call_id": "tool"}
    misplaced = [k for k, r in owner.items() if k in m and role != r]
    if misplaced:
        raise RowError(f"{where}.{misplaced[0]} is set on a {role} turn", field=f"{where}.{misplaced[0]}", kind="wrong_type",
                       hint="assistant turns make calls (tool_calls); tool turns answer them (tool_call_id)")
    if role == "assistant":
        return _openai_assistant(m, j, where)
    if role in ("tool", "function"):
        return _openai_tool_result(m, role, where), Source(where)
    msg: dict[str, Any] = {"role": role, "content": _content(m.get("content"), f"{where}.content")}
    _weight(m, role, where)  # raises: only assistant turns have a weight
    return msg, Source(where)


def openai_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    raw = _maybe_json_list(row, "messages")
    if not isinstance(raw, list):
        raise RowError(f"field 'messages' must be a list, got {type(raw).__name__}", field="messages", kind="wrong_type",
                       hint='write "messages": [{"role": "user", "content": "..."}, ...]')
    parallel = row.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise RowError(f"field 'parallel_tool_calls' must be true or false, got {parallel!r}", field="parallel_tool_calls",
                       kind="wrong_type", hint="write true or false")
    tools = _row_tools(row)
    pairs = [_openai_message(m, j) for j, m in enumerate(raw)]
    messages, sources = _with_system_sources([p[0] for p in pairs], [p[1] for p in pairs], system_prompt)
    return _conversation(messages, sources, tools, field="messages", parallel_tool_calls=parallel)


def _sharegpt_calls(value: Any, j: int, where: str) -> tuple[dict[str, Any], Source]:
    """A ShareGPT ``function_call`` turn: its value is JSON text of one call ``{"name", "arguments"}`` or a list of them."""
    vpath = f"{where}.value"
    hint = 'write the value as JSON text: {"name": ..., "arguments": {...}} (or a list of them)'
    if not isinstance(value, str):
        raise RowError(f"{vpath} must be a string, got {type(value).__name__}", field=vpath, kind="wrong_type", hint=hint)
    try:
        parsed = strict_json.loads(value)
    except json.JSONDecodeError as e:
        raise RowError(f"{vpath} (a function_call turn) is not valid JSON: {e.msg} (char {e.pos})", field=vpath, kind="invalid_tool_call",
                       hint=hint) from None
    except strict_json.UnusableJson as e:
        raise RowError(f"{vpath}: {e.reason}", field=vpath, kind=e.kind, hint=e.hint) from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise RowError(f"{vpath} holds no call", field=vpath, kind="invalid_tool_call", hint=hint)
    paths = [f"{vpath}[{k}]" for k in range(len(items))] if isinstance(parsed, list) else [vpath]
    calls = [read_call(c, p, f"call_{j}_{k}", fn_key=None) for k, (c, p) in enumerate(zip(items, paths, strict=True))]
    return {"role": "assistant", "content": "", "tool_calls": calls}, Source(where, paths)


def _sharegpt_message(m: Any, j: int) -> tuple[dict[str, Any], Source]:
    where = f"conversations[{j}]"
    if not isinstance(m, dict):
        raise RowError(f"{where} must be an object, got {type(m).__name__}", field=where, kind="wrong_type", hint='use {"from": ..., "value": ...}')
    who = m.get("from")
    role = SHAREGPT_ROLES.get(who) if isinstance(who, str) else None
    if role is None:
        raise RowError(f"{where}.from is {who!r}; allowed: human, gpt, system, function_call, observation", field=f"{where}.from",
                       kind="unknown_role", hint="use human/gpt/system (function_call/observation for tool calling)")
    if who == "function_call":
        return _sharegpt_calls(m.get("value"), j, where)
    if role == "tool":  # a tool's result may be empty text
        value = m.get("value")
        if not isinstance(value, str):
            raise RowError(f"{where}.value must be a string, got {type(value).__name__}", field=f"{where}.value", kind="wrong_type",
                           hint="write the tool's result as a JSON string")
        return {"role": "tool", "content": value}, Source(where)
    return {"role": role, "content": _content(m.get("value"), f"{where}.value")}, Source(where)


def sharegpt_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    raw = _maybe_json_list(row, "conversations")
    if not isinstance(raw, list):
        raise RowError(f"field 'conversations' must be a list, got {type(raw).__name__}", field="conversations", kind="wrong_type",
                       hint='write "conversations": [{"from": "human", "value": "..."}, ...]')
    messages: list[dict[str, Any]] = []
    sources: list[Source] = []
    sys_top = _text_field(row, "system", required=False)
    if sys_top and sys_top.strip():
        messages.append({"role": "system", "content": sys_top})
        sources.append(Source("system"))
    tools = read_tools(_maybe_json_list(row, "tools"), "tools") if row.get("tools") is not None else []
    for j, m in enumerate(raw):
        msg, src = _sharegpt_message(m, j)
        messages.append(msg)
        sources.append(src)
    messages, sources = _with_system_sources(messages, sources, system_prompt)
    return _conversation(messages, sources, tools, field="conversations", role_key="from")


def completion_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    prompt = _text_field(row, "prompt", required=True)
    completion = _text_field(row, "completion", required=True)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return {"messages": _with_system(messages, system_prompt)}


def text_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    return {"text": _text_field(row, "text", required=True)}


READERS = {
    "alpaca": alpaca_to_record,
    "openai": openai_to_record,
    "sharegpt": sharegpt_to_record,
    "completion": completion_to_record,
    "text": text_to_record,
}


def apply_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename ``{canonical: yours}`` keys; a mapped key missing from the row is simply absent."""
    if not columns:
        return row
    out = dict(row)
    for canonical, yours in columns.items():
        if yours in out:
            out[canonical] = out.pop(yours)
    return out


def row_to_record(row: dict[str, Any], fmt: str, *, system_prompt: str | None = None) -> tuple[Record, str]:
    fmt = detect_format(row) if fmt in ("auto", "mixed") or is_preference_row(row) else fmt
    return READERS[fmt](row, system_prompt=system_prompt), fmt
