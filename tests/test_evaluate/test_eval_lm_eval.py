"""lm-evaluation-harness tasks inside `tunesmith eval` (eval.regression.lm_eval): scores of base and tuned with
their standard errors and the difference in metrics.json and the report, the forgetting flag, clear errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData
from tunesmith.evaluate.lm_eval_tasks import SHIPPED_TASKS, task_scores
from tunesmith.evaluate.regression import forgetting_flags, lm_eval_change

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)
from support.report_tables import HtmlTables, markdown_tables

SHIPPED = "tunesmith_general_knowledge"
LIMIT = 6
LOCAL_DOCS = [{"q": "Two plus two is", "choices": ["four", "five", "twenty-two"], "answer": 0},
              {"q": "The colour of grass is", "choices": ["red", "green"], "answer": 1},
              {"q": "Ice is made of", "choices": ["sand", "salt", "water"], "answer": 2}]
LOCAL_TASK = """task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"


def _prepared() -> PreparedData:
    test = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"Classify: {t}"},
                                         {"role": "assistant", "content": c}]}
            for i, (t, c) in enumerate([("site down", "Technical"), ("charged twice", "Billing")])]
    return PreparedData(train=[], validation=[], test=test)


def _config(tmp_path: Path, tiny_model_dir: Path, tasks: list[str], **lm_eval) -> dict:
    return {"name": "lm", "output_dir": str(tmp_path / "runs"), "seed": 3,
            "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
            "eval": {"models": ["base", "tuned"], "max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 100,
                     "adversarial": {"enabled": False},
                     "regression": {"max_text_chars": 300, "max_prompts": 0,
                                    "lm_eval": {"tasks": tasks, "limit": LIMIT, **lm_eval}}}}


def _local_task(folder: Path) -> Path:
    folder.mkdir()
    (folder / "local.jsonl").write_text("".join(json.dumps(d) + "\n" for d in LOCAL_DOCS))
    (folder / "local_mc.yaml").write_text(LOCAL_TASK.format(jsonl=folder / "local.jsonl"))
    return folder


def _shipped_docs() -> list[dict]:
    rows = [json.loads(line) for line in (SHIPPED_TASKS / "general_knowledge.jsonl").read_text().splitlines()]
    return [{"context": f"Question: {r['question']}\nAnswer:", "choices": r["choices"], "answer": r["answer"]}
            for r in rows]


