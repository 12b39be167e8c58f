"""Turn input rows of every supported format into canonical records (see :mod:`tunesmith.data.records`).

Formats (auto-detected per row from its keys, or fixed per file):

- ``alpaca``: ``instruction``, optional ``input``, ``output``, optional ``system``
- ``openai``: ``{"messages": [{"role", "content", "weight"?}]}`` (OpenAI fine-tuning chat JSONL)
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}``
- ``completion``: ``prompt`` / ``completion`` pairs (become one user and one assistant turn)
- ``text``: raw ``text`` for domain adaptation (becomes ``{"id", "text"}``)

Every problem raises :class:`RowError` naming the field, what is wrong and what to do.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.data import strict_json
from tunesmith.data.records import Record

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant", "bing": "assistant", "bard": "assistant",
    "system": "system",
}


class RowError(ValueError):
    """A row that cannot become a record."""

    def __init__(self, reason: str, *, field: str | None = None, kind: str = "invalid_row", hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.kind = kind
        self.hint = hint


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


def detect_format(row: dict[str, Any]) -> str:
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


def check_messages(messages: list[dict[str, Any]], field: str = "messages") -> None:
    """Role order: optional system turn(s) first, then user/assistant alternating, ending with an assistant turn."""
    if not messages:
        raise RowError(f"'{field}' is empty", field=field, kind="empty_field", hint="add at least a user and an assistant turn")
    i = 0
    while i < len(messages) and messages[i]["role"] == "system":
        i += 1
    expected = "user"
    for j in range(i, len(messages)):
        role = messages[j]["role"]
        if role == "system":
            raise RowError(f"{field}[{j}]: a system message after the conversation started", field=f"{field}[{j}].role",
                           kind="role_order", hint="put system messages first")
        if role != expected:
            raise RowError(f"{field}[{j}]: expected a {expected} turn, got {role} (turns must alternate user/assistant, starting with user)",
                           field=f"{field}[{j}].role", kind="role_order", hint="merge consecutive turns of one role, or fix the roles")
        expected = "assistant" if role == "user" else "user"
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("the conversation has no assistant turn: nothing to learn from", field=field, kind="no_assistant",
                       hint="add the answer as an assistant turn")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"the conversation ends with a {messages[-1]['role']} turn, not an assistant turn", field=f"{field}[{len(messages) - 1}]",
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


def openai_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    raw = _maybe_json_list(row, "messages")
    if not isinstance(raw, list):
        raise RowError(f"field 'messages' must be a list, got {type(raw).__name__}", field="messages", kind="wrong_type",
                       hint='write "messages": [{"role": "user", "content": "..."}, ...]')
    messages = []
    for j, m in enumerate(raw):
        where = f"messages[{j}]"
        if not isinstance(m, dict):
            raise RowError(f"{where} must be an object, got {type(m).__name__}", field=where, kind="wrong_type", hint='use {"role": ..., "content": ...}')
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role is {role!r}; allowed: system, user, assistant", field=f"{where}.role", kind="unknown_role",
                           hint="tool/function turns are not supported: drop them or rewrite them as text")
        msg: dict[str, Any] = {"role": role, "content": _content(m.get("content"), f"{where}.content")}
        if "weight" in m:
            w = m["weight"]
            if role != "assistant":
                raise RowError(f"{where}.weight is set on a {role} turn; only assistant turns have a weight", field=f"{where}.weight",
                               kind="wrong_type", hint="remove it")
            if isinstance(w, bool) or w not in (0, 1):
                raise RowError(f"{where}.weight must be 0 or 1, got {w!r}", field=f"{where}.weight", kind="wrong_type",
                               hint="0 = context only, 1 = train on this turn")
            msg["weight"] = int(w)
        unknown = set(m) - {"role", "content", "weight", "name"}
        if unknown:
            raise RowError(f"{where} has unsupported keys {sorted(unknown)}", field=where, kind="wrong_type",
                           hint="tool calls are not supported; keep role, content and weight")
        messages.append(msg)
    messages = _with_system(messages, system_prompt)
    check_messages(messages)
    return {"messages": messages}


def sharegpt_to_record(row: dict[str, Any], *, system_prompt: str | None = None) -> Record:
    raw = _maybe_json_list(row, "conversations")
    if not isinstance(raw, list):
        raise RowError(f"field 'conversations' must be a list, got {type(raw).__name__}", field="conversations", kind="wrong_type",
                       hint='write "conversations": [{"from": "human", "value": "..."}, ...]')
    messages = []
    sys_top = _text_field(row, "system", required=False)
    if sys_top and sys_top.strip():
        messages.append({"role": "system", "content": sys_top})
    for j, m in enumerate(raw):
        where = f"conversations[{j}]"
        if not isinstance(m, dict):
            raise RowError(f"{where} must be an object, got {type(m).__name__}", field=where, kind="wrong_type", hint='use {"from": ..., "value": ...}')
        who = m.get("from")
        role = SHAREGPT_ROLES.get(who) if isinstance(who, str) else None
        if role is None:
            raise RowError(f"{where}.from is {who!r}; allowed: human, gpt, system", field=f"{where}.from", kind="unknown_role",
                           hint="use human/gpt/system")
        messages.append({"role": role, "content": _content(m.get("value"), f"{where}.value")})
    messages = _with_system(messages, system_prompt)
    check_messages(messages, "conversations")
    return {"messages": messages}


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
    fmt = detect_format(row) if fmt in ("auto", "mixed") else fmt
    return READERS[fmt](row, system_prompt=system_prompt), fmt
