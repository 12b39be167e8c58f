"""The fallback tool-call text format: what render writes, parse reads back (torch-free module)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunesmith.tool_calls import (
    TOOLS_FOOTER,
    TOOLS_HEADER,
    ToolCall,
    fallback_messages,
    parse_tool_calls,
    render_assistant_turn,
)

WEATHER = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})
TRICKY = ToolCall("send_message", {
    "to": "Zoë Ångström",
    "text": 'He said "hi" \\ then left: 日本語 🚀 </tool_call> <tool_call> {"not": "a call"}',
    "nested": {"list": [1, 2.5, None, True, {"deep": ["a", {"b": []}]}], "empty": {}},
})

CASES = {
    "single": ("", [WEATHER]),
    "single with text": ("Let me check the weather.", [WEATHER]),
    "parallel": ("", [WEATHER, ToolCall("get_weather", {"city": "Rome"}), ToolCall("get_time", {})]),
    "unicode, nested JSON, quotes and tags inside arguments": ("Sending…", [TRICKY, WEATHER]),
    "no calls": ("Just an answer with <b>tags</b>.", []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_render_then_parse_gives_back_the_content_and_calls(name):
    content, calls = CASES[name]
    text = render_assistant_turn(content, calls)
    assert parse_tool_calls(text) == (content, calls)


def test_the_format_is_hermes_qwen_blocks_one_per_call():
    text = render_assistant_turn("Checking.", [WEATHER, ToolCall("get_time", {"tz": "東京"})])
    assert text == (
        "Checking.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "東京"}}\n</tool_call>'
    )


def test_openai_calls_round_trip_through_the_format():
    call = TRICKY.to_openai("call_7")
    assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == TRICKY.arguments
    assert ToolCall.from_openai(call) == TRICKY
    _, (back,) = parse_tool_calls(TRICKY.block())
    assert back.to_openai("call_7") == call


def test_blocks_that_are_not_calls_stay_in_the_content():
    text = (
        "before <tool_call>\n{not json}\n</tool_call> middle "
        '<tool_call>\n{"arguments": {}}\n</tool_call> '  # no name
        '<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call> '  # arguments not an object
        + WEATHER.block()
        + ' after <tool_call>\n{"name": "cut", "argu'  # a generation cut short
    )
    content, calls = parse_tool_calls(text)
    assert calls == [WEATHER]
    assert content == text.replace(WEATHER.block(), "").strip()


def test_arguments_as_json_text_and_llama_style_parameters_are_read():
    text = '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call><tool_call> {"name": "g", "parameters": {"y": 2}} </tool_call>'
    assert parse_tool_calls(text) == ("", [ToolCall("f", {"x": 1}), ToolCall("g", {"y": 2})])


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def _conversation(system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [WEATHER.to_openai("c1"), ToolCall("get_weather", {"city": "Rome"}).to_openai("c2")]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18°C"},
        {"role": "tool", "tool_call_id": "c2", "name": "get_weather", "content": "24°C"},
        {"role": "assistant", "content": "Paris 18°C, Rome 24°C."},
    ]


def test_fallback_messages_show_tools_in_the_system_prompt_and_results_as_one_user_turn():
    tools_text = f"{TOOLS_HEADER}\n{json.dumps(TOOLS[0])}\n{TOOLS_FOOTER}"
    out = fallback_messages(_conversation("Be brief."), TOOLS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant"]
    assert out[0]["content"] == "Be brief.\n\n" + tools_text
    assert parse_tool_calls(out[2]["content"]) == ("", [WEATHER, ToolCall("get_weather", {"city": "Rome"})])
    assert out[3]["content"] == "<tool_response>\n18°C\n</tool_response>\n<tool_response>\n24°C\n</tool_response>"
    assert all(set(m) == {"role", "content"} for m in out)
    # without a system turn the tool block is the system prompt; without tools nothing is added
    assert fallback_messages(_conversation(), TOOLS)[0] == {"role": "system", "content": tools_text}
    assert fallback_messages(_conversation(), None)[0]["role"] == "user"


def test_module_imports_without_torch_or_transformers():
    code = "import sys, tunesmith.tool_calls; sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
