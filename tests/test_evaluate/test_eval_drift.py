"""Drift from base's answers, the judge's preference, the general-prompts file, and the regression section of the
report (instructions followed, drift, their flags) in report.md and report.html."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tunesmith.errors import DataError
from tunesmith.evaluate.drift import (
    drift_scores, drift_summary, parse_preference, preference_messages, preference_summary, preferred, tuned_first,
)
from tunesmith.evaluate.general import general_prompts
from tunesmith.evaluate.prompt_file import read_general_prompts_file
from tunesmith.evaluate.regression import change_vs_base, general_prompt_scores, with_flags

from support.report_tables import HtmlTables, markdown_tables


def test_drift_is_zero_for_identical_answers_and_high_for_unrelated_ones():
    base = {"a": "The water cycle moves water from the sea to the sky and back.", "b": "Tea: boil water, then steep.",
            "c": None}
    same = drift_scores(base, dict(base))
    assert same == {"a": 0.0, "b": 0.0, "c": 0.0}  # no answer vs no answer: unchanged too
    unrelated = drift_scores(base, {"a": "Urgency: High\nCategory: Billing", "b": "Invoice 42 was charged twice.",
                                    "c": "Hello"})
    assert all(v >= 0.9 for v in unrelated.values()), unrelated
    reworded = drift_scores(base, {"a": "The water cycle moves water from the ocean to the sky and back again."})
    assert set(reworded) == {"a"} and 0 < reworded["a"] < 0.3  # only prompts both answered


def test_sampled_answers_are_seeded_differ_from_greedy_and_leave_the_global_random_state(tiny_model, tokenizer):
    """The drift reference samples base's answers: the same seed gives the same answers, another seed others."""
    import torch

    from tunesmith.evaluate.generate import generate_token_ids

    prompts = [tokenizer.encode(t) for t in ("Tell me about rivers.", "Name three colours.", "What is a cat?")]

    def run(**kw):
        return generate_token_ids(tiny_model, tokenizer, prompts, max_new_tokens=8, batch_size=2, **kw)

    greedy = run()
    assert run() == greedy
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    sampled = run(temperature=1.0, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert run(temperature=1.0, seed=5) == sampled
    assert sampled != greedy and run(temperature=1.0, seed=6) != sampled  # a random model's distribution is wide


def test_drift_summary_share_changed_and_flag_past_the_threshold():
    scores = {"p1": 0.0, "p2": 0.2, "p3": 0.8, "p4": 1.0}
    out, flags = drift_summary(scores, changed_above=0.5, max_mean_drift=0.5, n_resamples=200)
    assert out["drift"] == pytest.approx(0.5) and out["changed_share"] == 0.5 and out["drift_prompts"] == 4
    assert out["drift_ci"][0] <= 0.5 <= out["drift_ci"][1] and len(out["changed_share_ci"]) == 2
    assert flags == []  # at the threshold: not above it
    _, flags = drift_summary({**scores, "p5": 0.9}, changed_above=0.5, max_mean_drift=0.5, n_resamples=200)
    assert flags == ["drift from base 0.58 > 0.50"]
    assert drift_summary({}, changed_above=0.5, max_mean_drift=0.5) == ({}, [])
    # the drift flag joins the forgetting flags
    entry = change_vs_base({"perplexity": 10.0}, {}, {"perplexity": 10.1}, {}, max_ppl_increase_pct=10,
                           max_rouge_drop_points=5)
    assert entry["forgetting"] is False
    flagged = with_flags(entry, {"drift": 0.58}, flags)
    assert flagged["forgetting"] is True and flagged["ok"] == 0.0 and flagged["flags"] == flags
    assert flagged["perplexity_change_pct"] == entry["perplexity_change_pct"] and flagged["drift"] == 0.58


def test_judge_preference_in_the_models_terms():
    assert [parse_preference(t) for t in ("A", " b.", "TIE", "Answer B is better", "a tie", "", None, "neither")] == \
        ["A", "B", "TIE", "B", "TIE", None, None, None]
    assert preferred("A", model_first=True) == "model" and preferred("A", model_first=False) == "base"
    assert preferred("B", model_first=False) == "model" and preferred("TIE", True) == "tie" and preferred(None, True) is None
    order = [tuned_first(f"g{i}", seed=1) for i in range(40)]
    assert order == [tuned_first(f"g{i}", seed=1) for i in range(40)] and 10 < sum(order) < 30  # seeded, both ways
    msgs = preference_messages([{"role": "user", "content": "Name a fruit."}], "An apple.", None)
    assert "user: Name a fruit." in msgs[0]["content"] and "[Answer A]\nAn apple." in msgs[0]["content"]
    assert "[Answer B]\n(empty)" in msgs[0]["content"]
    s = preference_summary(["model", "base", "tie", "model", None], judge="gpt", n_resamples=200)
    assert (s["n"], s["n_unusable"], s["model_preferred"], s["base_preferred"], s["ties"]) == (4, 1, 2, 1, 1)
    assert s["win_rate"] == pytest.approx(2.5 / 4) and s["judge"] == "gpt"
    assert preference_summary([None], judge="gpt")["win_rate"] is None


def test_general_prompts_file_in_any_chat_format_answers_optional(tmp_path):
    rows = [{"prompt": "Say hello."},
            {"prompt": "Name a fruit.", "response": "An apple."},
            {"prompt": "Count to three.", "completion": "1 2 3"},
            {"instruction": "Describe tea.", "input": "Green tea"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]},
            {"id": "conv", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            {"conversations": [{"from": "human", "value": "Tell a joke."}]}]
    p = tmp_path / "general.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    recs = read_general_prompts_file(p)
    assert [r.get("no_reference", False) for r in recs] == [True, False, False, True, True, False, True]
    assert recs[3]["messages"][0]["content"] == "Describe tea.\n\nGreen tea" and recs[5]["id"] == "conv"
    assert recs[4]["messages"][0] == {"role": "system", "content": "Be brief."}
    # ROUGE-L against a reference only where there is one
    scores = general_prompt_scores(recs, ["Hello", "An apple.", "1 2 3", "x", "y", "Hello!", "z"])
    assert scores == {"general.jsonl:2": 1.0, "general.jsonl:3": 1.0, "conv": 1.0}
    # the file wins over every other source
    chosen, src = general_prompts(None, None, 3, general_prompts_file=p)
    assert len(chosen) == 3 and src == str(p)


@pytest.mark.parametrize("line, says", [
    ('{"text": "raw text"}', "general.jsonl:1: a 'text' row has no prompt"),
    ('{"messages": []}', "general.jsonl:1: 'messages' is empty"),
    ('[1, 2]', "general.jsonl:1: expected a JSON object, got list"),
    ('{"prompt": 3}', "general.jsonl:1:"),
    ('{"colour": "blue"}', "general.jsonl:1: cannot tell the format"),
])
def test_general_prompts_file_errors_name_the_line(tmp_path, line, says):
    p = tmp_path / "general.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(DataError) as e:
        read_general_prompts_file(p)
    assert says in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        read_general_prompts_file(tmp_path / "missing.jsonl")


def test_report_shows_instructions_followed_and_drift_with_their_flags():
    from tunesmith.evaluate.report_content import build_report, plain
    from tunesmith.evaluate.report_html import render_html
    from tunesmith.evaluate.report_markdown import render_markdown

    by_kind = {"json_object": {"n": 3, "passed": 3, "pass_rate": 1.0}, "lowercase": {"n": 3, "passed": 1,
                                                                                     "pass_rate": 1 / 3}}
    tuned_kind = {"json_object": {"n": 3, "passed": 0, "pass_rate": 0.0}, "lowercase": {"n": 3, "passed": 1,
                                                                                       "pass_rate": 1 / 3}}
    flags = ["instructions followed -50.0 points < -3", "drift from base 0.81 > 0.5"]
    metrics = {"base": {"n": 1, "accuracy": 0.0}, "tuned": {"n": 1, "accuracy": 1.0},
               "regression": {"text_source": "bundled", "text_chars": 100, "prompts_source": "chatterbot-corpus held-out files: trivia.yml",
                              "instruction_prompts": 6,
                              "thresholds": {"max_perplexity_increase_pct": 10, "max_rouge_drop_points": 5,
                                             "max_instruction_drop_points": 3, "max_mean_drift": 0.5,
                                             "drift_changed_above": 0.5},
                              "base": {"perplexity": 20.0, "instruction_pass_rate": 4 / 6,
                                       "instruction_pass_rate_ci": [0.33, 1.0], "instruction_by_kind": by_kind,
                                       "instruction_prompts": 6, "instruction_non_answers": 0},
                              "tuned": {"perplexity": 21.0, "perplexity_change_pct": 5.0,
                                        "instruction_pass_rate": 1 / 6, "instruction_pass_rate_ci": [0.0, 0.5],
                                        "instruction_by_kind": tuned_kind, "instruction_change_points": -50.0,
                                        "instruction_prompts": 6, "instruction_non_answers": 3,
                                        "instruction_change_points_ci": [-83.3, -16.7], "drift": 0.81,
                                        "drift_ci": [0.7, 0.9], "changed_share": 0.75, "changed_share_ci": [0.5, 1.0],
                                        "judge_preference": {"judge": "gpt", "n": 4, "n_unusable": 0,
                                                             "model_preferred": 1, "base_preferred": 3, "ties": 0,
                                                             "win_rate": 0.25, "win_rate_ci": [0.0, 0.75]},
                                        "forgetting": True, "flags": flags}}}
    results = {n: SimpleNamespace(examples=[], scores={}, adversarial_examples=[], general_scores={},
                                  drift={"p": 0.81} if n == "tuned" else {}) for n in ("base", "tuned")}
    report = build_report(results, metrics, title="r", show_failures=1)
    assert [[plain(c) for c in row][-1] for row in report.headline.rows] == ["66.7% [33.0, 100.0]",
                                                                            "16.7% [0.0, 50.0]"]
    assert report.forgetting == (("tuned", tuple(flags)),)
    assert [d.title for d in report.distributions][-1] == "regression prompts: drift from base's answer"
    md, page = render_markdown(report), render_html(report)
    tables = markdown_tables(md)
    regression = next(t for t in tables if t[0][:4] == ["model", "perplexity", "Δ", "instructions followed"])
    assert regression[2] == ["tuned", "21.00", "+5.0%", "16.7% [0.0, 50.0]", "-50.0 [-83.3, -16.7]",
                             "0.81 [0.70, 0.90]", "75.0% [50.0, 100.0]", "yes: " + "; ".join(flags)]
    assert regression[1][4:7] == ["-", "-", "-"]  # base vs itself: nothing
    per_kind = next(t for t in tables if t[0][0] == "constraint")
    assert per_kind[1:] == [["json_object", "3/3", "0/3"], ["lowercase", "1/3", "1/3"],
                            ["no answer (under 3 words: follows none)", "0/6", "3/6"]]
    assert HtmlTables(page).tables[1:] == tables
    assert "the share of verifiable instructions followed drops more than 3 points" in md
    assert "Judge gpt on 4 general prompts: prefers tuned 1, base 3, tie 0" in md