def _reference_accuracy(model, tokenizer, docs: list[dict]) -> float:
    """Share of documents whose right choice has the highest summed log-probability after the context (one fp32
    forward per choice; tokens split as lm-eval splits them: context + " choice" tokenised whole)."""
    right = 0
    for d in docs:
        start = len(tokenizer(d["context"], add_special_tokens=False)["input_ids"])
        scores = []
        for choice in d["choices"]:
            ids = tokenizer(d["context"] + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            scores.append(sum(logp[i - 1, ids[i]].item() for i in range(start, len(ids))))
        right += max(range(len(scores)), key=scores.__getitem__) == d["answer"]
    return right / len(docs)


def test_eval_reports_lm_eval_scores_of_base_and_tuned(tmp_path, tiny_model_dir, tokenizer):
    """`tunesmith eval` with a shipped and a local multiple-choice task: metrics.json carries each model's
    per-task scores (the models' own: recomputed directly) with lm-eval's standard errors, tuned's difference
    vs base and its flag; report.md and report.html show the same table."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.evaluate.run import evaluate_from_config

    tasks_dir = _local_task(tmp_path / "my_tasks")
    cfg = build_config(_config(tmp_path, tiny_model_dir, [SHIPPED, "local_mc"], include_path="my_tasks"),
                       base_dir=tmp_path)
    adapter = make_adapter(tiny_model_dir, cfg.run_dir / "adapter", seed=1, scale=2.0)
    evaluate_from_config(cfg, _prepared())
    reg = json.loads((cfg.run_dir / "metrics.json").read_text())["regression"]

    assert reg["lm_eval"]["tasks"] == [SHIPPED, "local_mc"] and reg["lm_eval"]["limit"] == LIMIT
    assert reg["thresholds"]["max_lm_eval_drop_points"] == 2.0
    base_model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    local_docs = [{"context": f"Q: {d['q']}\nA:", "choices": d["choices"], "answer": d["answer"]} for d in LOCAL_DOCS]
    want = {"base": {SHIPPED: _reference_accuracy(base_model, tokenizer, _shipped_docs()[:LIMIT]),
                     "local_mc": _reference_accuracy(base_model, tokenizer, local_docs)}}
    tuned_model = PeftModel.from_pretrained(base_model, str(adapter)).eval()
    want["tuned"] = {SHIPPED: _reference_accuracy(tuned_model, tokenizer, _shipped_docs()[:LIMIT]),
                     "local_mc": _reference_accuracy(tuned_model, tokenizer, local_docs)}
    assert want["base"] != want["tuned"], "the adapter does not change the answers: the test cannot tell them apart"
    for model in ("base", "tuned"):
        scores = reg[model]["lm_eval"]
        assert set(scores) == {SHIPPED, "local_mc"}
        assert set(scores[SHIPPED]["metrics"]) == {"acc", "acc_norm"} and set(scores["local_mc"]["metrics"]) == {"acc"}
        assert (scores[SHIPPED]["n"], scores["local_mc"]["n"]) == (LIMIT, len(LOCAL_DOCS))
        for task, n in ((SHIPPED, LIMIT), ("local_mc", len(LOCAL_DOCS))):
            acc = scores[task]["metrics"]["acc"]
            assert acc["value"] == pytest.approx(want[model][task]), (model, task)
            # lm-eval's standard error of a mean of 0/1 scores
            assert acc["stderr"] == pytest.approx(math.sqrt(acc["value"] * (1 - acc["value"]) / (n - 1)))
            assert acc["higher_is_better"] is True
    for task in (SHIPPED, "local_mc"):
        b, t = reg["base"]["lm_eval"][task]["metrics"]["acc"], reg["tuned"]["lm_eval"][task]["metrics"]["acc"]
        combined = 100 * math.sqrt(b["stderr"] ** 2 + t["stderr"] ** 2)
        assert t["change_points"] == pytest.approx(100 * (t["value"] - b["value"]))
        assert t["combined_stderr_points"] == pytest.approx(combined)
        assert t["allowed_drop_points"] == pytest.approx(max(2.0, 2 * combined))
        assert t["flagged"] == (-t["change_points"] > t["allowed_drop_points"])
        assert any(task in f for f in reg["tuned"]["flags"]) == t["flagged"]
    assert reg["tuned"]["forgetting"] == bool(reg["tuned"]["flags"])

    # the report: one row per task and metric, base and tuned scores ± standard error, tuned − base
    md_tables = markdown_tables((cfg.run_dir / "report.md").read_text())
    table = next(t for t in md_tables if t[0][:3] == ["task", "metric", "n"])
    assert table[0] == ["task", "metric", "n", "base (± s.e.)", "tuned (± s.e.)", "tuned − base"]
    assert [r[:3] for r in table[1:]] == [[SHIPPED, "acc", str(LIMIT)], [SHIPPED, "acc_norm", str(LIMIT)],
                                         ["local_mc", "acc", "3"]]
    for row in table[1:]:
        b, t = (reg[m]["lm_eval"][row[0]]["metrics"][row[1]] for m in ("base", "tuned"))
        assert row[3] == f"{100 * b['value']:.1f} ± {100 * b['stderr']:.1f}"
        assert row[4] == f"{100 * t['value']:.1f} ± {100 * t['stderr']:.1f}"
        assert row[5].startswith(f"{t['change_points']:+.1f} (limit {-t['allowed_drop_points']:.1f})")
    assert table in HtmlTables((cfg.run_dir / "report.html").read_text()).tables
    assert tasks_dir.is_dir()


def test_a_drop_beyond_the_threshold_and_twice_the_stderr_is_flagged():
    """max(threshold, 2 × combined stderr) decides; members of a scored group and lower-is-better metrics
    are compared but never flagged; the flag joins the other forgetting flags."""
    def scores(acc, se, ppl=10.0, sub=0.5):
        return {"mc": {"n": 100, "metrics": {"acc": {"value": acc, "stderr": se, "higher_is_better": True},
                                            "word_perplexity": {"value": ppl, "stderr": None,
                                                                "higher_is_better": False}}},
                "sub": {"n": 10, "group": "grp", "metrics": {"acc": {"value": sub, "stderr": 0.01,
                                                                     "higher_is_better": True}}}}

    base = scores(0.60, 0.02)
    # a 5-point drop: above the 2-point threshold, but within 2 × √(2² + 2²) = 5.66 points
    within, flags = lm_eval_change(base, scores(0.55, 0.02), max_drop_points=2.0)
    assert not flags and within["mc"]["metrics"]["acc"]["flagged"] is False
    assert within["mc"]["metrics"]["acc"]["allowed_drop_points"] == pytest.approx(2 * math.sqrt(8))
    # the same drop with small standard errors: the threshold decides
    assert lm_eval_change(scores(0.60, 0.001), scores(0.55, 0.001), max_drop_points=6.0)[1] == []
    out, flags = lm_eval_change(scores(0.60, 0.001), scores(0.55, 0.001), max_drop_points=2.0)
    assert flags == ["lm-eval mc acc -5.0 points > 2.0"]
    assert out["mc"]["metrics"]["acc"]["change_points"] == pytest.approx(-5.0)
    # a lower-is-better metric and a group member: the change is kept, no flag
    out, flags = lm_eval_change(base, scores(0.60, 0.02, ppl=99.0, sub=0.0), max_drop_points=2.0)
    assert flags == [] and out["mc"]["metrics"]["word_perplexity"]["change"] == pytest.approx(89.0)
    assert "flagged" not in out["mc"]["metrics"]["word_perplexity"] and out["sub"]["metrics"]["acc"]["flagged"] is False
    # a missing standard error: the threshold alone
    missing = scores(0.55, None)
    assert lm_eval_change(base, missing, max_drop_points=2.0)[0]["mc"]["metrics"]["acc"]["allowed_drop_points"] == 2.0
    entry = forgetting_flags({"lm_eval": base}, {"lm_eval": scores(0.30, 0.02)}, max_ppl_increase_pct=10,
                             max_rouge_drop_points=5, max_lm_eval_drop_points=2.0)
    assert entry["forgetting"] is True and entry["ok"] == 0.0
    assert entry["flags"] == ["lm-eval mc acc -30.0 points > 5.7"]


def test_flagged_lm_eval_drop_in_the_report():
    from types import SimpleNamespace

    from tunesmith.evaluate.report_content import build_report
    from tunesmith.evaluate.report_html import render_html
    from tunesmith.evaluate.report_markdown import render_markdown

    def mc(acc, **change):
        return {"mc": {"n": 40, "metrics": {"acc": {"value": acc, "stderr": 0.05, "higher_is_better": True,
                                                    **change}}}}

    metrics = {"base": {"n": 1, "accuracy": 1.0}, "tuned": {"n": 1, "accuracy": 1.0},
               "regression": {"text_source": "bundled", "text_chars": 100, "prompts_source": "none",
                              "thresholds": {"max_perplexity_increase_pct": 10, "max_rouge_drop_points": 5,
                                             "max_lm_eval_drop_points": 2.0},
                              "lm_eval": {"tasks": ["mc"], "limit": 40, "lm_eval_version": "0.4.13"},
                              "base": {"lm_eval": mc(0.75)},
                              "tuned": {"lm_eval": mc(0.5, change=-0.25, change_points=-25.0,
                                                      combined_stderr_points=7.07, allowed_drop_points=14.14,
                                                      flagged=True),
                                        "forgetting": True, "flags": ["lm-eval mc acc -25.0 points > 14.1"]}}}
    results = {n: SimpleNamespace(examples=[], scores={}, adversarial_examples=[], general_scores={})
               for n in ("base", "tuned")}
    report = build_report(results, metrics, title="r", show_failures=1)
    assert report.forgetting == (("tuned", ("lm-eval mc acc -25.0 points > 14.1",)),)
    md = render_markdown(report)
    assert "| mc | acc | 40 | 75.0 ± 5.0 | 50.0 ± 5.0 | -25.0 (limit -14.1): **forgetting** |" in md
    assert "or an lm-eval score drops more than 2 points or, if larger, 2 × the combined standard error" in md
    assert "the first 40 documents of each" in md
    assert "<td>-25.0 (limit -14.1): <b>forgetting</b></td>" in render_html(report)


def test_task_scores_from_lm_eval_results():
    """Metric names keep a filter other than "none"; "N/A" standard errors become None; a group's members say so."""
    results = {"results": {"grp": {"alias": "grp", "sample_len": 8, "acc,none": 0.5, "acc_stderr,none": 0.1},
                           "a": {"alias": "a", "sample_len": 4, "acc,none": 0.25, "acc_stderr,none": "N/A",
                                 "exact_match,strict-match": 1.0, "exact_match_stderr,strict-match": 0.0},
                           "b": {"alias": "b", "sample_len": 4, "acc,none": 0.75, "acc_stderr,none": 0.2}},
               "group_subtasks": {"grp": ["a", "b"]},
               "higher_is_better": {"grp": {"acc": True}, "a": {"acc": True, "exact_match": True}, "b": {"acc": True}}}
    out = task_scores(results)
    assert out["grp"] == {"n": 8, "metrics": {"acc": {"value": 0.5, "stderr": 0.1, "higher_is_better": True}}}
    assert out["a"]["group"] == "grp" and out["a"]["metrics"] == {
        "acc": {"value": 0.25, "stderr": None, "higher_is_better": True},
        "exact_match,strict-match": {"value": 1.0, "stderr": 0.0, "higher_is_better": True}}


def _run_cli(monkeypatch, capsys, config: Path) -> tuple[int, str]:
    import tunesmith.pipeline
    from tunesmith.cli import main

    monkeypatch.setattr(tunesmith.pipeline, "_prepared", lambda cfg: _prepared())
    monkeypatch.setattr(sys, "argv", ["tunesmith", "eval", str(config)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_lm_eval_not_installed_is_a_clear_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(tmp_path, tiny_model_dir, [SHIPPED])))
    code, err = _run_cli(monkeypatch, capsys, tmp_path / "c.yaml")
    assert code == 2
    assert "eval.regression.lm_eval.tasks is set but lm-evaluation-harness cannot be imported" in err
    assert "pip install 'tunesmith[lmeval]'" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "lm" / "evaluations").exists()  # refused before anything ran


