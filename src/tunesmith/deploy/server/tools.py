"""Tool calling on /v1/chat/completions: request messages and tools as a conversation, answers as tool calls.

``chat_conversation`` turns the OpenAI messages (assistant ``tool_calls``, ``role: tool`` answers) and ``tools``
into the canonical conversation and tool list that :mod:`tunesmith.chat_template` renders (natively when the
model's template supports tools, otherwise in the ``<tool_call>`` format of :mod:`tunesmith.tool_calls`),
refusing what cannot be a conversation: a tool message that answers no call of the assistant turn before it, a
call in the history to a function ``tools`` does not declare, arguments that are not a JSON object.

``answer_parts`` reads the calls back from a generated text (``tool_calls.parse_tool_calls``); ``ToolCallStream``
does the same for a stream: content deltas never carry ``<tool_call>`` markup (text that could be the start
of a tag is held back until it is decided), and each call is sent once its block has closed, in OpenAI's
delta shape (a first chunk with the id and name, then the arguments in pieces).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from tunesmith.deploy.server.protocol import APIError, ChatCompletionRequest, NamedToolChoice
from tunesmith.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCall, parse_tool_calls

ARGUMENT_PIECE_CHARS = 32  # streamed arguments are sent in pieces of this many characters


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def declared_functions(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's functions as OpenAI ``function`` objects (without nulls), in order; 400 on a duplicate name."""
    out: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(body.tools or ()):
        fn = tool.function.model_dump(exclude_none=True)
        if fn["name"] in out:
            raise APIError(400, f"tools[{i}] declares the function {fn['name']!r} a second time",
                           param=f"tools[{i}].function.name")
        out[fn["name"]] = fn
    return list(out.values())


def tool_choice_mode(body: ChatCompletionRequest, functions: list[dict[str, Any]]) -> str:
    """"none", "auto", "required" or "named" (400 when it asks for a call that cannot be made)."""
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in {f["name"] for f in functions}:
            raise APIError(400, f"tool_choice names the function {choice.function.name!r}, which 'tools' does not "
                           "declare", param="tool_choice")
        return "named"
    if choice == "required" and not functions:
        raise APIError(400, "tool_choice 'required' needs at least one function in 'tools'", param="tool_choice")
    return choice or ("auto" if functions else "none")


def _call_arguments(raw: str, where: str) -> dict[str, Any]:
    try:
        args = json.loads(raw)
    except ValueError as e:
        raise APIError(400, f"{where}: the arguments are not valid JSON ({e})", param=where) from None
    if not isinstance(args, dict):
        raise APIError(400, f"{where}: the arguments must be a JSON object, got {type(args).__name__}", param=where)
    return args


def _assistant_calls(msg, i: int, declared: set[str]) -> list[dict[str, Any]]:
    calls = []
    for j, call in enumerate(msg.tool_calls or ()):
        where = f"messages[{i}].tool_calls[{j}]"
        if call.function.name not in declared:
            raise APIError(400, f"{where} calls the function {call.function.name!r}, which 'tools' does not declare",
                           param=f"{where}.function.name")
        _call_arguments(call.function.arguments, f"{where}.function.arguments")
        calls.append({"id": call.id, "type": "function",
                      "function": {"name": call.function.name, "arguments": call.function.arguments}})
    return calls


