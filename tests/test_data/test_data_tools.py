"""Tool calling in the data stage: every input form becomes the canonical record, each bad tool row is
rejected with its line and a specific reason, and dedup, PII and length checks see tool content."""

from __future__ import annotations

import copy
import json

import pytest

from support.data_files import accounted, alpaca, prepare, write_lines

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def call(cid, city="Paris", name="get_weather", arguments=None):
    args = json.dumps({"city": city}) if arguments is None else arguments
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def openai_row(question="Weather in Paris?", calls=None, results=None, answer="It is 18°C in Paris.", tools=(WEATHER, TIME), **extra):
    calls = [call("c1")] if calls is None else calls
    results = [{"role": "tool", "tool_call_id": "c1", "content": "18°C"}] if results is None else results
    msgs = [{"role": "user", "content": question}, {"role": "assistant", "tool_calls": calls}, *results]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    row = {"messages": msgs, **extra}
    if tools is not None:
        row["tools"] = list(tools)
    return row


def sharegpt_row(turns, tools=(WEATHER["function"],)):
    return {"conversations": [{"from": f, "value": v} for f, v in turns], "tools": json.dumps(list(tools))}


def with_msg(row, j, **changes):
    row = copy.deepcopy(row)
    row["messages"][j].update(changes)
    return row


CANONICAL = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1")]},
        {"role": "tool", "content": "18°C", "tool_call_id": "c1", "name": "get_weather"},
        {"role": "assistant", "content": "It is 18°C in Paris."},
    ],
    "tools": [WEATHER, TIME],
}


def _kept(data):
    return {r["id"].split(":")[1]: {k: v for k, v in r.items() if k != "id"} for r in data.train}


