"""The structure of the answers decides the evaluation: JSON -> json_fields + a JSON Schema inferred from the
training answers; short labels -> label over the label set; "Key: value" lines -> a label group per key;
free text -> ROUGE-L (and the judge when an endpoint is configured). Each choice is checked against the
evaluation's own scorers and format checker."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.advise.evalplan import plan_eval
from tunesmith.data.answer_schema import infer_json_schema, infer_structure, parse_fields
from tunesmith.evaluate.compliance import FormatChecker
from tunesmith.evaluate.config import EvalConfig
from tunesmith.evaluate.task_scoring import TaskScorer


def picks_of(answers, **kw):
    s = infer_structure(answers)
    picks = plan_eval(s, answers, answer_token_max=kw.pop("answer_token_max", 40), endpoints=kw.pop("endpoints", []),
                      judge=None)
    return s, {p.key: p.value for p in picks}, {p.key: p.reason for p in picks}


def eval_config(values) -> EvalConfig:
    """The picks as the eval section they become (validated by its schema)."""
    return EvalConfig.model_validate({k.removeprefix("eval.").split(".")[0]: v for k, v in values.items()
                                      if k.count(".") == 1})


def scorer(ec: EvalConfig) -> TaskScorer:
    fmt = FormatChecker(ec.format_pattern, json_required=ec.format_json, schema=ec.json_schema)
    return TaskScorer(ec.resolved_scorer(), label_pattern=ec.label_pattern, fmt=fmt)


def extraction_answers(n=200, seed=0):
    """Email -> JSON with five fields; ~12 % lack a phone (null); priority has three values; 'note' is
    present in some answers only."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = {"customer": f"Customer {i}", "order_id": f"ORD-{rng.randint(10000, 99999)}",
             "priority": rng.choice(["low", "normal", "urgent"]), "items": rng.randint(1, 5),
             "phone": None if rng.random() < 0.12 else f"+44 20 {rng.randint(1000, 9999)}"}
        if i % 3 == 0:
            a["note"] = f"note {i}"
        out.append(json.dumps(a))
    return out


def test_json_answers_get_field_scoring_and_an_inferred_schema():
    answers = extraction_answers()
    s, v, why = picks_of(answers, answer_token_max=60)
    assert s.kind == "json" and s.share == 1.0
    schema = v["eval.json_schema"]
    props = schema["properties"]
    assert props["phone"]["type"] == ["string", "null"]  # nullable: null seen in training
    assert props["priority"] == {"type": "string", "enum": ["low", "normal", "urgent"]}  # few values: an enum
    assert props["customer"] == {"type": "string"}  # every value different: no enum
    assert props["items"] == {"type": "integer"}
    assert "note" in props and "note" not in schema["required"]  # missing from some answers: optional
    assert set(schema["required"]) == {"customer", "order_id", "priority", "items", "phone"}
    assert schema["additionalProperties"] is False
    assert v["eval.scorer"] == "json_fields" and v["eval.format_json"] is True
    assert v["eval.max_new_tokens"] == 80  # 60 tokens x 1.25 + 4, rounded up to 8
    assert "nullable: phone" in why["eval.json_schema"] and "accepts 100%" in why["eval.json_schema"]

    ts = scorer(eval_config(v))
    ref = answers[1]
    good = ts(ref, ref)
    assert good.correct and good.format_ok
    bad_enum = json.loads(ref) | {"priority": "whenever"}
    r = ts(json.dumps(bad_enum), ref)
    assert not r.correct and r.format_ok is False  # a value outside the enum breaks the schema
    invented = json.loads(ref) | {"discount": "50%"}
    assert ts(json.dumps(invented), ref).format_ok is False  # a key the answers never have
    assert ts("The customer is Customer 1.", ref).format_ok is False


