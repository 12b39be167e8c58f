"""Conversations with tools through the one chat-rendering home: the model's own template when it supports
tools, the documented fallback format otherwise; the calls parse back from what was rendered."""

from __future__ import annotations

import pytest

from tunesmith.chat_template import (
    count_record_tokens,
    render_conversation,
    render_prompt_ids,
    render_record,
    render_records,
    supports_tools,
)
from tunesmith.data.length import TokenCounter
from tunesmith.tool_calls import parse_tool_calls
from tunesmith.train.tokenize import tokenize_record

from support.tool_chat import PARIS, TOOLS, ZURICH, tokenizer_with_tool_template, tool_record


@pytest.fixture(scope="module")
def tool_tokenizer(embedded_model_dir):
    return tokenizer_with_tool_template(embedded_model_dir)


def _assistant_turns(text):
    return [part.split("<|im_end|>")[0] for part in text.split("<|im_start|>assistant\n")[1:]]


def test_which_templates_support_tools(tokenizer, tool_tokenizer):
    assert supports_tools(tool_tokenizer)
    assert not supports_tools(tokenizer)  # the embedded SmolLM2 template knows only role and content


def test_a_template_with_tool_support_renders_tools_and_calls_itself_and_they_parse_back(tool_tokenizer):
    text = render_record(tool_tokenizer, tool_record()).text
    assert "Available functions:\n" + '{"name": "get_weather"' in text  # the template's own tool header, given tools=
    assert "<|im_start|>tool\n18°C sunny<|im_end|>" in text  # and its own tool turns
    assert "# Tools" not in text and "<tool_response>" not in text  # not the fallback format
    calling, final = _assistant_turns(text)
    assert parse_tool_calls(calling) == ("Checking both.", [PARIS, ZURICH])
    assert parse_tool_calls(final) == ("Paris 18°C, Zürich 12°C.", [])


def test_without_tool_support_the_fallback_format_is_rendered_and_parses_back(tokenizer):
    text = render_record(tokenizer, tool_record()).text
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert "<|im_start|>user\n<tool_response>\n18°C sunny\n</tool_response>\n<tool_response>\n12°C rain\n</tool_response><|im_end|>" in text
    calling, final = _assistant_turns(text)
    assert parse_tool_calls(calling) == ("Checking both.", [PARIS, ZURICH])
    assert parse_tool_calls(final)[1] == []


def test_records_with_different_tools_render_in_one_batch_as_one_at_a_time(tokenizer, tool_tokenizer):
    other = tool_record("Done.")
    other["tools"] = [dict(TOOLS[0], function=dict(TOOLS[0]["function"], description="Weather now"))]
    plain = {"id": "p", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    records = [tool_record(), plain, other, {"id": "x", "text": "raw"}]
    for tok in (tokenizer, tool_tokenizer):
        assert [r.text for r in render_records(tok, records)] == [render_record(tok, r).text for r in records]
        assert "Weather now" in render_record(tok, other).text


@pytest.mark.parametrize("which", ["tokenizer", "tool_tokenizer"])
def test_counted_length_of_a_tool_record_is_what_training_feeds(which, request):
    tok = request.getfixturevalue(which)
    rec = tool_record()
    assert TokenCounter(tok, 4096).count([rec]) == count_record_tokens(tok, [rec]) == [len(tokenize_record(tok, rec).input_ids)]
    # the tool definitions are part of the length
    assert count_record_tokens(tok, [dict(rec, tools=TOOLS * 0)])[0] < count_record_tokens(tok, [rec])[0]


def test_a_prompt_with_tools_ends_where_the_model_writes_its_call(tokenizer, tool_tokenizer):
    rec = tool_record()
    for tok in (tokenizer, tool_tokenizer):
        ids = render_prompt_ids(tok, rec["messages"][:2], tools=TOOLS)
        text = tok.decode(ids)
        assert text.endswith("<|im_start|>assistant\n") and "get_weather" in text
        assert render_conversation(tok, rec["messages"], tools=TOOLS).startswith(text)
