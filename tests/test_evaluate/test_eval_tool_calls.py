"""The tool_calls scorer, its aggregation and report table, auto/advise choosing it, and the baselines given tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import build_config
from tunesmith.evaluate.config import EndpointConfig
from tunesmith.evaluate.endpoint import EndpointClient
from tunesmith.evaluate.task_scoring import TaskScorer, aggregate, task_scorer_from_config
from tunesmith.evaluate.tool_call_scoring import score_tool_calls
from tunesmith.tool_calls import ToolCall

from support.fake_openai import FakeOpenAI

TOOLS = [
    {"type": "function", "function": {"name": "get_order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "refund_order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"},
                                         "reason": {"enum": ["damaged", "late", "wrong_item"]}},
        "required": ["order_id", "reason"], "additionalProperties": False}}},
]


def calls(*cs: ToolCall, text: str = "") -> str:
    """An answer as a model writes it: text, then one <tool_call> block per call."""
    return "\n".join([text] * bool(text) + [c.block() for c in cs])


STATUS_1 = ToolCall("get_order_status", {"order_id": "A1"})
STATUS_2 = ToolCall("get_order_status", {"order_id": "B2"})
REFUND = ToolCall("refund_order", {"order_id": "A1", "reason": "damaged"})


def test_right_call_wrong_name_wrong_argument():
    right = score_tool_calls(calls(REFUND), calls(REFUND))
    assert (right.exact, right.names_right, right.args_right, right.args_total) == (True, True, 2, 2)
    name = score_tool_calls(calls(ToolCall("cancel_order", REFUND.arguments)), calls(REFUND))
    assert (name.exact, name.names_right, name.args_right, name.args_total) == (False, False, 0, 2)
    arg = score_tool_calls(calls(ToolCall("refund_order", {"order_id": "A1", "reason": "late"})), calls(REFUND))
    assert (arg.exact, arg.names_right, arg.args_right, arg.args_total) == (False, True, 1, 2)


def test_extra_argument_is_wrong_and_argument_order_does_not_matter():
    extra = score_tool_calls(calls(ToolCall("refund_order", {**REFUND.arguments, "note": "x"})), calls(REFUND))
    assert (extra.exact, extra.args_right, extra.args_total) == (False, 2, 3)
    reordered = '<tool_call>\n{"arguments": {"reason": "damaged", "order_id": "A1"}, "name": "refund_order"}\n</tool_call>'
    assert score_tool_calls(reordered, calls(REFUND)).exact
    # equal as JSON: 1 and 1.0 are the same number
    assert score_tool_calls(calls(ToolCall("f", {"n": 1.0})), calls(ToolCall("f", {"n": 1}))).exact


def test_parallel_calls_are_a_multiset():
    ref = calls(STATUS_1, STATUS_2)
    swapped = score_tool_calls(calls(STATUS_2, STATUS_1), ref)
    assert swapped.exact and swapped.args_right == 2
    one_missing = score_tool_calls(calls(STATUS_2), ref)
    assert (one_missing.exact, one_missing.names_right, one_missing.args_right, one_missing.args_total) == (False, False, 1, 2)
    twice = score_tool_calls(calls(STATUS_1, STATUS_1), ref)  # the same call twice is not the two calls
    assert not twice.exact and twice.args_right == 1
    extra = score_tool_calls(calls(STATUS_1, STATUS_2, REFUND), ref)
    assert not extra.exact and not extra.names_right


def test_no_call_decisions():
    both_text = score_tool_calls("Our opening hours are 9 to 5.", "We open at 9.")
    assert both_text.exact and both_text.decision_right and not both_text.expected_call
    called_needlessly = score_tool_calls(calls(STATUS_1), "We open at 9.")
    assert not called_needlessly.exact and not called_needlessly.decision_right and called_needlessly.predicted_call
    did_not_call = score_tool_calls("Let me check that for you.", calls(STATUS_1, text="Checking."))
    assert not did_not_call.exact and not did_not_call.decision_right and did_not_call.args_total == 1


def test_unparseable_call_is_an_attempt_and_not_compliant():
    broken = '<tool_call>\n{"name": "get_order_status", "arguments": {"order_id": "A1"}\n</tool_call>'  # one } short
    o = score_tool_calls(broken, calls(STATUS_1), TOOLS)
    assert (o.exact, o.predicted_call, o.unparsed, o.compliant) == (False, True, 1, False)
    assert "not a call" in o.compliance_error


def test_compliance_against_the_declared_schemas():
    assert score_tool_calls(calls(REFUND), "", TOOLS).compliant
    assert score_tool_calls("plain text", "", TOOLS).compliant
    bad_enum = score_tool_calls(calls(ToolCall("refund_order", {"order_id": "A1", "reason": "bored"})), "", TOOLS)
    assert not bad_enum.compliant and "reason" in bad_enum.compliance_error
    missing = score_tool_calls(calls(ToolCall("refund_order", {"order_id": "A1"})), "", TOOLS)
    assert not missing.compliant and "'reason' is a required property" in missing.compliance_error
    wrong_type = score_tool_calls(calls(ToolCall("get_order_status", {"order_id": 7})), "", TOOLS)
    assert not wrong_type.compliant
    undeclared = score_tool_calls(calls(ToolCall("delete_account", {})), "", TOOLS)
    assert not undeclared.compliant and "not a declared function" in undeclared.compliance_error
    # without declared tools only the parsing is checked
    assert score_tool_calls(calls(ToolCall("delete_account", {})), "").compliant


def test_aggregate_rates_confusion_and_report_table():
    from tunesmith.evaluate.report_content import build_report
    from tunesmith.evaluate.report_markdown import render_markdown
    from tunesmith.evaluate.run import ModelResult

    s = TaskScorer("tool_calls")
    scored = [s(calls(REFUND), calls(REFUND), tools=TOOLS),  # right
              s(calls(ToolCall("refund_order", {"order_id": "A1", "reason": "late"})), calls(REFUND), tools=TOOLS),
              s("Sure.", calls(STATUS_1), tools=TOOLS),  # missed call
              s("We open at 9.", "Nine o'clock.", tools=TOOLS),  # right no-call
              s(calls(STATUS_1), "Nine o'clock.", tools=TOOLS)]  # needless call
    m = aggregate(scored, kind="tool_calls", n_resamples=200)
    t = m["tool_calls"]
    assert m["accuracy"] == pytest.approx(2 / 5) and t["exact_call_accuracy"] == pytest.approx(2 / 5)
    assert t["name_accuracy"] == pytest.approx(2 / 3) and t["no_call_accuracy"] == pytest.approx(1 / 2)
    assert t["argument_accuracy"] == pytest.approx(3 / 5)  # 2 + 1 + 0 of 2 + 2 + 1
    assert t["call_decision_accuracy"] == pytest.approx(3 / 5) and t["compliance"] == 1.0
    assert t["confusion"]["matrix"] == [[2, 1], [1, 1]]
    assert t["argument_accuracy_ci"] is not None and t["name_accuracy_ci"] is not None
    metrics = {"base": m, "comparisons": {}, "model": "m", "method": "lora", "test_examples": 5, "scorer": "tool_calls"}
    md = render_markdown(build_report({"base": ModelResult(m, [])}, metrics, title="t", show_failures=0))
    assert "### Tool calls" in md and "| exact calls | function names | arguments | no-call |" in md
    assert "| base | 40.0% [" in md and "| call | 2 | 1 |" in md


def _tool_record(i, answer_calls=(), text=""):
    last = {"role": "assistant", "content": text}
    if answer_calls:
        last["tool_calls"] = [c.to_openai(f"c{i}{k}") for k, c in enumerate(answer_calls)]
    return {"id": f"t:{i}", "tools": TOOLS, "messages": [{"role": "user", "content": f"Where is order A{i}?"}, last]}


def test_auto_scorer_and_advise_choose_tool_calls_for_tool_data():
    from tunesmith.advise.evalplan import plan_eval, tool_call_pick
    from tunesmith.data.answer_schema import infer_structure
    from tunesmith.data.records import reference_answer

    ec = build_config({}).eval
    records = [_tool_record(1, [STATUS_1]), _tool_record(2, text="We open at 9.")]
    assert task_scorer_from_config(ec, Path("."), records=records).kind == "tool_calls"
    assert task_scorer_from_config(ec, Path("."), records=[{"messages": [{"role": "user", "content": "q"},
                                                                          {"role": "assistant", "content": "a"}]}]).kind == "exact"
    assert build_config({"eval": {"scorer": "tool_calls"}}).eval.resolved_scorer() == "tool_calls"
    pick = tool_call_pick([reference_answer(r) for r in records])
    assert pick is not None and (pick.key, pick.value) == ("eval.scorer", "tool_calls")
    assert "1 of 2 answers call functions (get_order_status)" in pick.reason
    assert tool_call_pick(["plain", "text"]) is None
    answers = [reference_answer(r) for r in records]
    picks = plan_eval(infer_structure(answers), answers, answer_token_max=30, endpoints=[], judge=None)
    assert [(p.key, p.value) for p in picks if p.key == "eval.scorer"] == [("eval.scorer", "tool_calls")]


def test_endpoint_sends_tools_and_reads_tool_calls_back(tmp_path):
    api_calls = [STATUS_1.to_openai("x1"), STATUS_2.to_openai("x2"),
                 {"id": "x3", "type": "function", "function": {"name": "refund_order", "arguments": "{not json"}}]
    with FakeOpenAI(tool_calls={"Where are A1 and B2?": api_calls[:2], "Refund A1": api_calls[2:]}) as server:
        cfg = EndpointConfig(name="api", base_url=server.base_url, model="echo", api_key_env=None, backoff_s=0)
        client = EndpointClient(cfg, cache_dir=tmp_path / "cache", max_tokens=32, sleep=lambda s: None)
        earlier = [{"role": "user", "content": "Status of C3?"},
                   {"role": "assistant", "content": "", "tool_calls": [ToolCall("get_order_status", {"order_id": "C3"}).to_openai("e1")]},
                   {"role": "tool", "tool_call_id": "e1", "name": "get_order_status", "content": "shipped"},
                   {"role": "assistant", "content": "C3 has shipped."},
                   {"role": "user", "content": "Where are A1 and B2?"}]
        answers = client.complete_many([earlier, [{"role": "user", "content": "Refund A1"}]], tools=[TOOLS, TOOLS])
        sent = server.requests[0] if server.requests[0]["messages"][-1]["content"] != "Refund A1" else server.requests[1]
    assert sent["tools"] == TOOLS
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_order_status"
    assert sent["messages"][2]["tool_call_id"] == "e1" and sent["messages"][2]["role"] == "tool"
    both, broken = answers
    assert both.error is None and both.text == calls(STATUS_1, STATUS_2)
    scored = TaskScorer("tool_calls")(both.text, calls(STATUS_2, STATUS_1), tools=TOOLS)
    assert scored.correct and scored.format_ok
    bad = TaskScorer("tool_calls")(broken.text, calls(REFUND), tools=TOOLS)
    assert not bad.correct and bad.format_ok is False and bad.tool.unparsed == 1


def test_few_shot_shots_keep_their_calls_and_the_prompt_declares_the_tools(tokenizer):
    from tunesmith.evaluate.fewshot import few_shot_conversation, few_shot_tools
    from tunesmith.evaluate.generate import render_prompts

    shot = _tool_record(1, [STATUS_1], text="Checking.")
    test = _tool_record(2, [STATUS_2])
    conv = few_shot_conversation([test["messages"][0]], [shot])
    assert conv[1]["tool_calls"] == shot["messages"][1]["tool_calls"]
    other = {"type": "function", "function": {"name": "search_products", "parameters": {"type": "object"}}}
    assert [t["function"]["name"] for t in few_shot_tools(TOOLS[:1], [{**shot, "tools": [other]}])] == \
        ["get_order_status", "search_products"]
    text = tokenizer.decode(render_prompts(tokenizer, [conv, conv[-1:]], [TOOLS, None])[0])
    assert "<tools>" in text and '"refund_order"' in text  # the tools, in the fallback format
    assert '<tool_call>\n{"name": "get_order_status", "arguments": {"order_id": "A1"}}\n</tool_call>' in text
    plain = tokenizer.decode(render_prompts(tokenizer, [conv, conv[-1:]], [TOOLS, None])[1])
    assert "<tools>" not in plain


def test_base_structured_for_tool_tasks_allows_text_or_declared_calls(tokenizer):
    import xgrammar as xgr

    from tunesmith.constrained_decoding import GrammarCompiler
    from tunesmith.evaluate.structured import structured_output

    ec = build_config({"eval": {"models": ["base_structured"]}}).eval
    so = structured_output(ec, None, [_tool_record(1, [STATUS_1])], [_tool_record(2, text="Hi")])
    assert so.constraint.kind == "structural_tag" and "get_order_status, refund_order" in so.source
    compiled = GrammarCompiler(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id]).compile(
        so.constraint)

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(compiled.grammar)
        return all(m.accept_token(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]) and \
            m.accept_token(tokenizer.eos_token_id)

    assert accepts("We open at nine.") and accepts(calls(STATUS_1, REFUND, text="On it."))
    assert not accepts(calls(ToolCall("delete_account", {})))
    assert not accepts(calls(ToolCall("refund_order", {"order_id": "A1", "reason": "bored"})))


def test_base_structured_uses_the_schema_inferred_from_json_train_answers():
    from tunesmith.evaluate.structured import structured_output

    train = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content":
              json.dumps({"urgency": u, "n": i})}]} for i, u in enumerate(["High", "Low", "High", "Low", "High"])]
    ec = build_config({"eval": {"models": ["base_structured"], "scorer": "json_fields"}}).eval
    so = structured_output(ec, None, train)
    assert so.constraint.kind == "json_schema" and so.source == "the JSON Schema inferred from the train answers"
    schema = json.loads(so.constraint.spec)
    assert schema["properties"]["n"]["type"] == "integer" and sorted(schema["required"]) == ["n", "urgency"]


def test_eval_of_tool_data_scores_calls_for_every_baseline(tmp_path, tiny_model_dir):
    from tunesmith.data.prepared import PreparedData
    from tunesmith.evaluate.run import evaluate_from_config

    records = [_tool_record(i, [ToolCall("get_order_status", {"order_id": f"A{i}"})]) for i in range(4)] + \
        [_tool_record(i + 4, text="We open at nine.") for i in range(2)]
    cfg = build_config({
        "name": "tools", "output_dir": str(tmp_path / "runs"), "seed": 1,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "eval": {"models": ["base", "few_shot", "base_structured"], "few_shot_k": 1, "max_new_tokens": 24,
                 "bootstrap_samples": 100, "adversarial": {"enabled": False}, "regression": {"enabled": False}}},
        base_dir=tmp_path)
    m = evaluate_from_config(cfg, PreparedData(train=records[:3], validation=[], test=records))
    assert m["scorer"] == "tool_calls"
    for name in ("base", "few_shot", "base_structured"):
        t = m[name]["tool_calls"]
        assert (t["examples_with_calls"], t["examples_without_calls"], t["arguments"]) == (4, 2, 4)
        assert sum(map(sum, t["confusion"]["matrix"])) == 6
    assert m["base_structured"]["structured_output"]["kind"] == "structural_tag"
    assert m["base_structured"]["tool_calls"]["compliance"] == 1.0  # every call it writes is well formed
    rows = [json.loads(line) for line in (cfg.run_dir / "eval" / "base.jsonl").read_text().splitlines()]
    assert rows[0]["tool_calls"]["expected_call"] is True and "<tool_call>" in rows[0]["reference"]
    assert "### Tool calls" in (cfg.run_dir / "report.md").read_text()
