"""The whole evaluation on a tiny model + adapter + a loopback endpoint: files, numbers, gates, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData
from tunesmith.evaluate.gates import GateFailed, check_gates, lookup, parse_gates
from tunesmith.errors import ConfigError

from support.fake_openai import FakeOpenAI

INSTR = "Classify this ticket. Answer: Urgency: ..., Category: ..."
LABEL_RE = r"Urgency:\s*(?P<urgency>\w+)[\s\S]*?Category:\s*(?P<category>\w+)"
FORMAT_RE = r"Urgency: \w+\nCategory: \w+"
TICKETS = [("the site is down for everyone", "Critical", "Technical"), ("I was charged twice", "High", "Billing"),
           ("how do I change my avatar?", "Low", "Account"), ("parcel arrived damaged", "Medium", "Shipping")]


def _rec(i, text, u, c, split="test"):
    return {"id": f"{split}.jsonl:{i}", "label": c, "messages": [
        {"role": "user", "content": f"{INSTR}\n\n{text}"},
        {"role": "assistant", "content": f"Urgency: {u}\nCategory: {c}"}]}


def _prepared():
    test = [_rec(i, *t) for i, t in enumerate(TICKETS)]
    train = [_rec(i, f"train ticket {i}", "Low", ["Billing", "Account"][i % 2], "train") for i in range(6)]
    return PreparedData(train=train, validation=[], test=test)


def _answers():
    # the API gets tickets 0 and 1 right, ticket 2 wrong (urgency), ticket 3 fails with HTTP 500
    return ({f"{INSTR}\n\n{TICKETS[0][0]}": "Urgency: Critical\nCategory: Technical",
             f"{INSTR}\n\n{TICKETS[1][0]}": "Urgency: High\nCategory: Billing",
             f"{INSTR}\n\n{TICKETS[2][0]}": "Urgency: High\nCategory: Account"},
            {f"{INSTR}\n\n{TICKETS[3][0]}"})


def _save_adapter(tiny_model_dir: Path, out: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(out)


def _cfg(tmp_path, tiny_model_dir, server, models, name="t", **eval_extra):
    (tmp_path / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "Say hello.", "response": "Hello! How can I help you today?"},
        {"prompt": "What colour is the sky?", "response": "The sky is blue on a clear day."},
        {"prompt": "Name a fruit.", "response": "An apple is a fruit."}]))
    data = {
        "name": name, "output_dir": str(tmp_path / "runs"), "seed": 1,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "eval": {"models": models, "max_new_tokens": 6, "batch_size": 4, "label_pattern": LABEL_RE,
                 "format_pattern": FORMAT_RE, "few_shot_k": 2, "bootstrap_samples": 200,
                 "endpoints": [{"name": "api", "base_url": server.base_url, "model": "echo", "api_key_env": None,
                                "max_retries": 1, "backoff_s": 0},
                               {"name": "judge", "base_url": server.base_url, "model": "judge", "api_key_env": None}],
                 "adversarial": {"max_prompts": 5, "judge": "judge"},
                 "regression": {"prompts_file": str(tmp_path / "general.jsonl"), "max_text_chars": 600,
                                "max_new_tokens": 6, "instruction_prompts": 5, "instruction_max_new_tokens": 6},
                 **eval_extra},
    }
    return build_config(data, base_dir=tmp_path)


def test_full_eval_base_fewshot_tuned_api(tmp_path, tiny_model_dir):
    from tunesmith.evaluate.run import evaluate_from_config

    answers, fails = _answers()
    with FakeOpenAI(answers, fails) as server:
        cfg = _cfg(tmp_path, tiny_model_dir, server, ["base", "few_shot", "tuned", "api"])
        _save_adapter(tiny_model_dir, cfg.run_dir / "adapter")
        m = evaluate_from_config(cfg, _prepared())
        n_api = sum(r["model"] == "echo" for r in server.requests)
        n_judge = sum(r["model"] == "judge" for r in server.requests)
        # a re-run: every endpoint answer comes from the on-disk cache, except the failed request
        server.requests.clear()
        evaluate_from_config(_cfg(tmp_path, tiny_model_dir, server, ["api"], name="rerun"), _prepared())
        assert len(server.requests) == 2  # ticket 3 again: one attempt + one retry, still reported
        # (the judge's verdicts on api's cached answers are cached too)
    run = cfg.run_dir
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["api"] == json.loads(json.dumps(m["api"]))
    # API: 3 scored (one HTTP 500 reported, not scored), 2 of them right
    api = saved["api"]
    assert (api["n"], api["n_failed"]) == (3, 1) and api["failed"][0]["id"] == "test.jsonl:3"
    assert api["accuracy"] == pytest.approx(2 / 3)
    assert api["urgency_accuracy"] == pytest.approx(2 / 3) and api["category_accuracy"] == 1.0
    assert api["format_compliance"] == 1.0
    assert api["classification"]["urgency"]["confusion"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    # every model has the headline keys other code reads
    for name in ("base", "few_shot", "tuned"):
        assert {"accuracy", "accuracy_ci", "format_compliance", "n", "urgency_accuracy", "category_accuracy"} <= set(saved[name])
        assert saved[name]["n"] == 4
    assert saved["delta_accuracy_points"] == pytest.approx(100 * (saved["tuned"]["accuracy"] - saved["base"]["accuracy"]))
    assert {"tuned_vs_base", "few_shot_vs_base", "api_vs_base", "tuned_vs_few_shot", "tuned_vs_api"} <= set(saved["comparisons"])
    assert saved["comparisons"]["api_vs_base"]["n"] == 3  # paired on the examples both have
    # adversarial: one item per kind; the API answers "unknown" to all: abstaining passes everything
    # except the injection item, whose rule is "keep the format"
    adv = saved["adversarial"]
    assert adv["items"] == 5 and set(adv["kinds"]) == {"empty", "other_language", "off_topic", "absent_fact", "injection"}
    assert adv["api"]["hallucination_rate"] == pytest.approx(0.2) and adv["api"]["by_kind"]["injection"]["hallucination_rate"] == 1.0
    assert adv["api"]["pass_rate"] == pytest.approx(0.8)
    # the LLM judge (rubric: PASS when the answer says "unknown") is reported beside the rules, not mixed in
    assert adv["api"]["judge"] == "judge" and adv["api"]["judge_n"] == 5
    assert adv["api"]["judge_hallucination_rate"] == 0.0 and adv["api"]["judge_hallucination_rate_ci"] == pytest.approx([0.0, 0.4345], abs=1e-4)  # Wilson, 0 of 5
    # regression: local models only (few_shot shares base's weights), tuned compared with base
    reg = saved["regression"]
    assert set(reg) >= {"base", "tuned"} and "few_shot" not in reg and "api" not in reg
    assert reg["base"]["perplexity"] > 1 and reg["base"]["general_prompts"] == 3
    assert "perplexity_change_pct" in reg["tuned"] and isinstance(reg["tuned"]["forgetting"], bool)
    assert reg["text_source"].startswith(("bundled", "/usr/share/doc"))
    # verifiable instructions and drift from base's answers (5 instruction + 3 general prompts)
    assert reg["instruction_prompts"] == 5 and reg["base"]["instruction_prompts"] == 5
    assert 0 <= reg["tuned"]["instruction_pass_rate"] <= 1 and "instruction_change_points_ci" in reg["tuned"]
    assert reg["tuned"]["drift_prompts"] == 8 and 0 <= reg["tuned"]["drift"] <= 1 and "drift" not in reg["base"]
    # the drift flag's threshold: base's own drift, its answers sampled at T=0.7 against its greedy ones
    ref = reg["drift_reference"]
    assert ref["temperature"] == 0.7 and ref["drift_prompts"] == 8 and 0 < ref["drift"] <= 1
    assert reg["thresholds"]["max_mean_drift"] == ref["drift"]
    drift_flagged = [f for f in reg["tuned"]["flags"] if f.startswith("drift from base")]
    assert bool(drift_flagged) == (reg["tuned"]["drift"] > ref["drift"])
    assert all(f.endswith("(base's own at temperature 0.7)") for f in drift_flagged)
    assert "base's own" in (run / "report.md").read_text()
    regression_rows = [json.loads(line) for line in (run / "eval" / "tuned.regression.jsonl").read_text().splitlines()]
    assert [r["set"] for r in regression_rows] == ["general"] * 3 + ["instruction"] * 5
    assert all("drift_from_base" in r for r in regression_rows) and all("passed" in r for r in regression_rows[3:])
    # files
    for f in ["report.md", "report.html", "eval/base.jsonl", "eval/few_shot.jsonl", "eval/tuned.jsonl", "eval/api.jsonl",
              "eval/api.adversarial.jsonl"]:
        assert (run / f).is_file(), f
    md = (run / "report.md").read_text()
    for s in ["## 1. Task accuracy", "## 2. Hallucination", "## 3. Regression", "Confusion matrix, api",
              "Failed requests: api (1, not scored)", "Wrong answers: api"]:
        assert s in md, s
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # headline, per-class x2 fields, confusion x2, distribution
    assert "how do I change my avatar?" in html and "<details>" in html and "http" not in html.split("<body>")[1].split(
        "Examples")[0].replace(server.base_url, "")
    # api: 4 test prompts + 1 retry of the 500 + 5 adversarial; judge: at most 5 verdicts for each of the
    # 4 models (identical answers to the same item are one cached request)
    assert n_api == 4 + 1 + 5 and 5 <= n_judge <= 4 * 5


def test_gates(tmp_path):
    metrics = {"tuned": {"accuracy": 0.7}, "gpt-4.1": {"accuracy": 0.9}, "adversarial": {"tuned": {"pass_rate": 0.5}}}
    assert lookup(metrics, "gpt-4.1.accuracy") == 0.9
    rows = check_gates(metrics, parse_gates(["tuned.accuracy=0.8", "gpt-4.1.accuracy=0.9",
                                             "adversarial.tuned.pass_rate=0.4", "tuned.nope=0"]))
    assert [r["passed"] for r in rows] == [False, True, True, False]
    with pytest.raises(ConfigError):
        parse_gates(["tuned.accuracy"])
    with pytest.raises(ConfigError):
        parse_gates(["tuned.accuracy=high"])


def test_cli_fail_under_exit_status(tmp_path, tiny_model_dir, monkeypatch):
    from typer.testing import CliRunner

    import tunesmith.pipeline
    from tunesmith.cli import app

    answers, fails = _answers()
    # the data stage is not under test: the run's prepared splits are these records
    monkeypatch.setattr(tunesmith.pipeline, "_prepared", lambda cfg: _prepared())
    with FakeOpenAI(answers, fails) as server:
        cfg = _cfg(tmp_path, tiny_model_dir, server, ["api"])
        data = cfg.model_dump(mode="json")
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
        runner = CliRunner()
        ok = runner.invoke(app, ["eval", str(tmp_path / "c.yaml"), "--fail-under", "api.accuracy=0.6"])
        assert ok.exit_code == 0, ok.output
        bad = runner.invoke(app, ["eval", str(tmp_path / "c.yaml"), "--fail-under", "api.accuracy=0.7",
                                  "eval.adversarial.enabled=false"])
        assert bad.exit_code == 1, bad.output
        gates = json.loads((cfg.run_dir / "metrics.json").read_text())["gates"]
        assert gates == [{"key": "api.accuracy", "threshold": 0.7, "value": pytest.approx(2 / 3), "passed": False}]
        assert "adversarial" not in json.loads((cfg.run_dir / "metrics.json").read_text())
    with pytest.raises(GateFailed):
        raise GateFailed("x")


def test_a_second_eval_keeps_the_first(tmp_path, tiny_model_dir, monkeypatch):
    """Two `tunesmith eval` on one run: both kept in evaluations/, the top level is the latest, the output says where."""
    from typer.testing import CliRunner

    import tunesmith.pipeline
    from tunesmith.cli import app

    answers, fails = _answers()
    monkeypatch.setattr(tunesmith.pipeline, "_prepared", lambda cfg: _prepared())
    with FakeOpenAI(answers, fails) as server:
        cfg = _cfg(tmp_path, tiny_model_dir, server, ["api"])
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        runner = CliRunner()
        first = runner.invoke(app, ["eval", str(tmp_path / "c.yaml")])
        second = runner.invoke(app, ["eval", str(tmp_path / "c.yaml"), "eval.max_examples=2"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    run = cfg.run_dir
    folders = sorted((run / "evaluations").iterdir())
    assert len(folders) == 2, folders
    kept = [json.loads((f / "metrics.json").read_text()) for f in folders]
    # distinct content: the first scored 3 tickets (one request failed), the second only the first 2
    assert (kept[0]["api"]["n"], kept[0]["api"]["n_failed"]) == (3, 1)
    assert (kept[1]["api"]["n"], kept[1]["api"]["n_failed"]) == (2, 0)
    for f, m in zip(folders, kept, strict=True):
        assert m["evaluation"] == {"id": f.name, "folder": f"evaluations/{f.name}"}
        for name in ("report.md", "report.html", "config.yaml", "eval/api.jsonl", "eval/api.adversarial.jsonl"):
            assert (f / name).is_file(), (f, name)
        assert f.name in (f / "report.md").read_text()
    assert yaml.safe_load((folders[0] / "config.yaml").read_text())["eval"]["max_examples"] is None
    assert yaml.safe_load((folders[1] / "config.yaml").read_text())["eval"]["max_examples"] == 2
    assert len((folders[0] / "eval" / "api.jsonl").read_text().splitlines()) == 4
    # the top level is the latest evaluation, file for file
    for name in ("metrics.json", "report.md", "report.html", "eval/api.jsonl", "eval/api.adversarial.jsonl"):
        assert (run / name).read_bytes() == (folders[1] / name).read_bytes(), name
    # each command names its own folder and the latest copies at the top level
    for result, folder in ((first, folders[0]), (second, folders[1])):
        assert str(folder) in result.output, result.output
        for name in ("report.html", "report.md", "metrics.json"):
            assert str(run / name) in result.output
    assert str(folders[1]) not in first.output


def test_a_fixed_drift_threshold_needs_no_sampled_reference(tmp_path, tiny_model_dir):
    """eval.regression.max_mean_drift set: the flag uses it, and base is not sampled for a reference."""
    from tunesmith.evaluate.run import evaluate_from_config

    answers, fails = _answers()
    with FakeOpenAI(answers, fails) as server:
        data = _cfg(tmp_path, tiny_model_dir, server, ["base", "tuned"]).model_dump(mode="json")
    data["eval"]["regression"]["max_mean_drift"] = 0.05
    data["eval"]["adversarial"] = {"enabled": False}
    data["eval"]["endpoints"] = []
    cfg = build_config(data, base_dir=tmp_path)
    _save_adapter(tiny_model_dir, cfg.run_dir / "adapter")
    reg = evaluate_from_config(cfg, _prepared())["regression"]
    assert "drift_reference" not in reg and reg["thresholds"]["max_mean_drift"] == 0.05
    assert reg["tuned"]["drift"] > 0.05  # the random adapter changes the random model's answers
    assert f"drift from base {reg['tuned']['drift']:.2f} > 0.05" in reg["tuned"]["flags"]


def test_config_rejects_unknown_model_and_bad_judge():
    with pytest.raises(ConfigError, match="unknown model"):
        build_config({"eval": {"models": ["base", "gpt4"]}})
    with pytest.raises(ConfigError, match="judge"):
        build_config({"eval": {"adversarial": {"judge": "nobody"}}})
    with pytest.raises(ConfigError, match="must be unique"):
        build_config({"eval": {"endpoints": [{"name": "regression", "base_url": "http://x", "model": "m"}]}})


@pytest.mark.slow
def test_real_model_perplexity_and_report(tmp_path, embedded_model_dir):
    """SmolLM2-135M-Instruct, 3 support tickets: base and few-shot, all four measurements, sane perplexity."""
    import importlib.util

    from tunesmith.evaluate.run import evaluate_from_config

    root = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
    spec = importlib.util.spec_from_file_location("gen", root / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = gen.generate(12, seed=5)
    recs = [{"id": f"r{i}", "label": r["category"], "messages": [
        {"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}, {"role": "assistant", "content": r["output"]}]}
        for i, r in enumerate(rows)]
    ex = yaml.safe_load((root / "config.yaml").read_text())["eval"]
    cfg = build_config({"name": "real", "output_dir": str(tmp_path), "model": {"device": "cpu"}, "eval": {
        **ex, "models": ["base", "few_shot"], "max_examples": 3, "max_new_tokens": 24, "few_shot_k": 2,
        "adversarial": {"max_prompts": 5}, "regression": {"max_prompts": 3, "max_text_chars": 1500,
                                                          "instruction_prompts": 3, "instruction_max_new_tokens": 32}}})
    m = evaluate_from_config(cfg, PreparedData(train=recs[3:], validation=[], test=recs[:3]))
    assert m["base"]["n"] == 3 and m["few_shot"]["n"] == 3 and m["adversarial"]["base"]["n"] == 5
    # a trained 135M model on plain English: perplexity in the tens (a random model would be ~ vocabulary size)
    assert 3 < m["regression"]["base"]["perplexity"] < 100
    assert "few_shot" not in m["regression"]
    assert m["regression"]["base"]["instruction_prompts"] == 3
    assert (tmp_path / "real" / "report.html").stat().st_size > 20_000
