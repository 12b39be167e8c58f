"""The tool-call text format: how tools, calls and tool results are written as plain chat text, and read back.

A model whose chat template supports tools (it reads ``tools`` and ``tool_calls``, as Qwen2.5's does) is
given tools and calls natively by :mod:`tunesmith.chat_template`. For every other model (the embedded
SmolLM2 among them) a conversation with tools is first rewritten into plain ``system`` / ``user`` /
``assistant`` turns in the Hermes / Qwen2.5 format below, and then rendered with the model's own
template. The format (spelled out in docs/data.md):

- **tools**: appended to the system prompt (or, without one, as the system prompt) as :data:`TOOLS_HEADER`,
  one JSON tool definition per line between ``<tools>`` and ``</tools>``, and :data:`TOOLS_FOOTER`;
- **an assistant turn with calls**: its text (if any), then one block per call, joined by newlines::

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

- **tool results**: the results that follow one assistant turn become one user turn, one block each, in order::

      <tool_response>
      18°C, sunny
      </tool_response>

:func:`parse_tool_calls` reads the calls back from generated text (and from the native output of
Hermes/Qwen-style models, which is the same format). Torch-free, standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


@dataclass(frozen=True)
class ToolCall:
    """One function call: the function's name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any]

    @classmethod
    def from_openai(cls, call: dict[str, Any]) -> ToolCall:
        """A call of the OpenAI chat format (``{"id", "type", "function": {"name", "arguments": JSON text}}``)."""
        fn = call["function"]
        args = fn["arguments"]
        return cls(fn["name"], json.loads(args) if isinstance(args, str) else args)

    def to_openai(self, call_id: str) -> dict[str, Any]:
        """This call in the OpenAI chat format, with ``arguments`` as JSON text."""
        return {"id": call_id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}

    def block(self) -> str:
        """This call as one ``<tool_call>`` block."""
        body = json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)
        return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def tools_system_text(tools: Sequence[dict[str, Any]]) -> str:
    """The tool definitions as they are shown in the system prompt."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return f"{TOOLS_HEADER}\n{lines}\n{TOOLS_FOOTER}"


def render_assistant_turn(content: str, calls: Sequence[ToolCall]) -> str:
    """An assistant turn's text: its content (if any) and then its calls, one block each, joined by newlines."""
    return "\n".join([content] * bool(content) + [c.block() for c in calls])


def render_tool_results(results: Sequence[str]) -> str:
    """The results answering one assistant turn, as the text of one user turn."""
    return "\n".join(f"{TOOL_RESPONSE_OPEN}\n{r}\n{TOOL_RESPONSE_CLOSE}" for r in results)


def turn_calls(message: dict[str, Any]) -> list[ToolCall]:
    return [ToolCall.from_openai(c) for c in message.get("tool_calls") or ()]


def fallback_messages(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None) -> list[dict[str, str]]:
    """A conversation with tools as plain system/user/assistant turns in this module's format.

    ``messages`` are canonical (``tunesmith.data.records``): assistant turns may carry ``tool_calls``,
    ``role: tool`` turns answer them. Consecutive tool turns become one user turn.
    """
    out: list[dict[str, str]] = []
    results: list[str] = []
    for m in messages:
        if m["role"] == "tool":
            results.append(m["content"])
            continue
        if results:
            out.append({"role": "user", "content": render_tool_results(results)})
            results = []
        content = render_assistant_turn(m["content"], turn_calls(m)) if m["role"] == "assistant" else m["content"]
        out.append({"role": m["role"], "content": content})
    if results:
        out.append({"role": "user", "content": render_tool_results(results)})
    if tools:
        block = tools_system_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _call_from(obj: Any) -> ToolCall | None:
    """A decoded ``<tool_call>`` body as a call, or None if it is not one (a name and an object of arguments)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))  # Llama 3.1-style writers say "parameters"
    if isinstance(args, str):  # arguments written as JSON text, as the OpenAI format does
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(obj["name"], args) if isinstance(args, dict) else None


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """The text without its tool calls (stripped), and the calls, in order.

    A ``<tool_call>`` block is a call when its body is one JSON object with a ``name`` and an object of
    ``arguments`` (JSON text of an object is accepted too). A block that is not (malformed JSON, no
    closing tag, e.g. a generation cut short) stays in the content as it was, so nothing is lost.
    The JSON is decoded, not matched by pattern, so an argument may itself contain ``</tool_call>``.
    """
    decoder = json.JSONDecoder()
    parts: list[str] = []
    calls: list[ToolCall] = []
    pos = 0
    while (start := text.find(TOOL_CALL_OPEN, pos)) >= 0:
        body = _skip_space(text, start + len(TOOL_CALL_OPEN))
        try:
            obj, end = decoder.raw_decode(text, body)
        except json.JSONDecodeError:
            obj, end = None, body
        close = _skip_space(text, end)
        call = _call_from(obj) if text.startswith(TOOL_CALL_CLOSE, close) else None
        if call is None:  # not a call: keep the tag as text and look further on
            parts.append(text[pos:body])
            pos = body
            continue
        parts.append(text[pos:start])
        calls.append(call)
        pos = close + len(TOOL_CALL_CLOSE)
    parts.append(text[pos:])
    return "".join(parts).strip(), calls
