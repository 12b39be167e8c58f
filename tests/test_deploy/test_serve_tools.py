"""Tool calling on `tunesmith serve`, driven by the official openai client: tool_choice required / named / auto /
none, parallel_tool_calls, streamed call deltas, conversations with calls and tool results, and 400s."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tunesmith.chat_template import render_prompt_ids

from support.adapters import one_torch_thread  # noqa: F401  (autouse fixture)
from support.serving import local_server, post_chat

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
HISTORY = [
    {"role": "system", "content": "You call tools to answer."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "18 degrees, sunny"},
    {"role": "assistant", "content": "It is 18 degrees and sunny in Paris."},
    {"role": "user", "content": "Weather in London?"},
]


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    with local_server(tiny_model_dir) as s:
        yield s


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def ask(client, messages=ASK, **kw):
    kw = {"max_tokens": 80, "temperature": 1.0, "tools": TOOLS, **kw}
    return client.chat.completions.create(model="base", messages=messages, **kw)


def assert_valid_call(call, names=SCHEMAS):
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) > 10
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_returns_declared_calls_whose_arguments_follow_the_schema(client):
    """Random weights: only the grammar makes these calls well-formed."""
    for seed in range(8):
        r = ask(client, tool_choice="required", parallel_tool_calls=False, seed=seed)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content is None and len(choice.message.tool_calls) == 1
        assert_valid_call(choice.message.tool_calls[0])


def test_required_with_parallel_calls_gives_calls_to_declared_functions(client):
    r = ask(client, tool_choice="required", seed=3, max_tokens=200)
    calls = r.choices[0].message.tool_calls
    assert calls, r.choices[0]
    for call in calls:
        assert_valid_call(call)
    assert len({c.id for c in calls}) == len(calls)


def test_named_tool_choice_calls_that_function(client):
    for seed in range(4):
        r = ask(client, tool_choice={"type": "function", "function": {"name": "get_time"}}, seed=seed)
        calls = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["get_time"]
        assert_valid_call(calls[0])


def test_auto_calls_are_well_formed_and_none_gives_no_calls(client):
    for seed in range(6):
        r = ask(client, tool_choice="auto", seed=seed, max_tokens=40)
        for call in r.choices[0].message.tool_calls or ():
            assert_valid_call(call)
        r = ask(client, tool_choice="none", seed=seed, max_tokens=40)
        assert r.choices[0].message.tool_calls is None and "<tool_call>" not in r.choices[0].message.content
        assert r.choices[0].finish_reason in ("stop", "length")


def _reassemble(chunks):
    calls, content, finish = {}, "", None
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or ():
            call = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            if part.id:
                assert call["id"] is None, "the id comes once, in the call's first chunk"
                call["id"] = part.id
                call["name"] = part.function.name
            call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("parallel", [False, True])
def test_streamed_call_deltas_reassemble_to_the_whole_answer(client, parallel):
    kw = {"tool_choice": "required", "parallel_tool_calls": parallel, "temperature": 0, "max_tokens": 200}
    whole = ask(client, **kw).choices[0]
    chunks = list(ask(client, stream=True, **kw))
    content, calls, finish = _reassemble(chunks)
    assert "</tool_call>" not in content  # no call leaks into the content
    if finish != "length":  # (a block cut off by max_tokens stays text, in the whole answer as in the stream)
        assert "<tool_call" not in content
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert all(c["id"].startswith("call_") for c in calls)
    assert finish == whole.finish_reason and (finish == "tool_calls" or parallel)
    assert content == (whole.message.content or "")


def test_a_conversation_with_calls_and_results_is_rendered_by_the_chat_template(served, tokenizer):
    server, client = served
    # seeded: unseeded, some draws at temperature 1 had not closed the call within the token limit
    r = ask(client, messages=HISTORY, tool_choice="required", parallel_tool_calls=False, max_tokens=120, seed=3)
    canonical = [{**m, "content": m["content"] or ""} for m in HISTORY]
    canonical[3] = {**canonical[3], "name": "get_weather"}
    assert r.usage.prompt_tokens == len(render_prompt_ids(tokenizer, canonical, tools=TOOLS))
    assert_valid_call(r.choices[0].message.tool_calls[0])


def _with(**changes):
    return {"model": "base", "messages": ASK, "tools": TOOLS, "max_tokens": 4, **changes}


BAD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"type": 5}}}}}
BAD_REQUESTS = {
    "tool without a function": (_with(tools=[{"type": "function"}]), "tools.0.function"),
    "function name with a space": (_with(tools=[{"type": "function", "function": {"name": "get weather"}}]),
                                   "tools.0.function.name"),
    "parameters not a JSON Schema": (_with(tools=[BAD_TOOL]), "tools.0.function.parameters"),
    "parameters not an object schema": (_with(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "array"}}}]), "tools.0.function.parameters"),
    "the same function twice": (_with(tools=[TOOLS[0], TOOLS[0]]), "tools[1].function.name"),
    "tool_choice names an undeclared function": (
        _with(tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    "required without tools": (_with(tools=None, tool_choice="required"), "tool_choice"),
    "a tool message answering no call": (_with(messages=[*ASK, {"role": "tool", "tool_call_id": "zz", "content": "x"}]),
                                         "messages[1].tool_call_id"),
    "a tool message without tool_call_id": (_with(messages=[*HISTORY[:3], {"role": "tool", "content": "x"}]),
                                            "messages[3].tool_call_id"),
    "a call to an undeclared function in history": (_with(tools=[TOOLS[1]], messages=HISTORY),
                                                     "messages[2].tool_calls[0].function.name"),
    "call arguments that are not JSON": (_with(messages=[*HISTORY[:2], {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}]}]),
        "messages[2].tool_calls[0].function.arguments"),
    "call arguments that are not an object": (_with(messages=[*HISTORY[:2], {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}}]}]),
        "messages[2].tool_calls[0].function.arguments"),
    "tool_calls on a user message": (_with(messages=[{"role": "user", "content": "x", "tool_calls": []}]),
                                     "messages[0].tool_calls"),
    "a control token in a tool description": (_with(tools=[{"type": "function", "function": {
        "name": "f", "description": "x<|im_end|>"}}]), "tools[0]"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_tools_and_tool_messages_are_400_naming_the_parameter(served, name):
    body, param = BAD_REQUESTS[name]
    status, payload = post_chat(served[0], body)
    assert status == 400, payload
    assert payload["error"]["param"] == param, payload
    assert "not supported" not in payload["error"]["message"]  # a check of this request, not a refused feature


def test_tool_calls_through_an_adapter_batched_beside_the_base(tiny_model_dir, tmp_path):
    """Each row keeps its own adapter and its own grammar in the continuous batch: the adapter's calls are valid,
    differ from the base's (the adapter is applied under the grammar), and equal the answers asked alone."""
    from concurrent.futures import ThreadPoolExecutor

    from support.adapters import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "tickets", r=4, seed=5, scale=2.0)
    prompts = [[{"role": "user", "content": f"Weather in city number {i}?"}] for i in range(4)]

    def call(client, model, messages):
        r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, temperature=0, max_tokens=200)
        assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
        (c,) = r.choices[0].message.tool_calls
        assert_valid_call(c)
        return c.function.name, c.function.arguments

    with local_server(tiny_model_dir, adapters={"tickets": str(adapter)}, max_batch_size=8, batch_wait_ms=50) as (_, client):
        alone = {(m, i): call(client, m, p) for m in ("base", "tickets") for i, p in enumerate(prompts)}
        with ThreadPoolExecutor(8) as pool:
            futures = {(m, i): pool.submit(call, client, m, p) for m in ("base", "tickets") for i, p in enumerate(prompts)}
            batched = {k: f.result() for k, f in futures.items()}
    assert batched == alone
    assert any(alone[("tickets", i)] != alone[("base", i)] for i in range(len(prompts)))
