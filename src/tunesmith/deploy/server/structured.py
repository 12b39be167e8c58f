"""Structured outputs on /v1/chat/completions: the grammar a request's answer is held to, compiled and started.

``chat_constraint`` decides it from ``tool_choice``, ``parallel_tool_calls`` and ``response_format``:

==========================  ========================================================================
``tool_choice``             the answer
==========================  ========================================================================
``required``                one call or more (one with ``parallel_tool_calls: false``) to declared functions
named function              exactly one call to that function
``auto`` (tools given)      free text, in which any call is well-formed (declared name, arguments that follow
                            its schema); at most one, and nothing after it, with ``parallel_tool_calls: false``;
                            with a JSON ``response_format``: calls, or the JSON
``none`` (tools given)      text that never opens a ``<tool_call>`` (or the JSON of ``response_format``)
==========================  ========================================================================

``response_format`` ``json_object`` is any JSON object, ``json_schema`` JSON that follows the schema. Calls are
in the ``<tool_call>`` format of :mod:`tunesmith.tool_calls`: what the fallback rendering teaches and what a
Hermes/Qwen-style template writes. A model whose own template writes calls some other way cannot be held to its
format here, so those requests are refused (400) instead of answered in a format the model was never shown.

``ServerGrammars`` holds the server's one :class:`~tunesmith.constrained_decoding.GrammarCompiler` (built on
first use; compiled grammars cached per constraint) and gives each request its row grammar.
"""

from __future__ import annotations

import threading
from typing import Any

from tunesmith.chat_template import ChatTemplateError, render_conversation, supports_tools
from tunesmith.constrained_decoding import (
    ConstraintError,
    GrammarCompiler,
    OutputConstraint,
    RowGrammar,
    model_vocab_size,
)
from tunesmith.deploy.server.protocol import APIError, ChatCompletionRequest
from tunesmith.tool_call_grammar import auto_tool_calls, calls_or_json, forced_tool_calls, no_tool_calls
from tunesmith.tool_calls import ToolCall

_PROBE_CALL = ToolCall("probe_function", {"a": 1})


def writes_tool_call_blocks(tokenizer) -> bool:
    """Whether the model's calls are ``<tool_call>`` blocks: the fallback format, or a native template that
    writes an assistant call exactly as :meth:`ToolCall.block` does."""
    if not supports_tools(tokenizer):
        return True
    tools = [{"type": "function", "function": {"name": _PROBE_CALL.name, "parameters": {"type": "object"}}}]
    probe = [{"role": "user", "content": "x"},
             {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL.to_openai("c1")]}]
    try:
        return _PROBE_CALL.block() in render_conversation(tokenizer, probe, tools=tools)
    except ChatTemplateError:
        return False


def _json_format(body: ChatCompletionRequest) -> tuple[bool, dict[str, Any] | None]:
    """(JSON asked for, its schema or None for any object)."""
    rf = body.response_format
    if rf is None or rf.type == "text":
        return False, None
    return True, (rf.json_schema.schema_ if rf.json_schema is not None else None)


def chat_constraint(body: ChatCompletionRequest, functions: list[dict[str, Any]], mode: str, *,
                    call_blocks: bool) -> tuple[OutputConstraint | None, str]:
    """The constraint of a chat request's answer (None: free) and the parameter an error in it is about."""
    wants_json, schema = _json_format(body)
    parallel = body.parallel_tool_calls is not False
    if functions and mode != "none" and not call_blocks and (mode != "auto" or wants_json or not parallel):
        param = "tool_choice" if mode != "auto" else ("response_format" if wants_json else "parallel_tool_calls")
        raise APIError(400, "this model's chat template writes tool calls in its own format, and this server can only "
                       "hold answers to the <tool_call>{json}</tool_call> format; send tool_choice 'auto' (calls "
                       "are then read back only if the model writes that format), without response_format and "
                       "parallel_tool_calls: false", param=param)
    if mode == "required":
        return forced_tool_calls(functions, parallel=parallel), "tools"
    if mode == "named":
        named = [f for f in functions if f["name"] == body.tool_choice.function.name]
        return forced_tool_calls(named, parallel=False), "tools"
    if mode == "auto" and functions and call_blocks:
        if wants_json:
            return calls_or_json(functions, schema, parallel=parallel), "response_format"
        return auto_tool_calls(functions, parallel=parallel), "tools"
    if schema is not None:
        return OutputConstraint.json_schema(schema), "response_format"
    if wants_json:
        return OutputConstraint.json(object_only=True), "response_format"
    if mode == "none" and functions and call_blocks:
        return no_tool_calls(), "tool_choice"
    return None, ""


class ServerGrammars:
    """The grammar compiler for the served tokenizer and model (built once, on the first constrained request)."""

    def __init__(self, tokenizer, model, stop_token_ids):
        self.tokenizer, self.model, self.stop_token_ids = tokenizer, model, sorted(stop_token_ids)
        self._compiler: GrammarCompiler | None = None
        self._call_blocks: bool | None = None
        self._lock = threading.Lock()

    @property
    def call_blocks(self) -> bool:
        """:func:`writes_tool_call_blocks` of the served tokenizer (probed once)."""
        if self._call_blocks is None:
            self._call_blocks = writes_tool_call_blocks(self.tokenizer)
        return self._call_blocks

    def compiler(self) -> GrammarCompiler:
        with self._lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(self.tokenizer, vocab_size=model_vocab_size(self.model),
                                                 stop_token_ids=self.stop_token_ids)
            return self._compiler

    def start(self, constraint: OutputConstraint, param: str) -> RowGrammar:
        """A fresh row state of ``constraint`` (compiled once per distinct constraint); 400 naming ``param`` if
        it cannot be compiled. Blocking: call it off the event loop."""
        try:
            return self.compiler().compile(constraint).start()
        except ConstraintError as e:
            raise APIError(400, f"{param}: {e.message}", param=param) from None