def chat_conversation(body: ChatCompletionRequest, functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The canonical conversation of ``body.messages`` (``developer`` becomes ``system``), checked as above."""
    declared = {f["name"] for f in functions}
    out: list[dict[str, Any]] = []
    open_calls: dict[str, str] = {}  # id -> function name of the calls the last assistant turn made, not yet answered
    for i, msg in enumerate(body.messages):
        if msg.tool_calls is not None and msg.role != "assistant":
            raise APIError(400, f"messages[{i}]: only assistant messages carry tool_calls",
                           param=f"messages[{i}].tool_calls")
        if (msg.tool_call_id is not None) != (msg.role == "tool"):
            raise APIError(400, f"messages[{i}]: a tool message needs tool_call_id, and only a tool message has one",
                           param=f"messages[{i}].tool_call_id")
        if msg.role == "tool":
            if msg.tool_call_id not in open_calls:
                raise APIError(400, f"messages[{i}] answers the tool call {msg.tool_call_id!r}, which is not an "
                               "unanswered call of the assistant message before it",
                               param=f"messages[{i}].tool_call_id")
            name = open_calls.pop(msg.tool_call_id)
            out.append({"role": "tool", "tool_call_id": msg.tool_call_id, "name": name, "content": msg.text()})
            continue
        open_calls = {}
        turn: dict[str, Any] = {"role": "system" if msg.role == "developer" else msg.role, "content": msg.text()}
        if msg.tool_calls:
            turn["tool_calls"] = _assistant_calls(msg, i, declared)
            open_calls = {c["id"]: c["function"]["name"] for c in turn["tool_calls"]}
        out.append(turn)
    return out


def openai_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [c.to_openai(new_call_id()) for c in calls]


def answer_parts(text: str, parse_calls: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """A generated text as the message's content (None when there are calls and no other text) and its calls."""
    if not parse_calls:
        return text, []
    content, calls = parse_tool_calls(text)  # (content stripped, with or without calls, as a stream sends it)
    return (content or None) if calls else content, openai_calls(calls)


def _partial_open_at(text: str) -> int:
    """Where a suffix of ``text`` that is a proper prefix of ``<tool_call>`` starts (len(text) when none)."""
    for k in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-k:]):
            return len(text) - k
    return len(text)


@dataclass
class ToolCallStream:
    """Turns a stream's text deltas into OpenAI chat deltas (``{"content"}`` or ``{"tool_calls"}`` dicts).

    The content sent is the same as ``answer_parts`` gives for the whole text: calls taken out, the rest with
    leading and trailing whitespace stripped (whitespace is held until more text follows it).
    """

    text: str = ""
    pos: int = 0  # text before this is decided (sent, or held as whitespace in ``pending_space``)
    calls: int = 0
    sent_content: bool = False
    pending_space: str = ""
    deltas: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        self._advance(final=False)
        out, self.deltas = self.deltas, []
        return out

    def close(self) -> list[dict[str, Any]]:
        """The deltas of what is left once generation ended (an unfinished block stays text, as in answer_parts)."""
        self._advance(final=True)
        rest = self.text[self.pos:]
        content, calls = parse_tool_calls(rest)  # calls here: a malformed tag before a well-formed block
        for call in calls:
            self._call(call)
        self._content(content if calls else rest)
        out, self.deltas = self.deltas, []
        return out

    def _advance(self, *, final: bool) -> None:
        while True:
            start = self.text.find(TOOL_CALL_OPEN, self.pos)
            if start < 0:
                if not final:  # (at the end, close() sends the rest)
                    end = self.pos + _partial_open_at(self.text[self.pos:])
                    self._content(self.text[self.pos:end])
                    self.pos = end
                return
            self._content(self.text[self.pos:start])
            self.pos = start
            block = self._closed_block(start)
            if block is None:
                return  # undecided: wait for more text (or for close())
            call, end = block
            self._call(call)
            self.pos = end

    def _closed_block(self, start: int) -> tuple[ToolCall, int] | None:
        """The call whose block starts at ``start``, once a ``</tool_call>`` closes it as a call."""
        at = start
        while (close := self.text.find(TOOL_CALL_CLOSE, at)) >= 0:
            end = close + len(TOOL_CALL_CLOSE)
            content, calls = parse_tool_calls(self.text[start:end])
            if len(calls) == 1 and not content:
                return calls[0], end
            at = end
        return None

    def _content(self, piece: str) -> None:
        if not piece:
            return
        if not self.sent_content:
            piece = piece.lstrip()
        body = piece.rstrip()
        if body:
            self.deltas.append({"content": self.pending_space + body})
            self.sent_content = True
            self.pending_space = piece[len(body):]
        elif self.sent_content:
            self.pending_space += piece

    def _call(self, call: ToolCall) -> None:
        index, self.calls = self.calls, self.calls + 1
        head = call.to_openai(new_call_id())
        arguments = head["function"]["arguments"]
        self.deltas.append({"tool_calls": [{"index": index, "id": head["id"], "type": "function",
                                            "function": {"name": call.name, "arguments": ""}}]})
        for k in range(0, len(arguments), ARGUMENT_PIECE_CHARS):
            self.deltas.append({"tool_calls": [{"index": index,
                                                "function": {"arguments": arguments[k:k + ARGUMENT_PIECE_CHARS]}}]})
