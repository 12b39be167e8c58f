"""advise on tool-calling data: the tools and calls are measured as training renders them, the scorer is tool_calls."""

from __future__ import annotations

import json

from tunesmith.advise.dataset import measure_dataset
from tunesmith.advise.evalplan import plan_eval
from tunesmith.chat_template import render_conversation
from tunesmith.tool_calls import ToolCall

TOOLS = [{"type": "function", "function": {"name": "get_order_status", "description": "Status of an order.",
                                           "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                          "required": ["order_id"]}}}]


def _row(i: int) -> dict:
    call = ToolCall("get_order_status", {"order_id": f"LH-{10000 + i}"}).to_openai(f"c{i}")
    last = {"role": "assistant", "content": "", "tool_calls": [call]} if i % 3 else \
        {"role": "assistant", "content": f"We open at {i % 12 + 1} o'clock, see you {i}."}
    return {"messages": [{"role": "user", "content": f"Where is my order LH-{10000 + i}? ticket {i}"}, last], "tools": TOOLS}


def test_token_lengths_count_the_tools_and_calls_and_the_scorer_is_tool_calls(tmp_path, tokenizer):
    path = tmp_path / "tools.jsonl"
    rows = [_row(i) for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    facts = measure_dataset(path, tokenizer=tokenizer)
    rendered = max(len(tokenizer(render_conversation(tokenizer, r["messages"], tools=TOOLS), add_special_tokens=False)
                       ["input_ids"]) for r in rows)
    assert facts.token_max == rendered  # the tool definitions in the system prompt and the calls are counted
    assert sum("<tool_call>" in a for a in facts.answers) == 20  # the answers are what evaluation scores
    picks = plan_eval(facts.structure, facts.answers, answer_token_max=facts.answer_token_max, endpoints=[], judge=None)
    assert {p.key: p.value for p in picks}["eval.scorer"] == "tool_calls"
