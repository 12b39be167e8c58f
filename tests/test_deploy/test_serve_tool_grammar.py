"""The grammars behind tool_choice (tool_call_grammar.py), checked on text without a model, and the stream parser
that turns text deltas into content and tool-call deltas (deploy/server/tools.py)."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.constrained_decoding import GrammarCompiler
from tunesmith.deploy.server.tools import ToolCallStream, answer_parts
from tunesmith.tool_call_grammar import auto_tool_calls, calls_or_json, forced_tool_calls, no_tool_calls
from tunesmith.tool_calls import ToolCall

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                            "unit": {"enum": ["C", "F"]}}, "required": ["city", "unit"]}
FUNCTIONS = [{"name": "get_weather", "parameters": WEATHER}, {"name": "ping"}]
PARIS = ToolCall("get_weather", {"city": "Paris", "unit": "C"}).block()
PING = ToolCall("ping", {}).block()


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id])


@pytest.fixture(scope="module")
def complete(compiler, tokenizer):
    def check(constraint, text: str) -> bool:
        """Whether ``text`` is a whole answer the constraint allows (then the end token)."""
        matcher = compiler.compile(constraint).start().matcher
        return matcher.accept_string(text) and matcher.accept_token(tokenizer.eos_token_id)
    return check


def test_forced_calls_are_exactly_the_fallback_blocks(complete):
    forced = forced_tool_calls(FUNCTIONS)
    assert complete(forced, PARIS) and complete(forced, PING) and complete(forced, PARIS + "\n" + PING)
    assert not complete(forced, "Sure. " + PARIS)  # calls only
    assert not complete(forced, "")  # at least one
    assert not complete(forced, PARIS.replace('"unit": "C"', '"unit": "K"'))  # the schema's enum
    assert not complete(forced, PARIS.replace('"city": "Paris"', '"city": "Paris, France"'))  # maxLength
    assert not complete(forced, PARIS.replace('{"city"', '{ "city"'))  # compact JSON only
    assert not complete(forced, PARIS.replace("Paris", "Pa\\u0001ris".encode().decode("unicode_escape")))
    assert not complete(forced, ToolCall("undeclared", {}).block())
    assert not complete(forced_tool_calls(FUNCTIONS, parallel=False), PARIS + "\n" + PING)
    assert complete(forced_tool_calls(FUNCTIONS[1:], parallel=False), PING)


def test_auto_allows_text_and_well_formed_calls_only(complete):
    auto = auto_tool_calls(FUNCTIONS)
    assert complete(auto, "It is sunny.") and complete(auto, "Let me check.\n" + PARIS + "\n" + PING)
    assert not complete(auto, '<tool_call>\n{"name": "undeclared", "arguments": {}}\n</tool_call>')
    one = auto_tool_calls(FUNCTIONS, parallel=False)
    assert complete(one, "Checking.\n" + PARIS) and not complete(one, PARIS + " and more text")


def test_none_never_opens_a_call_and_calls_or_json_is_one_or_the_other(complete):
    assert complete(no_tool_calls(), "Plain text, < and > included.")
    assert not complete(no_tool_calls(), "Here: " + PING)
    either = calls_or_json(FUNCTIONS, {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert complete(either, PING) and complete(either, '{"n": 3}')
    assert not complete(either, '{"n": "3"}') and not complete(either, "text")


TEXTS = [
    "Just text  ",
    "  held <tool_ca",
    "First.\n" + PARIS + "\nThen " + PING + "\n",
    PARIS + "\n" + PING,
    ToolCall("f", {"a": "x</tool_call>y"}).block(),  # the closing tag inside an argument
    "cut off <tool_call>\n{\"name\": \"get_weather\", \"argu",
    "<tool_call> not json " + PING + " after",
]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_deltas_reassemble_to_the_whole_answer(text):
    want_content, want_calls = answer_parts(text, True)
    rng = random.Random(0)
    for _ in range(25):
        stream, deltas, i = ToolCallStream(), [], 0
        while i < len(text):
            k = rng.randint(1, 6)
            deltas += stream.feed(text[i:i + k])
            i += k
        deltas += stream.close()
        content = "".join(d.get("content", "") for d in deltas)
        calls: dict[int, dict] = {}
        for d in deltas:
            for part in d.get("tool_calls", ()):
                call = calls.setdefault(part["index"], {"name": "", "arguments": ""})
                if "id" in part:
                    assert part["id"].startswith("call_") and part["function"]["arguments"] == ""
                    call["name"] = part["function"]["name"]
                call["arguments"] += part["function"]["arguments"]
        assert (content or None if calls else content) == want_content
        assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
            (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in want_calls]
        if want_calls and "not json" not in text and "cut off" not in text:
            assert "<tool_call" not in content and "</tool_call>" not in content
