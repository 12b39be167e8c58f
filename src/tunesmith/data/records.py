"""The canonical example record every input format becomes.

A record is a plain JSON-able dict::

    {"id": "train.jsonl:12",                      # where it came from (file:line)
     "messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str, "weight": 0|1 (optional)}],
     "tools": [{"type": "function", "function": {"name", "description"?, "parameters"?}}],   # optional
     "parallel_tool_calls": bool,                 # optional, as given
     "label": str | None}                         # optional, for stratified splits and label stats

``weight`` follows OpenAI's fine-tuning format: an assistant turn with weight 0 is context, not a
training target. Without it, every assistant turn is trained on.

Tool calling follows the OpenAI chat format, whatever the input format was (legacy ``functions`` and
ShareGPT ``function_call`` / ``observation`` turns are converted to it):

- ``tools`` (record level): the declared functions; ``parameters`` is a JSON Schema.
- an assistant turn that calls tools has ``tool_calls``: ``[{"id": str, "type": "function",
  "function": {"name": str, "arguments": str}}]`` with ``arguments`` as JSON text of an object; its
  ``content`` is ``""`` when it says nothing besides the calls.
- a ``role: tool`` turn answers one call: ``{"role": "tool", "tool_call_id": str, "name": str, "content": str}``
  (``name``: the called function). The results follow the calling turn, before the next assistant turn.

The data stage guarantees that every call names a declared function with arguments valid against its
``parameters`` and that every call made before the last turn is answered exactly once.

Raw-text rows for domain adaptation (input format ``text``) become ``{"id": ..., "text": str}``
instead: no messages, trained on every token.

Records may carry extra keys the trainer ignores: ``source`` (``"general"`` for mixed-in general
instruction data) and ``truncated_tokens`` (how many prompt tokens ``train.truncation: truncate``
cut from the start of the first user turn).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tunesmith.tool_calls import render_assistant_turn, turn_calls

Record = dict[str, Any]


# The message fields a prompt keeps (``weight`` is a training matter).
PROMPT_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")


def prompt_messages(record: Record) -> list[dict[str, Any]]:
    """Every message before the last assistant turn: what a model is asked at evaluation time."""
    msgs = record["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return [{k: m[k] for k in PROMPT_FIELDS if k in m} for m in msgs[:last]]


def message_text(message: dict[str, Any]) -> str:
    """A turn as one string: its content and, for a turn that calls tools, its calls in the format of
    :mod:`tunesmith.tool_calls` (what a model trained without native tool support writes)."""
    if not message.get("tool_calls"):
        return message["content"]
    return render_assistant_turn(message["content"], turn_calls(message))


def reference_answer(record: Record) -> str:
    """The last assistant turn as text (:func:`message_text`): the answer a model is scored against."""
    return message_text(next(m for m in reversed(record["messages"]) if m["role"] == "assistant"))


def is_text_record(record: Record) -> bool:
    return "text" in record and "messages" not in record


def example_text(record: Record) -> str:
    """The whole example as one string (system turns left out: they are usually shared by all rows; so are
    the tool definitions). Calls and tool results are in it, so dedup and leakage checks see them."""
    if is_text_record(record):
        return record["text"]
    return "\n".join(f"{m['role']}: {message_text(m)}" for m in record["messages"] if m["role"] != "system")


def prompt_text(record: Record) -> str:
    """The prompt side: every non-system turn before the last assistant turn ('' for text records)."""
    if is_text_record(record):
        return ""
    return "\n".join(f"{m['role']}: {message_text(m)}" for m in prompt_messages(record) if m["role"] != "system")


def map_call_argument_strings(record: Record, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every string value inside the tool-call arguments of a record, in place (what PII
    redaction does to calls; keys and the JSON around the values stay as they are)."""

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return fn(v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    for m in record.get("messages", ()):
        for call in m.get("tool_calls") or ():
            args = json.loads(call["function"]["arguments"])
            new = walk(args)
            if new != args:
                call["function"]["arguments"] = json.dumps(new, ensure_ascii=False)