def test_schema_inference_nests_and_mixes_types():
    schema = infer_json_schema([{"a": [{"x": 1}, {"x": 2.5}], "b": "s"}, {"a": [], "b": 3}])
    assert schema["properties"]["a"] == {"type": "array", "items": {
        "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"], "additionalProperties": False}}
    assert schema["properties"]["b"] == {"type": ["integer", "string"]}


def test_short_labels_get_label_scoring_over_the_label_set():
    rng = random.Random(1)
    answers = [rng.choice(["Billing", "Bug", "Account", "Feature request"]) for _ in range(120)]
    s, v, why = picks_of(answers, answer_token_max=3)
    assert s.kind == "labels" and set(s.labels) == {"billing", "bug", "account", "feature request"}
    assert v["eval.scorer"] == "label" and "(?P<label>" in v["eval.label_pattern"]
    assert v["eval.max_new_tokens"] == 16
    ts = scorer(eval_config(v))
    assert ts("Feature request", "feature request").correct  # case and the longer label win
    r = ts("I think this is a bug.", "Bug")
    assert r.correct and r.format_ok is False  # right label, but not only a label
    assert not ts("account", "Bug").correct
    assert ts("Billing.", "Billing").format_ok is True


def test_key_value_lines_get_one_label_group_per_enum_key_and_a_line_pattern():
    rng = random.Random(2)
    answers = [f"Urgency: {rng.choice(['Critical', 'High', 'Low'])}\nCategory: {rng.choice(['Billing', 'Technical'])}\n"
               f"Reasoning: the customer says {i} things" for i in range(100)]
    s, v, why = picks_of(answers)
    assert s.kind == "fields" and [f.key for f in s.fields] == ["Urgency", "Category", "Reasoning"]
    assert s.fields[2].values is None  # free text: not a label
    assert v["eval.scorer"] == "label"
    assert "(?P<urgency>" in v["eval.label_pattern"] and "(?P<category>" in v["eval.label_pattern"]
    assert "reasoning" not in v["eval.label_pattern"]
    assert "finds all of them in 100%" in why["eval.label_pattern"] and "accepts 100%" in why["eval.format_pattern"]
    ts = scorer(eval_config(v))
    ref = "Urgency: High\nCategory: Billing\nReasoning: charged twice"
    assert ts(ref, ref).correct and ts(ref, ref).format_ok
    r = ts("Category: Billing\nUrgency: High\nReasoning: charged twice", ref)
    assert r.correct and r.format_ok is False  # keys in another order: still scored per key; the order is the format
    r = ts("Urgency: High\nCategory: Technical\nReasoning: charged twice", ref)
    assert not r.correct and r.fields == {"urgency": True, "category": False}
    r = ts("Urgency: High", ref)  # a missing key costs only its own field
    assert r.fields == {"urgency": True, "category": False} and r.format_ok is False
    assert parse_fields("Just a sentence: with a colon, and more words than a key has in it here\nsecond line") is None


def test_free_text_gets_rouge_l_and_the_endpoint_as_judge():
    answers = [f"The order {i} shipped on Monday and should arrive within three working days." for i in range(50)]
    s, v, why = picks_of(answers, endpoints=["gpt-4o"])
    assert s.kind == "text" and v["eval.scorer"] == "rouge_l"
    assert v["eval.adversarial.judge"] == "gpt-4o"
    _, v2, _ = picks_of(answers)  # no endpoint: no judge
    assert "eval.adversarial.judge" not in v2


@pytest.mark.parametrize("answers,kind,scorer_name", [
    ([f"```python\nprint({i})\n```" for i in range(30)], "code", "chrf"),
    ([f"answer {i}" for i in range(300)], "short", "exact"),  # short but 300 distinct: not labels
    ([json.dumps({"a": i}) for i in range(10)] + [f"a long sentence number {i} of prose here" for i in range(10)],
     "mixed", "rouge_l"),
])
def test_other_shapes(answers, kind, scorer_name):
    s, v, _ = picks_of(answers)
    assert s.kind == kind and v["eval.scorer"] == scorer_name
