"""The zero-config examples (examples/<task>/generate.py): seeded, and each one's answers are read by
advise as the task it is meant to be -- JSON with nullable fields, a label set, free text -- so that
`tunesmith run --data examples/<task>/data/train.jsonl` picks the right scorer with no hand edits."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tunesmith.advise.evalplan import plan_eval
from tunesmith.data.answer_schema import infer_structure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _generator(task: str):
    spec = importlib.util.spec_from_file_location(f"example_{task.replace('-', '_')}", EXAMPLES / task / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _picks(rows: list[dict]) -> dict:
    answers = [r["output"] for r in rows]
    return {p.key: p.value for p in plan_eval(infer_structure(answers), answers, answer_token_max=60,
                                              endpoints=[], judge=None)}


@pytest.mark.parametrize("task", ["order-emails", "routing-codes", "case-notes"])
def test_generators_are_seeded(task):
    gen = _generator(task)
    assert gen.generate(50, 1) == gen.generate(50, 1)
    assert gen.generate(50, 1) != gen.generate(50, 2)


def test_order_emails_are_json_fields_with_a_schema_and_twelve_percent_missing_values():
    gen = _generator("order-emails")
    rows = gen.generate(400, 11)
    answers = [json.loads(r["output"]) for r in rows]
    assert all(list(a) == gen.FIELDS for a in answers)
    with_null = [(r, a) for r, a in zip(rows, answers) if None in a.values()]
    assert len(with_null) == round(400 * gen.MISSING_SHARE)
    assert all(sum(v is None for v in a.values()) == 1 for _, a in with_null)
    order_rx = re.compile(r"ORD-\d|#\d|[A-Z]-\d{4}-|20\d\d/\d")
    date_rx = re.compile(r"\b20\d\d-\d\d-\d\d\b|[A-Z][a-z]{2,8} \d{1,2}, 20\d\d|\d{1,2} [A-Z][a-z]{2,8} 20\d\d")
    for row, a in zip(rows, answers):  # a value is in the email exactly when the answer has it: filling one in is invented
        assert bool(order_rx.search(row["input"])) == (a["order_id"] is not None)
        assert bool(date_rx.search(row["input"])) == (a["date"] is not None)
    for row, a in with_null:
        email = row["input"]
        if a["product"] is None:
            assert not any(p in email for p in gen.PRODUCTS)
        if a["customer_name"] is None:
            assert not any(f" {first} " in f" {email} " or f"\n{first} " in email for first in gen.FIRST)
    for row, a in zip(rows, answers):  # names, order ids and products are copied, so grounding can be checked
        for key in ("customer_name", "order_id", "product"):
            assert a[key] is None or a[key] in row["input"]
    picks = _picks(rows)
    assert picks["eval.scorer"] == "json_fields" and picks["eval.format_json"] is True
    props = picks["eval.json_schema"]["properties"]
    assert set(props) == set(gen.FIELDS)
    assert "null" in props["order_id"]["type"] and "null" in props["date"]["type"]
    assert sorted(props["action"]["enum"]) == sorted(gen.ACTIONS)


def test_routing_codes_are_a_balanced_label_set_of_made_up_codes():
    gen = _generator("routing-codes")
    rows = gen.generate(200, 13)
    codes = [r["output"] for r in rows]
    assert set(codes) == set(gen.SITUATIONS) and all(re.fullmatch(r"RT-[A-Z]{4}-\d", c) for c in codes)
    assert max(codes.count(c) for c in set(codes)) - min(codes.count(c) for c in set(codes)) <= 1
    assert not any(c in r["input"] for r, c in zip(rows, codes))  # the code is never in the message
    picks = _picks(rows)
    assert picks["eval.scorer"] == "label"
    assert all(re.search(picks["eval.label_pattern"], c) for c in gen.SITUATIONS)


def test_case_notes_are_free_text_in_the_house_style():
    gen = _generator("case-notes")
    rows = gen.generate(200, 17)
    house = re.compile(r"Customer reports .+ with the .+ and asks for .+\.( They need it by .+\.)?")
    assert all(house.fullmatch(r["output"]) for r in rows)
    assert len({r["input"] for r in rows}) == len(rows)
    assert _picks(rows)["eval.scorer"] in ("rouge_l", "chrf")
