"""The parity certificate: the paired interval against Newcombe's published table, the non-inferiority verdict,
the examples needed, and `eval.parity` end to end (two loopback endpoints: no model loads)."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData
from tunesmith.errors import ConfigError
from tunesmith.evaluate.gates import check_gates, parse_gates
from tunesmith.evaluate.parity import examples_needed, newcombe_paired_interval, verdict

from support.fake_openai import FakeOpenAI

# Newcombe RG (1998) "Improved confidence intervals for the difference between binomial proportions based on
# paired data", Statistics in Medicine 17:2635-2650, Table II, method 10 (the hybrid score interval), 95%:
# (e, f, g, h) = (both, first only, second only, neither) -> (lower, upper) of p_first - p_second.
NEWCOMBE_TABLE_II = [
    ((36, 12, 2, 0), (0.0569, 0.3404)),
    ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((53, 0, 0, 1), (-0.0729, 0.0729)),
    ((0, 30, 0, 0), (0.8395, 1.0)),
]


@pytest.mark.parametrize(("table", "expected"), NEWCOMBE_TABLE_II)
def test_newcombe_paired_interval_matches_table_ii(table, expected):
    lo, hi = newcombe_paired_interval(*table, confidence=0.95)
    assert (round(lo, 4), round(hi, 4)) == expected


def test_non_inferiority_rule_and_examples_needed():
    # the standard reading: pass when the lower bound clears -margin, fail when the upper bound is below it
    assert verdict(-0.019, 0.05, 0.02) == "pass"
    assert verdict(-0.10, -0.021, 0.02) == "fail"
    assert verdict(-0.05, 0.01, 0.02) == "inconclusive"
    # (1.95996 + 0.84162)^2 * 0.1 / (0 + 0.02)^2 = 1962.2 -> 1963 (variance 0.1: 10% discordant, no difference)
    assert examples_needed(0.0, 0.1, 0.02) == 1963
    # no discordance: the all-agreeing Newcombe bound z^2 / (n + z^2) falls below 0.02 from n = 189
    assert examples_needed(0.0, 0.0, 0.02) == 189
    assert newcombe_paired_interval(189, 0, 0, 0)[0] > -0.02 > newcombe_paired_interval(188, 0, 0, 0)[0]
    # at or below -margin, more examples cannot show non-inferiority
    assert examples_needed(-0.03, 0.1, 0.02) is None


INSTR = "Answer with the capital city."
QUESTIONS = [(f"country {i}", f"City{i}") for i in range(40)]


def _prepared(n=40):
    test = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"{INSTR} {q}"},
                                         {"role": "assistant", "content": a}]} for i, (q, a) in enumerate(QUESTIONS)]
    return PreparedData(train=test[:2], validation=[], test=test[:n])


def _answers(right: set[int]) -> dict[str, str]:
    return {f"{INSTR} {q}": (a if i in right else "Atlantis") for i, (q, a) in enumerate(QUESTIONS)}


def _cfg(tmp_path, ref_server, cand_server, *, margin=10.0, max_examples=None, name="p"):
    endpoint = {"api_key_env": None, "max_retries": 0, "model": "echo"}
    data = {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 1,
            "eval": {"models": ["ft-model", "replacement"], "max_new_tokens": 8, "bootstrap_samples": 200,
                     "max_examples": max_examples,
                     "adversarial": {"enabled": False}, "regression": {"enabled": False},
                     "endpoints": [{"name": "ft-model", "base_url": ref_server.base_url,
                                    "usd_per_million_input_tokens": 3.0, "usd_per_million_output_tokens": 12.0,
                                    **endpoint},
                                   {"name": "replacement", "base_url": cand_server.base_url, **endpoint}],
                     "parity": {"reference": "ft-model", "candidate": "replacement", "margin_points": margin}}}
    return build_config(data, base_dir=tmp_path)


def _evaluate(tmp_path, ref_right, cand_right, **kw):
    from tunesmith.evaluate.run import evaluate_from_config

    with FakeOpenAI(_answers(ref_right)) as ref, FakeOpenAI(_answers(cand_right)) as cand:
        cfg = _cfg(tmp_path, ref, cand, **kw)
        evaluate_from_config(cfg, _prepared())
    assert "Parity certificate: replacement vs ft-model" in (cfg.run_dir / "report.html").read_text()
    return json.loads((cfg.run_dir / "metrics.json").read_text())["parity"], (cfg.run_dir / "report.md").read_text()


def test_identical_candidate_passes(tmp_path):
    p, md = _evaluate(tmp_path, set(range(30)), set(range(30)))
    # (e, f, g, h) = (30, 0, 0, 10): difference 0; Wilson 30/40 = [0.5981, 0.8581], phi = 280/300: [-0.0641, +0.0641]
    assert p["pairs"] == {"both_right": 30, "candidate_only_right": 0, "reference_only_right": 0, "both_wrong": 10}
    assert p["difference_points"] == 0 and p["difference_ci_points"] == pytest.approx([-6.41, 6.41], abs=0.01)
    assert p["verdict"] == "pass" and p["passed"] == 1 and "examples_needed" not in p
    assert p["agreement"] == 1.0 and p["changed"] == 0 and "Newcombe" in p["method"]
    # latency measured per request; the ft model is priced from its config, the other endpoint is not
    assert p["latency"]["ft-model"]["n"] == 40 and p["latency"]["ft-model"]["p95_s"] >= p["latency"]["ft-model"]["p50_s"]
    cost = p["cost"]["ft-model"]  # words as tokens in the fake: 7 per prompt, 1 per answer
    assert (cost["prompt_tokens"], cost["completion_tokens"]) == (280, 40)
    assert cost["usd_per_million_tokens"] == pytest.approx((280 * 3 + 40 * 12) / 320)
    assert p["cost"]["replacement"]["usd_per_million_tokens"] is None
    assert "## Parity certificate: replacement vs ft-model" in md and "**PASS**" in md and "US$ per million" in md


def test_clearly_worse_candidate_fails_and_gate_misses(tmp_path):
    p, md = _evaluate(tmp_path, set(range(30)), set(range(10)))
    # the candidate loses 20 of the reference's 30 right answers and wins none: (10, 0, 20, 10)
    assert p["difference_points"] == pytest.approx(-50.0)
    assert p["difference_ci_points"][1] < -10 and p["verdict"] == "fail" and p["passed"] == 0
    assert p["agreement"] == pytest.approx(0.5) and p["changed"] == 20 and len(p["changed_examples"]) == 20
    assert p["changed_examples"][0] == {"id": "t10", "reference": "City10", "candidate": "Atlantis"}
    assert "**FAIL**" in md
    rows = check_gates({"parity": p}, parse_gates(["parity"]))
    assert rows == [{"key": "parity.passed", "threshold": 1.0, "value": 0, "passed": False}]


def test_too_few_examples_is_inconclusive_with_the_examples_needed(tmp_path):
    p, md = _evaluate(tmp_path, set(range(30)), set(range(30)) - {0}, margin=2.0, max_examples=6)
    # 6 examples, the candidate loses one: (5, 0, 1, 0), d = -1/6; Wilson 5/6 = [0.4365, 0.9699], 6/6 = [0.6097, 1],
    # phi = 0 (a zero margin): [-1/6 - 0.3968, -1/6 + sqrt(0.1366^2 + 0.3903^2)] = [-0.5635, +0.2469]
    assert p["n"] == 6 and p["difference_points"] == pytest.approx(-100 / 6)
    assert p["difference_ci_points"] == pytest.approx([-56.35, 24.69], abs=0.01)
    assert p["verdict"] == "inconclusive" and p["examples_needed"] is None  # d = -16.7 is below -2: no n helps
    p, md = _evaluate(tmp_path, set(range(30)), set(range(30)), margin=2.0, max_examples=6)
    assert p["verdict"] == "inconclusive" and p["examples_needed"] == 189 and "189 test examples would decide" in md


def test_parity_config_is_checked():
    with pytest.raises(ConfigError, match="eval.parity"):
        build_config({"eval": {"models": ["base", "tuned"], "parity": {"reference": "ft-model"}}})
    with pytest.raises(ConfigError, match="same model"):
        build_config({"eval": {"models": ["base", "tuned"], "parity": {"reference": "tuned"}}})


def test_fail_under_parity_on_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import tunesmith.pipeline
    from tunesmith.cli import app

    monkeypatch.setattr(tunesmith.pipeline, "_prepared", lambda cfg: _prepared())
    with FakeOpenAI(_answers(set(range(30)))) as ref, FakeOpenAI(_answers(set(range(5)))) as cand:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(_cfg(tmp_path, ref, cand).model_dump(mode="json")))
        result = CliRunner().invoke(app, ["eval", str(tmp_path / "c.yaml"), "--fail-under", "parity"])
    assert result.exit_code == 1, result.output
    assert "parity FAIL: replacement vs ft-model" in " ".join(result.output.split())


def test_local_cost_from_measured_throughput_and_the_catalogue_and_the_cost_ratio():
    from tunesmith.evaluate.parity import Side, certificate
    from tunesmith.evaluate.parity_cost import hourly_price, local_cost
    from tunesmith.evaluate.task_scoring import ExampleScore

    # the catalogue's L4 price, or the GPU this evaluation ran on; on CPU nothing unless a price is given
    assert hourly_price(usd_per_hour=None, gpu="L4", device_name=None) == (0.80, "L4 in the GPU catalogue")
    assert hourly_price(usd_per_hour=None, gpu=None, device_name="NVIDIA H200")[0] == 5.50
    assert hourly_price(usd_per_hour=None, gpu=None, device_name=None)[0] is None
    examples = [{"prompt_tokens": 90, "completion_tokens": 10}] * 36  # 3600 tokens in 2 s: 1800 tokens/s
    cost = local_cost(examples, generation_seconds=2.0, usd_per_hour=0.80, price_source="L4", device="NVIDIA L4")
    assert cost["tokens_per_second"] == 1800 and cost["usd_per_million_tokens"] == pytest.approx(0.80 / 3600 / 1800 * 1e6)
    # the certificate says what share of the reference's price the candidate costs
    right = {"a": ExampleScore(1.0, True)}
    ref = Side("ft", right, {"a": "x"}, cost={"usd_per_million_tokens": 4.0})
    cand = Side("tuned", right, {"a": "x"}, cost={"usd_per_million_tokens": 1.0})
    assert certificate(ref, cand, kind="exact", margin_points=2)["cost_ratio"] == 0.25


def test_continuous_scores_use_a_paired_bootstrap_and_breakdowns_show_where_outcomes_differ():
    import numpy as np

    from tunesmith.evaluate.parity import Side, certificate
    from tunesmith.evaluate.stats import bootstrap_ci
    from tunesmith.evaluate.task_scoring import ExampleScore

    ref_s = [0.9, 0.8, 0.7, 1.0, 0.6, 0.9, 0.8, 0.75]
    cand_s = [0.85, 0.8, 0.72, 0.9, 0.6, 0.95, 0.7, 0.75]
    ids = [str(i) for i in range(len(ref_s))]
    ref = Side("ref", {i: ExampleScore(s, s >= 0.5) for i, s in zip(ids, ref_s)}, dict.fromkeys(ids, "x"))
    cand = Side("cand", {i: ExampleScore(s, s >= 0.5) for i, s in zip(ids, cand_s)}, dict.fromkeys(ids, "x"))
    p = certificate(ref, cand, kind="rouge_l", margin_points=5, n_resamples=500, seed=3)
    lo, hi = bootstrap_ci(np.array(cand_s) - np.array(ref_s), n_resamples=500, seed=3)
    assert p["method"].startswith("paired percentile bootstrap") and "pairs" not in p
    assert p["difference_ci_points"] == pytest.approx([100 * lo, 100 * hi])
    assert p["difference_points"] == pytest.approx(100 * (np.mean(cand_s) - np.mean(ref_s)))

    # labels: the candidate loses "urgency" on one example; "category" is the same everywhere (not listed)
    def label_score(urgency_got):
        labels = {"urgency": ("high", urgency_got), "category": ("billing", "billing")}
        fields = {k: want == got for k, (want, got) in labels.items()}
        return ExampleScore(float(all(fields.values())), all(fields.values()), fields=fields, labels=labels)

    ref = Side("ref", {"a": label_score("high"), "b": label_score("high")}, {"a": "high", "b": "high"})
    cand = Side("cand", {"a": label_score("low"), "b": label_score("high")}, {"a": "low", "b": "high"})
    p = certificate(ref, cand, kind="label", margin_points=5)
    assert p["fields"] == {"urgency": {"n": 2, "reference_accuracy": 1.0, "candidate_accuracy": 0.5,
                                       "difference_points": -50.0, "differing_examples": 1}}
    assert list(p["labels"]) == ["urgency=high"] and p["changed_examples"] == [
        {"id": "a", "reference": "high", "candidate": "low"}]


def test_local_answers_carry_latency_and_token_counts(tiny_model, tokenizer):
    from tunesmith.evaluate.generate import render_prompts
    from tunesmith.evaluate.run import local_generate

    convs = [[{"role": "user", "content": f"question {i}" + " more" * i}] for i in range(5)]
    answers = local_generate(tiny_model, tokenizer, 2)(convs, 4, "test")
    assert [a.prompt_tokens for a in answers] == [len(p) for p in render_prompts(tokenizer, convs)]
    assert all(a.latency_s is not None and 0 <= a.completion_tokens <= 4 for a in answers)
