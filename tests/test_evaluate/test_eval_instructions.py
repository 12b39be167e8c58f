"""Verifiable instructions: every checker on hand-written answers, the seeded prompts, pass rates and the flag."""

from __future__ import annotations

import pytest

from tunesmith.evaluate.instruction_checks import CHECKS, MIN_ANSWER_WORDS, follows
from tunesmith.evaluate.instructions import (
    check_answers, instruction_change, instruction_prompts, instruction_summary, templates,
)

# kind -> params, answers that follow the constraint, answers that do not
CASES = {
    "bullet_count": ({"n": 3},
                     ["- one\n- two\n- three", "Here you go:\n* a\n* b\n* c\n", "  - a\n\t- b\n• c  \n\nThat is all."],
                     ["- one\n- two", "- a\n- b\n- c\n- d", "1. a\n2. b\n3. c", "-a\n-b\n-c", ""]),
    "lowercase": ({}, ["all lowercase here.", "café au lait, naïve résumé\n", "  spaced  \n"],
                  ["Not lowercase", "almost all lowercasE", "ÉCOLE", "12345 !!", ""]),
    "uppercase": ({}, ["ALL CAPS HERE.", "ÉCOLE NAÏVE 123", "WATER CYCLE:\n- RAIN\n"],
                  ["ALL CAPS but one", "École", "123 456", ""]),
    "include_word": ({"word": "simple"}, ["It is simple.", "SIMPLE!", "a simple, clear answer", "(simple)"],
                     ["It is simply so.", "simpler is better", "nothing here", ""]),
    "no_commas": ({}, ["No commas here.", "Just words and dots. Fine.\n"],
                  ["one, two", "a，b (a full-width comma)", "", "   \n"]),
    "json_object": ({}, ['{"a": 1}', '  {"topic": "tea", "steps": ["boil", "pour"]}\n', '```json\n{"a": 1}\n```',
                         '{"ключ": "значение"}'],
                    ['[1, 2]', '"text"', 'Here: {"a": 1}', '{"a": 1} done', '{a: 1}', ""]),
    "max_words": ({"n": 5}, ["one two three four five", "Short answer.", "word — word", "  a b c d e  \n"],
                  ["one two three four five six", "", "— — —"]),
    "min_words": ({"n": 5}, ["one two three four five", "a b c d e f g", "café über naïve résumé jalapeño"],
                  ["one two three four", "a - b - c - d", ""]),
    "end_phrase": ({"phrase": "That is all."}, ["Tea is good. That is all.", "Tea.\nThat is all.  \n",
                                                 "tea. that is all."],
                   ["That is all. Bye.", "That is all", "That is all.\"", ""]),
    "start_word": ({"word": "Sure"}, ["Sure, here it is.", "  sure thing", "**Sure** - here", "\"Sure\", he said",
                                      "Sure"],
                   ["Surely not", "I am sure", "", "S ure"]),
    "paragraphs": ({"n": 2}, ["First part.\n\nSecond part.", "One\nstill one.\n  \nTwo.\n", "\n\nA.\n\n\n\nB.\n\n"],
                   ["Only one paragraph.", "One.\nTwo on the next line.", "A.\n\nB.\n\nC.", ""]),
    "quoted": ({}, ['"Wrapped in quotes."', '  "with trailing space"  \n', "“curly quotes”"],
               ['Not "quoted"', '"unbalanced', '""', '"  "', "“mixed\"", ""]),
    "title": ({}, ["<<The Water Cycle>>\nWater moves.", "Intro <<Title>> here", "<<Café>>"],
              ["<Title>", "<< >>", "<<>>", "No title", "<<broken\ntitle>>"]),
    "postscript": ({}, ["Answer.\n\nP.S. Drink water.", "Answer.\np.s. lower case", "Answer.\n  P. S. spaced"],
                   ["Answer. PS no dots", "Answer with P.S. mid-line", "", "PPS. no"]),
}


def test_every_kind_has_a_checker_a_template_and_cases():
    assert len(CHECKS) >= 10
    assert set(CASES) == set(CHECKS) == set(templates()["constraints"])


@pytest.mark.parametrize("kind", sorted(CASES))
def test_checker_on_hand_written_answers(kind):
    params, good, bad = CASES[kind]
    check = CHECKS[kind]
    for answer in good:
        assert check(answer, **params), (kind, answer)
    for answer in bad:
        assert not check(answer, **params), (kind, answer)
    assert not follows(kind, None, params)  # no answer follows nothing


