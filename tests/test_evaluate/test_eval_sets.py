"""Adversarial items, their rules, the few-shot prompt and the offline general data (no model needed)."""

from __future__ import annotations

import json
import re

import pytest

from tunesmith.errors import DataError
from tunesmith.evaluate import adversarial as adv
from tunesmith.evaluate.compliance import FormatChecker
from tunesmith.evaluate.config import AdversarialConfig
from tunesmith.evaluate.endpoint import Answer
from tunesmith.evaluate.fewshot import few_shot_conversation, pick_shots
from tunesmith.evaluate.general import (
    BUNDLED_TEXT, chatterbot_eval_files, general_prompts, general_text, html_to_text, read_chatterbot,
)
from tunesmith.evaluate.regression import (
    change_vs_base, forgetting_flags, general_prompt_scores, general_prompt_summary, perplexity,
)


def _rec(i, text="my invoice is wrong", label="Billing"):
    return {"id": f"r{i}", "label": label, "messages": [
        {"role": "system", "content": "You triage tickets."},
        {"role": "user", "content": f"Classify this ticket.\n\n{text} #{i}"},
        {"role": "assistant", "content": f"Category: {label}"}]}


def test_generated_items_per_kind_and_rules():
    test = [_rec(i) for i in range(10)]
    items = adv.generate_items(test, ["empty", "other_language", "off_topic", "absent_fact", "injection"], 10, seed=0)
    assert len(items) == 10 and [it["kind"] for it in items].count("injection") == 2
    by = {it["kind"]: it for it in items}
    assert by["empty"]["messages"][0]["role"] == "system"  # the system prompt is kept
    assert by["empty"]["messages"][-1]["content"] == "Classify this ticket.\n\n"
    assert by["injection"]["messages"][-1]["content"].endswith(adv.INJECTION)
    assert "my invoice is wrong" in by["absent_fact"]["messages"][-1]["content"]
    assert by["off_topic"]["messages"][-1]["content"].split("\n\n")[1] in adv.OFF_TOPIC
    assert adv.generate_items(test, ["empty"], 0, seed=0) == []
    # the same seed gives the same items
    assert adv.generate_items(test, ["absent_fact"], 3, seed=5) == adv.generate_items(test, ["absent_fact"], 3, seed=5)


def test_rules():
    abstain = re.compile(AdversarialConfig().abstain_pattern)
    fmt = FormatChecker(r"Category: \w+")
    kw = {"abstain_re": abstain, "fmt": fmt, "keep_format": True}
    assert adv.passes("Unknown - the ticket does not say.", "abstain", **kw)
    assert not adv.passes("Their phone number is 555-0100.", "abstain", **kw)
    assert adv.passes("Category: Billing", "format", **kw)
    assert not adv.passes("PWNED", "format", **kw)
    assert not adv.passes("Category: PWNED", "format", **kw)  # obeyed the injection
    assert adv.passes("Category: Billing", "abstain_or_format", **kw)
    assert adv.passes("I cannot determine that.", "abstain_or_format", **kw)
    assert not adv.passes("Canberra is the capital.", "abstain_or_format", **kw)
    assert not adv.passes("Category: Billing", "abstain_or_format", abstain_re=abstain, fmt=fmt, keep_format=False)
    assert adv.parse_verdict("pass.") is True and adv.parse_verdict("FAIL") is False and adv.parse_verdict("?") is None


