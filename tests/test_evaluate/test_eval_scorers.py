"""Scorers, classification metrics, format compliance and statistics, with hand-checked numbers."""

from __future__ import annotations

import pytest

from tunesmith.errors import ConfigError
from tunesmith.evaluate import scorers
from tunesmith.evaluate.compliance import FormatChecker, load_schema
from tunesmith.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_permutation
from tunesmith.evaluate.task_scoring import (
    ExampleScore, TaskScorer, aggregate, classification_report, paired_comparison, pairwise_comparisons,
)

LABEL_RE = r"Urgency:\s*(?P<urgency>\w+)[\s\S]*?Category:\s*(?P<category>\w+)"


def test_exact_match_normalises_case_and_whitespace():
    assert scorers.exact_match("  Paris\n", "paris")
    assert scorers.exact_match("New   York", "new york")
    assert not scorers.exact_match("Paris.", "Paris")


def test_rouge_l_hand_checked():
    # LCS(the cat sat on the mat, the cat is on the mat) = "the cat on the mat" = 5 of 6 words each side
    assert scorers.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS = 2; P = 2/4, R = 2/2, F = 2*0.5*1/1.5
    assert scorers.rouge_l("a b c d", "a c") == pytest.approx(2 / 3)
    assert scorers.rouge_l("x y", "a b") == 0.0
    assert scorers.rouge_l("", "") == 1.0


def test_chrf_hand_checked():
    # 1-grams: 2 of 3 match; 2-grams: 1 of 2; 3-grams: 0 of 1; higher orders absent -> averaged over 3 orders
    # P = R = (2/3 + 1/2 + 0) / 3 = 7/18, and F-beta of P = R is P
    assert scorers.chrf("abc", "abd") == pytest.approx(7 / 18)
    assert scorers.chrf("a b", "ab") == 1.0  # whitespace is ignored
    assert scorers.chrf("xyz", "abc") == 0.0


def test_json_field_counts_hand_checked():
    ref = '{"name": "Ann", "age": 30, "city": "Oslo"}'
    pred = 'Here you go:\n```json\n{"name": "ann", "age": 31, "zip": "0150"}\n```'
    # name right (normalised); age wrong (fp + fn); zip extra (fp); city missing (fn)
    assert scorers.json_field_counts(pred, ref) == (1, 2, 2)
    assert scorers.json_field_counts("not json", ref) == (0, 0, 3)
    nested = '{"items": [{"sku": "A1"}, {"sku": "B2"}]}'
    assert scorers.json_field_counts('{"items": [{"sku": "A1"}]}', nested) == (1, 0, 1)


def test_json_fields_aggregate_precision_recall_f1():
    s = TaskScorer("json_fields")
    ref = '{"a": 1, "b": 2}'
    scores = [s('{"a": 1, "b": 2}', ref), s('{"a": 1, "b": 3}', ref), s('{"a": 1}', ref)]
    m = aggregate(scores, kind="json_fields", n_resamples=200)
    # tp = 2 + 1 + 1 = 4, fp = 0 + 1 + 0 = 1, fn = 0 + 1 + 1 = 2
    assert m["field_precision"] == pytest.approx(4 / 5)
    assert m["field_recall"] == pytest.approx(4 / 6)
    assert m["field_f1"] == pytest.approx(2 * 0.8 * (2 / 3) / (0.8 + 2 / 3))
    assert m["accuracy"] == pytest.approx(1 / 3)