# the constraint holds for each; with fewer than MIN_ANSWER_WORDS words it is a label, not an answer
LABEL_ANSWERS = {"no_commas": ({}, "RT-TECH-3"), "uppercase": ({}, "RT-SALE-1"), "max_words": ({"n": 15}, "billing"),
                 "lowercase": ({}, "billing high"), "quoted": ({}, '"billing"'), "json_object": ({}, '{"a": 1}'),
                 "start_word": ({"word": "Sure"}, "Sure."), "include_word": ({"word": "simple"}, "Simple!")}


@pytest.mark.parametrize("kind", sorted(LABEL_ANSWERS))
def test_a_label_follows_no_instruction_however_well_it_fits_the_constraint(kind):
    """A narrow fine-tune that answers every general prompt with its task label must not pass as following them."""
    params, label = LABEL_ANSWERS[kind]
    assert MIN_ANSWER_WORDS == 3
    assert CHECKS[kind](label, **params)
    assert not follows(kind, label, params)
    answer = {"no_commas": "RT-TECH-3 is the code.", "uppercase": "THE CODE IS RT-SALE-1",
              "max_words": "billing is the answer", "lowercase": "billing high today", "quoted": '"billing is late"',
              "json_object": '{"topic": "tea", "steps": 2}', "start_word": "Sure, here goes.",
              "include_word": "It is simple."}[kind]
    assert follows(kind, answer, params)  # three words of it are an answer, and the constraint decides


def test_prompts_are_seeded_deterministic_and_cover_every_kind():
    a, b = instruction_prompts(40, seed=3), instruction_prompts(40, seed=3)
    assert a == b and len(a) == 40 and len({p["id"] for p in a}) == 40
    assert instruction_prompts(40, seed=4) != a
    kinds = [p["kind"] for p in a]
    assert set(kinds) == set(CHECKS) and max(kinds.count(k) for k in set(kinds)) - min(
        kinds.count(k) for k in set(kinds)) <= 1  # dealt in turn: 40 over 14 kinds, 2 or 3 each
    by_kind = {p["kind"]: p for p in a}
    text = by_kind["max_words"]["messages"][0]["content"]
    assert text.endswith(f"Answer in at most {by_kind['max_words']['params']['n']} words.")
    assert by_kind["include_word"]["params"]["word"] in by_kind["include_word"]["messages"][0]["content"]
    assert all(len(p["messages"]) == 1 and p["messages"][0]["role"] == "user" for p in a)
    assert instruction_prompts(0, seed=3) == []


def test_pass_rate_per_kind_and_change_vs_base_with_its_flag():
    prompts = [p for p in instruction_prompts(28, seed=0) if p["kind"] in ("lowercase", "uppercase")]
    assert len(prompts) == 4
    answers = ["all lower case" if p["kind"] == "lowercase" else "Mixed Case Words" for p in prompts]
    rows = check_answers(prompts, answers)
    assert [r["passed"] for r in rows] == [p["kind"] == "lowercase" for p in prompts]
    summary = instruction_summary(rows, n_resamples=200)
    assert summary["instruction_pass_rate"] == 0.5 and summary["instruction_prompts"] == 4
    assert summary["instruction_by_kind"] == {"lowercase": {"n": 2, "passed": 2, "pass_rate": 1.0},
                                              "uppercase": {"n": 2, "passed": 0, "pass_rate": 0.0}}
    assert instruction_summary([]) == {}
    assert summary["instruction_non_answers"] == 0
    labels = check_answers(prompts, ["RT-TECH-3", "billing high", None, "all lower case"])  # a collapsed model
    assert instruction_summary(labels, n_resamples=200)["instruction_non_answers"] == 3

    base = {f"p{i}": True for i in range(40)}
    one_lost = {**base, "p0": False}  # -2.5 points: within the default 3
    out, flags = instruction_change(base, one_lost, max_drop_points=3.0, n_resamples=200)
    assert out["instruction_change_points"] == pytest.approx(-2.5) and flags == []
    lo, hi = out["instruction_change_points_ci"]
    assert lo <= -2.5 <= hi <= 0
    two_lost = {**one_lost, "p1": False}  # -5 points: past it
    out, flags = instruction_change(base, two_lost, max_drop_points=3.0, n_resamples=200)
    assert flags == ["instructions followed -5.0 points < -3"] and out["instruction_test"]["a_only"] == 2
    assert instruction_change(base, two_lost, max_drop_points=5.0)[1] == []  # exactly at the threshold: not flagged
    assert instruction_change(base, {}, max_drop_points=3.0) == ({}, [])