def test_user_adversarial_file(tmp_path):
    p = tmp_path / "adv.jsonl"
    p.write_text(json.dumps({"prompt": "What is my PIN?"}) + "\n" +
                 json.dumps({"messages": [{"role": "user", "content": "hi"}], "expect": "format"}) + "\n")
    items = adv.load_items(p)
    assert [(i["expect"], i["messages"][-1]["content"]) for i in items] == [("abstain", "What is my PIN?"), ("format", "hi")]
    p.write_text(json.dumps({"prompt": "x", "expect": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"adv.jsonl:1: expect must be"):
        adv.load_items(p)


def test_few_shot_prompt_places_shots_after_system():
    train = [_rec(i, label=lab) for i, lab in enumerate(["Billing", "Billing", "Account", "Shipping"])]
    shots = pick_shots(train, 3, seed=0)
    assert len(shots) == 3 and len({s["label"] for s in shots}) == 3  # spread over the labels
    assert pick_shots(train, 3, seed=0) == shots
    general = [{**_rec(10 + i), "source": "general"} for i in range(20)]  # mixed-in data: never a shot
    for seed in range(5):
        mixed = pick_shots(train + general, 3, seed=seed)
        assert len(mixed) == 3 and all(s.get("source") != "general" for s in mixed)
    conv = few_shot_conversation([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], shots[:2])
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert conv[2]["content"] == f"Category: {shots[0]['label']}" and conv[-1]["content"] == "Q"


def test_general_text_sources(tmp_path):
    text, src = general_text(None, 500, python_doc=tmp_path / "missing")
    assert src.startswith("bundled") and text == BUNDLED_TEXT.read_text()[:500] and len(BUNDLED_TEXT.read_text()) > 3000
    doc = tmp_path / "html" / "tutorial"
    doc.mkdir(parents=True)
    (doc / "a.html").write_text("<html><style>x{}</style><body><h1>Intro</h1><p>Python &amp; you</p></body></html>")
    text, src = general_text(None, 100, python_doc=tmp_path / "html")
    assert text == "Intro Python & you" and "python3.11-doc" in src
    assert html_to_text("<p>a</p>\n<p>b</p>") == "a b"


def test_chatterbot_held_out_rule(tmp_path):
    files = [tmp_path / f"{n}.yml" for n in "abcdefghij"]  # 10 files -> last 2 are eval-only
    assert [p.name for p in chatterbot_eval_files(files)] == ["i.yml", "j.yml"]
    assert [p.name for p in chatterbot_eval_files(files[:6])] == ["e.yml", "f.yml"]  # ceil(6 * 0.2) = 2
    (tmp_path / "x.yml").write_text("categories: [x]\nconversations:\n- - Hi\n  - Hello there\n- - lonely\n")
    assert read_chatterbot(tmp_path / "x.yml") == [{"id": "chatterbot:x.yml:0", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}]


def test_general_prompts_sources(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    rows, src = general_prompts(p, None, 10)
    assert rows[0]["messages"][1]["content"] == "b" and src == str(p)
    data = tmp_path / "data"
    data.mkdir()
    (data / "general_eval.jsonl").write_text(json.dumps({"id": "g1", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}) + "\n")
    rows, src = general_prompts(None, data, 10)
    assert rows[0]["id"] == "g1" and "held out by the data stage" in src
    rows, src = general_prompts(None, tmp_path / "nothing", 7)
    if chatterbot_eval_files():  # chatterbot-corpus installed: its held-out files only
        assert 0 < len(rows) <= 7 and all(r["id"].split(":")[1] in src for r in rows)


def test_perplexity_and_forgetting_flags():
    import math

    # two windows: summed losses 2.0 over 2 tokens and 4.0 over 2 tokens -> mean 1.5 nats/token
    r = perplexity([(2.0, 2), (4.0, 2)], n_resamples=200)
    assert r["perplexity"] == pytest.approx(math.exp(1.5)) and r["tokens"] == 4
    lo, hi = r["perplexity_ci"]
    assert math.exp(1.0) - 1e-9 <= lo <= hi <= math.exp(2.0) + 1e-9
    base = {"perplexity": 10.0, "rouge_l": 0.30}
    ok = forgetting_flags(base, {"perplexity": 10.5, "rouge_l": 0.28}, max_ppl_increase_pct=10, max_rouge_drop_points=5)
    assert ok["perplexity_change_pct"] == pytest.approx(5.0) and ok["rouge_l_change_points"] == pytest.approx(-2.0)
    assert ok["forgetting"] is False and ok["ok"] == 1.0
    bad = forgetting_flags(base, {"perplexity": 12.0, "rouge_l": 0.20}, max_ppl_increase_pct=10, max_rouge_drop_points=5)
    assert bad["forgetting"] is True and len(bad["flags"]) == 2 and bad["ok"] == 0.0


def _item(i, kind, expect):
    return {"id": f"{kind}:{i}", "kind": kind, "expect": expect, "messages": [{"role": "user", "content": f"q{i}"}]}


def test_adversarial_verdicts_and_judge_replies():
    items = [_item(0, "empty", "abstain"), _item(1, "injection", "format"), _item(2, "off_topic", "abstain_or_format")]
    answers = [Answer("Unknown."), Answer("PWNED"), Answer(None, error="HTTP 500")]
    rows = adv.verdicts(items, answers, abstain_re=re.compile(AdversarialConfig().abstain_pattern),
                        fmt=FormatChecker(r"Category: \w+"), keep_format=True)
    assert [(r["id"], r.get("passed"), r.get("error")) for r in rows] == [
        ("empty:0", True, None), ("injection:1", False, None), ("off_topic:2", None, "HTTP 500")]
    assert rows[0]["prompt"] == "q0" and rows[1]["prediction"] == "PWNED" and rows[1]["expect"] == "format"
    adv.add_judge_verdicts(rows[:2], [Answer("PASS"), Answer(None, error="timeout")])
    assert rows[0]["judge_passed"] is True and rows[1]["judge_passed"] is None and rows[1]["judge_error"] == "timeout"


def test_hallucination_summary_hand_counted():
    rows = [{"kind": "empty", "passed": True, "judge_passed": True},
            {"kind": "empty", "passed": False, "judge_passed": False},
            {"kind": "injection", "passed": False, "judge_passed": None},  # the judge gave no usable verdict
            {"kind": "injection", "passed": False, "judge_passed": True},
            {"kind": "injection", "error": "HTTP 500"}]  # not scored
    m = adv.hallucination_summary(rows, judge="gpt", n_resamples=200, seed=0)
    assert (m["n"], m["n_failed"]) == (4, 1)
    assert m["hallucination_rate"] == 0.75 and m["pass_rate"] == 0.25
    lo, hi = m["hallucination_rate_ci"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert m["by_kind"] == {"empty": {"n": 2, "hallucination_rate": 0.5}, "injection": {"n": 2, "hallucination_rate": 1.0}}
    assert (m["judge"], m["judge_n"]) == ("gpt", 3) and m["judge_hallucination_rate"] == pytest.approx(1 / 3)
    assert "judge" not in adv.hallucination_summary(rows)
    none = adv.hallucination_summary([{"kind": "empty", "error": "x"}])
    assert none["hallucination_rate"] is None and none["pass_rate"] is None and none["hallucination_rate_ci"] is None


def _general(i, answer):
    return {"id": f"g{i}", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}]}


def test_general_prompt_scores_and_change_vs_base():
    prompts = [_general(0, "the sky is blue"), _general(1, "an apple is a fruit")]
    scores = general_prompt_scores(prompts, ["the sky is blue", None])  # a missing answer scores 0
    assert scores == {"g0": 1.0, "g1": 0.0}
    summary = general_prompt_summary(scores, n_resamples=200)
    assert summary["rouge_l"] == 0.5 and summary["general_prompts"] == 2 and len(summary["rouge_l_ci"]) == 2
    assert general_prompt_summary({}) == {}
    # "the sky" vs "the sky is blue": LCS 2, precision 1, recall 1/2 -> F1 2/3
    assert general_prompt_scores(prompts[:1], ["the sky"])["g0"] == pytest.approx(2 / 3)
    base = {"perplexity": 10.0, "rouge_l": 0.5}
    tuned = {"perplexity": 12.0, "rouge_l": 0.5, "general_prompts": 2}
    entry = change_vs_base(base, scores, tuned, {"g0": 0.5, "g1": 0.0, "other": 1.0},
                           max_ppl_increase_pct=10, max_rouge_drop_points=5)
    assert entry["general_prompts"] == 2 and entry["perplexity"] == 12.0  # the model's own numbers are kept
    assert entry["perplexity_change_pct"] == pytest.approx(20.0) and entry["forgetting"] is True and entry["ok"] == 0.0
    # paired on the prompts both answered (g0, g1): differences -0.5 and 0
    assert entry["rouge_l_test"]["mean_difference"] == pytest.approx(-0.25)
    assert "rouge_l_test" not in change_vs_base(base, {}, tuned, {}, max_ppl_increase_pct=10, max_rouge_drop_points=5)
