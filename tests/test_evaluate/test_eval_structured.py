"""The base_structured baseline: the base model held to the answer format by constrained decoding."""

from __future__ import annotations

import json
import re

import pytest

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData
from tunesmith.errors import ConfigError
from tunesmith.evaluate.structured import structured_output, train_label_set

SCHEMA = {"type": "object", "properties": {
    "urgency": {"enum": ["Critical", "High", "Medium", "Low"]},
    "category": {"enum": ["Billing", "Technical", "Account", "Shipping"]},
    "tags": {"type": "array", "items": {"enum": ["refund", "outage", "login", "parcel"]}, "maxItems": 2}},
    "required": ["urgency", "category", "tags"]}
TICKETS = [("the site is down for everyone", "Critical", "Technical"), ("I was charged twice", "High", "Billing"),
           ("how do I change my avatar?", "Low", "Account"), ("parcel arrived damaged", "Medium", "Shipping"),
           ("login loops back to the start page", "High", "Account"), ("refund never came", "Medium", "Billing")]


def _rec(i, text, answer, split):
    return {"id": f"{split}.jsonl:{i}", "messages": [
        {"role": "user", "content": f"Triage as JSON with urgency, category, tags.\n\n{text}"},
        {"role": "assistant", "content": answer}]}


def _json_prepared():
    answer = lambda u, c: json.dumps({"urgency": u, "category": c, "tags": []})  # noqa: E731
    return PreparedData(train=[_rec(i, t, answer(u, c), "train") for i, (t, u, c) in enumerate(TICKETS)],
                        validation=[], test=[_rec(i, t, answer(u, c), "test") for i, (t, u, c) in enumerate(TICKETS)])


def _cfg(tmp_path, tiny_model_dir, **eval_):
    return build_config({
        "name": "s", "output_dir": str(tmp_path / "runs"), "seed": 1,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "eval": {"max_new_tokens": 40, "batch_size": 6, "bootstrap_samples": 200, "adversarial": {"max_prompts": 5},
                 "regression": {"enabled": False}, **eval_}}, base_dir=tmp_path)


def test_json_task_baseline_is_always_compliant(tmp_path, tiny_model_dir):
    from tunesmith.evaluate.run import evaluate_from_config

    cfg = _cfg(tmp_path, tiny_model_dir, models=["base", "base_structured"], scorer="json_fields", json_schema=SCHEMA)
    m = evaluate_from_config(cfg, _json_prepared())
    s = m["base_structured"]
    assert s["n"] == len(TICKETS) and s["format_compliance"] == 1.0
    assert m["base"]["format_compliance"] == 0.0  # the same random model, unconstrained: never the format
    assert s["structured_output"]["kind"] == "json_schema" and s["structured_output"]["source"] == "eval.json_schema"
    assert "base_structured_vs_base" in m["comparisons"]
    run = cfg.run_dir
    rows = [json.loads(line) for line in (run / "eval" / "base_structured.jsonl").read_text().splitlines()]
    assert all(r["format_ok"] for r in rows) and all(json.loads(r["prediction"])["tags"] is not None for r in rows)
    # adversarial items are answered under the same constraint: they too keep the format
    adv = [json.loads(line) for line in (run / "eval" / "base_structured.adversarial.jsonl").read_text().splitlines()]
    assert len(adv) == 5 and all(isinstance(json.loads(r["prediction"]), dict) for r in adv)
    assert "base_structured" in (run / "report.md").read_text()


def test_label_task_baseline_answers_a_train_label(tmp_path, tiny_model_dir):
    from tunesmith.evaluate.run import evaluate_from_config

    labels = PreparedData(train=[_rec(i, t, c, "train") for i, (t, _, c) in enumerate(TICKETS)], validation=[],
                          test=[_rec(i, t, c, "test") for i, (t, _, c) in enumerate(TICKETS)])
    cfg = _cfg(tmp_path, tiny_model_dir, models=["base_structured"], max_new_tokens=8,
               adversarial={"enabled": False})
    m = evaluate_from_config(cfg, labels)
    assert m["base_structured"]["structured_output"]["kind"] == "choice"
    preds = [json.loads(line)["prediction"] for line in (cfg.run_dir / "eval" / "base_structured.jsonl").read_text()
             .splitlines()]
    assert set(preds) <= {"Technical", "Billing", "Account", "Shipping"}


def _ec(**kw):
    return build_config({"eval": {"models": ["base", "base_structured"], **kw}}).eval


def _train(*answers):
    return [_rec(i, "x", a, "train") for i, a in enumerate(answers)]


def test_where_the_constraint_comes_from():
    labels = _train("Billing", "Technical", "Billing")
    prose = _train("The answer is a long sentence.\nWith two lines.", "Another one.")
    assert structured_output(_ec(json_schema=SCHEMA), SCHEMA, labels).constraint.kind == "json_schema"
    fmt = structured_output(_ec(format_pattern=r"Urgency: (?P<u>\w+)"), None, labels)
    assert (fmt.constraint.kind, fmt.constraint.spec, fmt.source) == ("regex", r"Urgency: (\w+)", "eval.format_pattern")
    assert structured_output(_ec(format_json=True), None, labels).constraint.kind == "json"
    assert structured_output(_ec(scorer="json_fields"), None, labels).constraint.kind == "json"
    choice = structured_output(_ec(), None, labels)
    assert choice.constraint.kind == "choice" and json.loads(choice.constraint.spec) == ["Billing", "Technical"]
    lp = r"Category: (?P<c>Billing|Technical)"
    assert structured_output(_ec(label_pattern=lp), None, prose).source == "eval.label_pattern"
    # an explicit choice wins over auto's order
    explicit = structured_output(_ec(format_pattern="x", structured_output="labels"), None, labels)
    assert explicit.constraint.kind == "choice"
    assert structured_output(_ec(json_schema=SCHEMA, structured_output="json"), SCHEMA, labels).constraint.kind \
        == "json"


def test_train_label_set_ignores_general_data_and_rejects_prose():
    assert train_label_set(_train("b", "a", "b") + [{**_rec(9, "x", "Hello there!", "train"), "source": "general"}]) \
        == ["a", "b"]
    assert train_label_set(_train(*[f"label {i}" for i in range(51)])) is None
    assert train_label_set(_train("one line", "two\nlines")) is None


def test_no_answer_format_is_a_clear_error():
    prose = _train("The answer is a long sentence.\nWith two lines.", "Another one.")
    with pytest.raises(ConfigError, match="base_structured needs an answer format"):
        structured_output(_ec(), None, prose)
    with pytest.raises(ConfigError, match="not a label set"):
        structured_output(_ec(structured_output="labels"), None, prose)
    with pytest.raises(ConfigError, match="'json_schema' needs eval.json_schema"):
        _ec(structured_output="json_schema")
    with pytest.raises(ConfigError, match="'regex' needs eval.format_pattern"):
        _ec(structured_output="regex")


def test_a_format_xgrammar_cannot_compile_fails_before_generating(tmp_path, tiny_model_dir):
    from tunesmith.evaluate.run import evaluate_from_config

    cfg = _cfg(tmp_path, tiny_model_dir, models=["base", "base_structured"], format_pattern=r"\bBilling\b")
    with pytest.raises(ConfigError, match=re.escape("base_structured (eval.format_pattern): cannot compile")):
        evaluate_from_config(cfg, _json_prepared())
    assert not list(cfg.run_dir.rglob("base.jsonl"))  # no model generated anything