def test_openai_tools_legacy_functions_and_sharegpt_become_one_canonical_record(tmp_path):
    legacy = {
        "functions": [WEATHER["function"], TIME["function"]],
        "messages": [{"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                     {"role": "function", "name": "get_weather", "content": "18°C"},
                     {"role": "assistant", "content": "It is 18°C in Paris."}]}
    sharegpt = sharegpt_row([("human", "Weather in Paris?"), ("function_call", '{"name": "get_weather", "arguments": {"city": "Paris"}}'),
                             ("observation", "18°C"), ("gpt", "It is 18°C in Paris.")], tools=(WEATHER["function"], TIME["function"]))
    # the OpenAI chat format with ids left out: calls get ids, results answer the calls in order
    no_ids = openai_row(calls=[{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
                        results=[{"role": "tool", "content": "18°C"}])
    ends_with_call = openai_row(calls=[call("c1"), call("c2", "Rome")], results=[], answer=None, parallel_tool_calls=True)
    p = write_lines(tmp_path / "tools.jsonl", [openai_row(), legacy, sharegpt, no_ids, ends_with_call])
    data = prepare(p, dedup={"exact": False, "near": False}, format="mixed")
    assert data.rejected == []
    kept = _kept(data)
    assert kept["1"] == CANONICAL
    for line, cid in (("2", "call_1"), ("3", "call_1_0"), ("4", "call_1_0")):
        want = copy.deepcopy(CANONICAL)
        want["messages"][1]["tool_calls"][0]["id"] = want["messages"][2]["tool_call_id"] = cid
        assert kept[line] == want, line
    assert kept["5"]["parallel_tool_calls"] is True and len(kept["5"]["messages"][-1]["tool_calls"]) == 2


UNDECLARED = openai_row(calls=[call("c1", name="get_stock")])
BAD_ROWS = [
    # (row, kind, field, words the reason must contain)
    (UNDECLARED, "unknown_function", "messages[1].tool_calls[0].function.name", ["'get_stock'", "not declared", "get_time, get_weather"]),
    (openai_row(tools=None), "unknown_function", "messages[1].tool_calls[0].function.name", ["'get_weather'", "no 'tools'"]),
    (openai_row(calls=[call("c1", arguments='{"city": "Paris"')]), "invalid_arguments", "messages[1].tool_calls[0].function.arguments",
     ["not valid JSON", "get_weather"]),
    (openai_row(calls=[call("c1", arguments='["Paris"]')]), "invalid_arguments", "messages[1].tool_calls[0].function.arguments",
     ["must be a JSON object"]),
    (openai_row(calls=[call("c1", arguments='{"unit": "C"}')]), "arguments_schema", "messages[1].tool_calls[0].function.arguments",
     ["'city' is a required property"]),
    (openai_row(calls=[call("c1", arguments='{"city": 75001}')]), "arguments_schema", "messages[1].tool_calls[0].function.arguments",
     ["75001 is not of type 'string'", "$.city"]),
    (openai_row(calls=[call("c1", arguments='{"city": "Paris", "unit": "K"}')]), "arguments_schema",
     "messages[1].tool_calls[0].function.arguments", ["'K' is not one of ['C', 'F']", "$.unit"]),
    (openai_row(results=[{"role": "tool", "tool_call_id": "c9", "content": "18°C"}]), "orphan_tool_result", "messages[2].tool_call_id",
     ["'c9'", "no assistant turn made a call"]),
    ({"tools": [WEATHER], "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "18°C"},
                                       {"role": "assistant", "content": "ok"}]},
     "orphan_tool_result", "messages[1]", ["tool result", "no call"]),
    (openai_row(calls=[call("c1"), call("c2", "Rome")]), "unanswered_call", "messages[1].tool_calls[1]",
     ["'c2'", "no tool result before messages[3]"]),
    (openai_row(results=[{"role": "tool", "tool_call_id": "c1", "content": "18°C"}] * 2), "duplicate_tool_result",
     "messages[3].tool_call_id", ["second time", "messages[2]"]),
    (openai_row(calls=[call("c1"), call("c1", "Rome")]), "duplicate_call_id", "messages[1].tool_calls[1].id", ["used twice"]),
    (openai_row(calls=[call("c1"), call("c2", "Rome")], parallel_tool_calls=False,
                results=[{"role": "tool", "tool_call_id": c, "content": "x"} for c in ("c1", "c2")]),
     "parallel_calls", "messages[1]", ["2 calls", "parallel_tool_calls is false"]),
    (openai_row(results=[{"role": "tool", "tool_call_id": "c1", "name": "get_time", "content": "18°C"}]), "wrong_tool_name",
     "messages[2].name", ["'get_time'", "'get_weather'"]),
    (openai_row(tools=[WEATHER, {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]),
     "invalid_tools", "tools[1].function.parameters", ["not a valid JSON Schema"]),
    (openai_row(tools=[WEATHER, WEATHER]), "invalid_tools", "tools[1].function.name", ["declared twice", "tools[0]"]),
    (openai_row(tools=[{"type": "code_interpreter"}]), "invalid_tools", "tools[0].type", ["only function tools"]),
    (openai_row(tools=[{"type": "function", "function": {"description": "no name"}}]), "invalid_tools", "tools[0].function.name",
     ["non-empty string"]),
    (dict(openai_row(), functions=[WEATHER["function"]]), "invalid_tools", "functions", ["both 'tools' and legacy 'functions'"]),
    (with_msg(openai_row(), 0, tool_call_id="c1"), "wrong_type", "messages[0].tool_call_id", ["user turn"]),
    (with_msg(openai_row(), 2, weight=1), "wrong_type", "messages[2].weight", ["tool turn"]),
    (with_msg(openai_row(), 2, content={"temp": 18}), "wrong_type", "messages[2].content", ["must be a string"]),
    (with_msg(openai_row(), 1, tool_calls={"id": "c1"}), "wrong_type", "messages[1].tool_calls", ["must be a list"]),
    ({"tools": [WEATHER], "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "18°C"}, {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "x"}]},
     "role_order", "messages[3].role", ["expected another tool result or the assistant's answer", "got user"]),
    ({"functions": [WEATHER["function"]], "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"role": "function", "name": "get_time", "content": "12:00"}, {"role": "assistant", "content": "x"}]},
     "orphan_tool_result", "messages[2]", ["call to 'get_time'"]),
    (sharegpt_row([("human", "q"), ("function_call", '{"name": "get_weather", "arguments": {"city": '), ("observation", "x"), ("gpt", "a")]),
     "invalid_tool_call", "conversations[1].value", ["function_call", "not valid JSON"]),
    (sharegpt_row([("human", "q"), ("function_call", '{"name": "get_news", "arguments": {}}'), ("observation", "x"), ("gpt", "a")]),
     "unknown_function", "conversations[1].value.name", ["'get_news'", "not declared"]),
    (sharegpt_row([("human", "q"), ("function_call", '[{"name": "get_weather", "arguments": {"city": "A"}}, '
                                                     '{"name": "get_weather", "arguments": {"cty": "B"}}]'), ("observation", "x"), ("gpt", "a")]),
     "arguments_schema", "conversations[1].value[1].arguments", ["'cty' was unexpected"]),
    (sharegpt_row([("human", "q"), ("observation", "x"), ("gpt", "a")]), "orphan_tool_result", "conversations[1]", ["no call"]),
]


def test_each_bad_tool_row_is_rejected_with_its_line_field_and_reason(tmp_path):
    lines: list = []
    expected: dict[int, tuple] = {}
    for i, (row, kind, field, words) in enumerate(BAD_ROWS):
        lines.append(alpaca(i))
        lines.append(row)
        expected[len(lines)] = (kind, field, words)
    p = write_lines(tmp_path / "bad_tools.jsonl", lines)
    data = prepare(p, dedup={"near": False}, format="mixed")
    rejected = {r["line"]: r for r in data.rejected}
    assert sorted(rejected) == sorted(expected)
    for line, (kind, field, words) in expected.items():
        r = rejected[line]
        assert (r["kind"], r["field"]) == (kind, field), (line, r)
        for w in words:
            assert w in r["reason"], (line, w, r["reason"])
        assert r["hint"] and r["file"].endswith("bad_tools.jsonl")
        assert json.loads(r["raw"]) == lines[line - 1]
    assert data.stats["kept"] == len(BAD_ROWS) and data.stats["rows_read"] == accounted(data.stats)


def test_dedup_sees_calls_and_tool_results(tmp_path):
    rows = [openai_row(),
            openai_row(),  # an exact duplicate
            openai_row(calls=[call("c1", "Rome")]),  # same words but another call
            openai_row(results=[{"role": "tool", "tool_call_id": "c1", "content": "-3°C"}])]  # another tool result
    data = prepare(write_lines(tmp_path / "d.jsonl", rows), tmp_path / "out", dedup={"near": False, "exact_scope": ["example"]})
    assert sorted(r["id"] for r in data.train) == ["d.jsonl:1", "d.jsonl:3", "d.jsonl:4"]
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["duplicate_of"]) for r in removed] == [("d.jsonl:2", "d.jsonl:1")]


def test_pii_is_redacted_in_call_arguments_and_tool_results(tmp_path):
    lookup = {"type": "function", "function": {"name": "find_customer", "parameters": {
        "type": "object", "properties": {"email": {"type": "string"}, "tags": {"type": "array"}}, "required": ["email"]}}}
    args = json.dumps({"email": "jane.doe@example.com", "tags": ["vip", "call +1 650 253 0000"]})
    row = openai_row(question="Find the customer jane.doe@example.com", tools=[lookup],
                     calls=[call("c1", name="find_customer", arguments=args)],
                     results=[{"role": "tool", "tool_call_id": "c1", "content": "Found: jane.doe@example.com, card 4111 1111 1111 1111"}],
                     answer="Found them.")
    only_in_call = openai_row(question="Find my account", tools=[lookup], answer="Found it.",
                              calls=[call("c1", name="find_customer", arguments='{"email": "bob@example.org"}')],
                              results=[{"role": "tool", "tool_call_id": "c1", "content": "one match"}])
    data = prepare(write_lines(tmp_path / "p.jsonl", [row, only_in_call]), pii={"mode": "redact"})
    recs = {r["id"]: r for r in data.train}
    rec = recs["p.jsonl:1"]
    text = json.dumps(list(recs.values()), ensure_ascii=False)
    assert "jane.doe" not in text and "253 0000" not in text and "4111" not in text and "bob@" not in text
    arguments = json.loads(rec["messages"][1]["tool_calls"][0]["function"]["arguments"])  # still JSON, still the schema's shape
    assert arguments["email"].startswith("<EMAIL") and arguments["tags"][0] == "vip" and "<PHONE" in arguments["tags"][1]
    assert "<CREDIT_CARD" in rec["messages"][2]["content"]
    # one entity, one placeholder across the record: the question, the call and the tool result agree
    assert arguments["email"] == "<EMAIL_1>" and "<EMAIL_1>" in rec["messages"][0]["content"]
    assert "<EMAIL_1>" in rec["messages"][2]["content"]
    assert data.stats["pii"]["rows_with_pii"] == 2
    assert data.stats["pii"]["rows_with_pii_in_answer"] == 2  # a call is the assistant's output


@pytest.mark.parametrize("limit, kept", [(4096, 1), (150, 0)])
def test_length_check_counts_the_tool_definitions_and_calls(tmp_path, tokenizer, limit, kept):
    from tunesmith.data.config import DataConfig
    from tunesmith.data.formats import row_to_record
    from tunesmith.data.length import TokenCounter
    from tunesmith.data.prepare import prepare_data

    record, _ = row_to_record(openai_row(), "openai")
    n = TokenCounter(tokenizer, 4096).count([record])[0]
    without_tools = TokenCounter(tokenizer, 4096).count([{"messages": [record["messages"][0], record["messages"][-1]]}])[0]
    assert without_tools < 150 < n  # the tool schema in the system prompt, the call and the result are counted
    p = write_lines(tmp_path / "l.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, openai_row()])
    cfg = DataConfig(train_file=str(p), validation_fraction=0.0, test_fraction=0.0, max_rejected_fraction=1.0, report=False)
    data = prepare_data(cfg, None, None, seed=0, base_dir=tmp_path, tokenizer=tokenizer, max_seq_length=limit)
    assert data.stats["kept"] == 1 + kept
    if not kept:
        assert (data.rejected[0]["line"], data.rejected[0]["kind"]) == (2, "too_long")


def test_a_row_the_models_template_refuses_is_rejected_not_fatal(tmp_path, embedded_model_dir):
    """Llama 3.1's template, for one, raises on two calls in one turn: that row is rejected with the template's reason."""
    from tunesmith.data.config import DataConfig
    from tunesmith.data.prepare import prepare_data

    from support.tool_chat import TOOL_TEMPLATE, tokenizer_with_tool_template

    tok = tokenizer_with_tool_template(embedded_model_dir)
    tok.chat_template = ("{%- for m in messages %}{% if m.tool_calls and m.tool_calls | length > 1 %}"
                         "{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}{% endfor %}"
                         + TOOL_TEMPLATE)
    parallel = openai_row(calls=[call("c1"), call("c2", "Rome")],
                          results=[{"role": "tool", "tool_call_id": c, "content": "x"} for c in ("c1", "c2")])
    p = write_lines(tmp_path / "r.jsonl", [openai_row(), parallel, openai_row(question="And in Oslo?", calls=[call("c1", "Oslo")])])
    cfg = DataConfig(train_file=str(p), validation_fraction=0.0, test_fraction=0.0, max_rejected_fraction=1.0, report=False)
    data = prepare_data(cfg, None, None, seed=0, base_dir=tmp_path, tokenizer=tok, max_seq_length=4096)
    assert sorted(r["id"] for r in data.train) == ["r.jsonl:1", "r.jsonl:3"]
    (r,) = data.rejected
    assert (r["line"], r["kind"]) == (2, "template_refused") and "single tool-calls" in r["reason"] and r["hint"]