def test_unknown_task_is_a_clear_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(tmp_path, tiny_model_dir, ["tunesmith_general_knowlege"])))
    code, err = _run_cli(monkeypatch, capsys, tmp_path / "c.yaml")
    assert code == 2 and "Traceback" not in err
    assert "unknown lm-eval task(s) tunesmith_general_knowlege" in " ".join(err.split())
    assert "did you mean tunesmith_general_knowlege -> tunesmith_general_knowledge?" in " ".join(err.split())
    assert not (tmp_path / "runs" / "lm" / "evaluations").exists()


def test_missing_task_data_is_a_clear_error(tmp_path):
    """A task whose data cannot be read fails when the evaluation starts, before any model loads."""
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluate.config import LmEvalConfig
    from tunesmith.evaluate.lm_eval_tasks import resolve_tasks

    folder = _local_task(tmp_path / "my_tasks")
    (folder / "local.jsonl").unlink()
    with pytest.raises(TunesmithError, match="lm-eval could not load the data of local_mc") as e:
        resolve_tasks(LmEvalConfig(tasks=["local_mc"]), [folder], batch_size=2, seed=0, bootstrap_iters=100)
    assert "data_files must be absolute paths" in str(e.value)


def test_off_by_default_and_the_example_variant_turns_it_on():
    """The shipped config leaves lm-eval off; config-lm-eval.yaml is config.yaml with it on (nothing else)."""
    plain = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    variant = yaml.safe_load((EXAMPLES / "config-lm-eval.yaml").read_text())
    assert build_config(plain, base_dir=EXAMPLES).eval.regression.lm_eval.tasks == []
    on = build_config(variant, base_dir=EXAMPLES).eval.regression.lm_eval
    assert on.tasks == [SHIPPED] and on.limit == 40
    del variant["eval"]["regression"]["lm_eval"]
    assert variant == plain
    assert build_config({"eval": {"regression": {"lm_eval": {"include_path": "tasks"}}}}).eval.regression.lm_eval \
        .include_path == ["tasks"]


def test_shipped_task_set():
    """The shipped general-knowledge set: 72 distinct questions, 4 distinct choices each, answers spread evenly."""
    rows = [json.loads(line) for line in (SHIPPED_TASKS / "general_knowledge.jsonl").read_text().splitlines()]
    assert len(rows) == 72 and len({r["question"] for r in rows}) == 72
    assert all(len(r["choices"]) == 4 == len(set(r["choices"])) for r in rows)
    assert sorted(sum(r["answer"] == k for r in rows) for k in range(4)) == [18, 18, 18, 18]