def test_classification_report_hand_checked():
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", None)]
    rep = classification_report(pairs)
    a, b, c = (rep["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert rep["confusion"]["predicted"] == ["a", "b", "c", "(none)"]
    assert rep["confusion"]["matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]


def test_label_scorer_fields_and_aggregate():
    fmt = FormatChecker(r"Urgency: \w+\nCategory: \w+")
    s = TaskScorer("label", label_pattern=LABEL_RE, fmt=fmt)
    ref = "Urgency: High\nCategory: Billing"
    scores = [
        s("Urgency: High\nCategory: Billing", ref),  # right, compliant
        s("Urgency: high. Category: billing!", ref),  # right after normalisation, not compliant
        s("Urgency: Low\nCategory: Billing", ref),  # urgency wrong
        s("I think it is a billing problem", ref),  # no labels at all
    ]
    assert [x.correct for x in scores] == [True, True, False, False]
    m = aggregate(scores, kind="label", n_resamples=200)
    assert m["accuracy"] == 0.5
    assert m["urgency_accuracy"] == 0.5 and m["category_accuracy"] == 0.75
    assert m["format_compliance"] == 0.5
    assert m["classification"]["urgency"]["confusion"]["matrix"] == [[2, 1, 1]]  # high: high x2, low, (none)
    lo, hi = m["accuracy_ci"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_format_checker_json_schema(tmp_path):
    schema = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["yes", "no"]}}}
    fmt = FormatChecker(schema=schema)
    assert fmt('{"label": "yes"}') is True
    assert fmt('{"label": "maybe"}') is False and "label" in fmt.reason('{"label": "maybe"}')
    assert fmt("label: yes") is False and fmt.reason("label: yes") == "not valid JSON"
    assert FormatChecker()("anything") is None
    (tmp_path / "s.json").write_text('{"type": "object"}')
    assert load_schema("s.json", tmp_path) == {"type": "object"}
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_schema({"type": 12}, tmp_path)


def test_bootstrap_ci_known_cases():
    # continuous scores that never vary: no uncertainty the sample can show
    assert bootstrap_ci([0.8] * 50) == pytest.approx((0.8, 0.8))
    # a rate of 90/90 right is not certain: Wilson's 95% interval is [95.9%, 100%] (a bootstrap said [100, 100])
    lo, hi = bootstrap_ci([1.0] * 90)
    assert lo == pytest.approx(0.9591, abs=1e-4) and hi == 1.0
    # 0/374 wrong: at most ~1.0%
    assert bootstrap_ci([0.0] * 374)[1] == pytest.approx(0.0102, abs=1e-4)
    # paired differences are not a rate: they keep the bootstrap (identical answers: no difference either way)
    assert bootstrap_ci([0.0] * 40, differences=True) == (0.0, 0.0)
    # 1000 Bernoulli outcomes with mean 0.5: normal-theory 95% CI is 0.5 +- 1.96*sqrt(0.25/1000) = [0.469, 0.531]
    lo, hi = bootstrap_ci([1.0, 0.0] * 500, n_resamples=2000, seed=1)
    assert lo == pytest.approx(0.469, abs=0.006) and hi == pytest.approx(0.531, abs=0.006)
    assert bootstrap_ci([]) is None


def test_mcnemar_exact_hand_checked():
    # 9 examples only b gets right, 1 only a gets right, 10 both right: p = 2 * (C(10,0)+C(10,1)) / 2^10
    a = [True] * 10 + [False] * 9 + [True]
    b = [True] * 10 + [True] * 9 + [False]
    r = mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (1, 9)
    assert r["p_value"] == pytest.approx(22 / 1024)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_paired_permutation_and_comparison():
    assert paired_permutation([0.2, 0.4], [0.2, 0.4])["p_value"] == 1.0
    r = paired_permutation([0.1] * 30, [0.6] * 30, n_resamples=999)
    assert r["mean_difference"] == pytest.approx(0.5) and r["p_value"] == pytest.approx(1 / 1000)
    s = TaskScorer("exact")
    base = [s("x", "y")] * 10 + [s("y", "y")] * 10
    tuned = [s("y", "y")] * 20
    c = paired_comparison(base, tuned, kind="exact", n_resamples=300)
    assert c["delta_points"] == pytest.approx(50.0) and c["b_only"] == 10 and c["a_only"] == 0
    assert c["p_value"] == pytest.approx(2 / 2**10)
    assert c["delta_points_ci"][0] > 0


def test_pairwise_comparisons_pair_every_model_with_base_and_tuned_with_the_rest():
    def sc(*right):
        return {f"e{i}": ExampleScore(float(ok), ok) for i, ok in enumerate(right) if ok is not None}

    scores = {"base": sc(False, False, False, True), "few_shot": sc(True, False, False, True),
              "tuned": sc(True, True, True, True), "api": sc(True, True, None, None)}  # api: 2 requests failed
    comps = pairwise_comparisons(scores, kind="label", n_resamples=200)
    assert list(comps) == ["few_shot_vs_base", "tuned_vs_base", "api_vs_base", "tuned_vs_few_shot", "tuned_vs_api"]
    assert comps["tuned_vs_base"]["delta_points"] == pytest.approx(75.0) and comps["tuned_vs_base"]["b_only"] == 3
    assert comps["api_vs_base"]["n"] == 2 and comps["api_vs_base"]["delta_points"] == pytest.approx(100.0)
    assert comps["tuned_vs_api"]["delta_points"] == 0.0
    assert list(pairwise_comparisons({"tuned": scores["tuned"], "api": scores["api"]}, kind="label")) == ["tuned_vs_api"]
