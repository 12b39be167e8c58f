"""Invented and missing values on the test split, hand-counted; a model that invents dates is flagged."""

from __future__ import annotations

import json
import re

import pytest

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData
from tunesmith.evaluate import stats
from tunesmith.evaluate.task_scoring import TaskScorer, aggregate

from support.fake_openai import FakeOpenAI

LABEL_RE = r"Urgency:\s*(?P<urgency>[\w/]+)[\s\S]*?Category:\s*(?P<category>\w+)"

# (input, reference, answer): sender, date and amount of an email
EMAILS = [
    ("From Ann: please pay 30 EUR.", {"sender": "Ann", "date": None, "amount": 30},
     {"sender": "Ann", "date": "2024-05-01", "amount": 30}),  # date invented
    ("From Bo: 12 EUR owed.", {"sender": "Bo", "date": None, "amount": 12},
     {"sender": "Bo", "date": None, "amount": 12}),  # all right, date abstained
    ("From Cy: the amount is 7.", {"sender": "Cy", "date": None, "amount": 7},
     {"sender": "Cy", "amount": "unknown"}),  # date left out (abstained); amount "unknown": missing
    ("From Di, due 2024-03-12, 40 EUR.", {"sender": "Di", "date": "2024-03-12", "amount": 40},
     {"sender": "Di", "date": "2024-03-13", "amount": 40}),  # a date found nowhere in the email
    ("From Ed, sent 2024-03-01, due 2024-03-12, 5 EUR.", {"sender": "Ed", "date": "2024-03-12", "amount": 5},
     {"sender": "Ed", "date": "2024-03-01", "amount": 5}),  # the wrong date, but one the email has
    ("From Flo, due 2024-04-02, 9 EUR.", {"sender": "Flo", "date": "2024-04-02", "amount": 9},
     "I could not read this email."),  # not JSON: every value missing
]


def _score_emails():
    s = TaskScorer("json_fields")
    return [s(pred if isinstance(pred, str) else json.dumps(pred), json.dumps(ref), source=text)
            for text, ref, pred in EMAILS]


def test_json_invented_and_missing_values_hand_counted():
    scores = _score_emails()
    assert [s.values["date"].status for s in scores] == ["invented", "abstained", "abstained", "not_in_input", "wrong",
                                                          "missing"]
    assert scores[2].values["amount"].status == "missing" and scores[0].values["amount"].grounded
    m = aggregate(scores, kind="json_fields", n_resamples=200, max_invented_value_rate=0.05)
    v = m["values"]
    # 18 fields; 3 dates whose reference is null, 1 of them invented
    assert (v["fields"], v["null_reference"], v["invented"]) == (18, 3, 1)
    assert m["invented_value_rate"] == v["invented_rate"] == pytest.approx(1 / 3)
    # reference values found in the input: 6 senders, 6 amounts, 3 dates; one answer replaced by a date found nowhere
    assert (v["grounded"], v["not_in_input"], v["not_in_input_rate"]) == (15, 1, pytest.approx(1 / 15))
    assert (v["invented_any"], v["invented_any_of"], v["invented_any_rate"]) == (2, 18, pytest.approx(2 / 18))
    # 15 reference values; missing: Cy's amount ("unknown") and all three of Flo's
    assert (v["reference_value"], v["missing"]) == (15, 4) and m["missing_value_rate"] == pytest.approx(4 / 15)
    assert (v["right"], v["right_rate"]) == (11, pytest.approx(11 / 18))
    assert (v["examples"], v["fully_right"]) == (6, 1)  # only Bo's answer
    date = v["per_field"]["date"]
    assert (date["fields"], date["right"], date["null_reference"], date["invented"], date["grounded"],
            date["not_in_input"], date["reference_value"], date["missing"]) == (6, 2, 3, 1, 3, 1, 3, 1)
    lo, hi = m["invented_value_rate_ci"]
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0
    assert v["flagged"] is True and v["ok"] == 0.0
    # field precision / recall count as before: a left-out null date is a false negative there (tp 10, fp 4, fn 8)
    assert (m["field_precision"], m["field_recall"]) == (pytest.approx(10 / 14), pytest.approx(10 / 18))


def test_fields_a_reference_leaves_out_and_nested_nulls():
    s = TaskScorer("json_fields")
    refs = [{"sender": "A", "date": "2024-01-01"}, {"sender": "B"}, {"sender": "C"}, {"sender": "D", "shipping": None}]
    preds = [{"sender": "A", "date": "2024-01-01"}, {"sender": "B", "date": "2024-02-02"}, {"sender": "C"},
             {"sender": "D", "shipping": {"city": "Oslo", "zip": None}}]
    scores = [s(json.dumps(p), json.dumps(r)) for p, r in zip(preds, refs, strict=True)]
    # a null object answered with an object: its one non-null leaf is one invented value
    assert {k: o.status for k, o in scores[3].values.items()} == {"sender": "right", "shipping.city": "invented",
                                                                  "shipping.zip": "abstained"}
    v = aggregate(scores, kind="json_fields", n_resamples=200)["values"]
    # date: in the first reference only; the other three examples lack it: B invents one, C and D leave it out
    date = v["per_field"]["date"]
    assert (date["fields"], date["null_reference"], date["invented"], date["right"]) == (4, 3, 1, 3)
    assert v["flagged"] is False and v["max_invented_value_rate"] is None  # no threshold given: never flagged


def test_label_and_exact_abstentions_hand_counted():
    s = TaskScorer("label", label_pattern=LABEL_RE)
    refs = ["Urgency: unknown\nCategory: Billing", "Urgency: N/A\nCategory: Account", "Urgency: High\nCategory: Billing",
            "Urgency: Low\nCategory: Billing"]
    preds = ["Urgency: High\nCategory: Billing",  # answered where it should abstain: invented
             "Urgency: unknown\nCategory: Account",  # abstained (another abstain value)
             "Urgency: none\nCategory: Billing",  # abstained where it should answer: missing
             "Urgency: Low\nCategory: Billing"]
    scores = [s(p, r) for p, r in zip(preds, refs, strict=True)]
    m = aggregate(scores, kind="label", n_resamples=200)
    assert [x.values["urgency"].status for x in scores] == ["invented", "abstained", "missing", "right"]
    assert m["invented_value_rate"] == pytest.approx(1 / 2)  # 1 of 2 urgencies that should be abstained on
    assert m["missing_value_rate"] == pytest.approx(1 / 6)  # 1 of 2 urgencies + 4 categories with a value
    assert m["values"]["per_field"]["category"]["null_reference"] == 0
    assert m["urgency_accuracy"] == 0.25  # unchanged: "unknown" is not the reference's "n/a"

    e = TaskScorer("exact")
    scores = [e(p, r) for p, r in [("Paris", "Paris"), ("Lyon", "unknown"), ("Unknown.", ""), ("n/a", "N/A"),
                                   ("", "Rome")]]
    m = aggregate(scores, kind="exact", n_resamples=200)
    assert [x.values["answer"].status for x in scores] == ["right", "invented", "abstained", "abstained", "missing"]
    assert m["invented_value_rate"] == pytest.approx(1 / 3) and m["missing_value_rate"] == pytest.approx(1 / 2)
    # eval.abstain_values: what "no value" is written as in this task's references
    german = TaskScorer("exact", abstain_values=["nicht bekannt"])
    assert german("Berlin", "Nicht bekannt").values["answer"].status == "invented"
    assert e("Berlin", "Nicht bekannt").values["answer"].status == "wrong"


def test_bootstrap_ratio_ci():
    assert stats.bootstrap_ratio_ci([1, 1, 1], [2, 2, 2]) == (0.5, 0.5)
    assert stats.bootstrap_ratio_ci([0, 0], [0, 0]) is None
    # no invented value among 374 fields does not prove a 0% rate: Wilson's upper bound on the totals, ~1.0%
    lo, hi = stats.bootstrap_ratio_ci([0] * 90, [4] * 90)
    assert lo == 0.0 and hi == pytest.approx(0.0105, abs=2e-4)
    lo, hi = stats.bootstrap_ratio_ci([5] * 90, [5] * 90)
    assert hi == 1.0 and 0.99 < lo < 1.0
    lo, hi = stats.bootstrap_ratio_ci([1, 0, 0, 0] * 50, [1, 1, 1, 1] * 50, n_resamples=500)
    assert lo < 0.25 < hi
    with pytest.raises(ValueError):
        stats.bootstrap_ratio_ci([1], [1, 2])


def _email_task(n: int = 25, without_date: int = 5):
    """n emails (five fields each); the first ``without_date`` have no date (the reference's date is null)."""
    rows = []
    for i in range(n):
        date = None if i < without_date else f"2024-03-{i:02d}"
        ref = {"sender": f"Person{i}", "company": "Acme", "date": date, "amount": 100 + i, "topic": "invoice"}
        email = (f"Extract sender, company, date, amount and topic as JSON.\n\nHi, Person{i} from Acme here. "
                 f"Our invoice of {100 + i} EUR" + (f" is due on {date}." if date else " is attached."))
        rows.append((email, ref))
    return rows


def test_a_model_with_high_field_f1_that_invents_dates_is_flagged(tmp_path, capsys):
    from tunesmith.evaluate.run import evaluate_from_config

    rows = _email_task()
    answers = {}
    for i, (email, ref) in enumerate(rows):
        pred = dict(ref)
        if i < 4:
            pred["date"] = "2024-01-15"  # 4 of the 5 emails without a date get one
        if i == 10:
            pred["sender"] = "Mallory"  # a sender found nowhere in the email
        answers[email] = json.dumps(pred)
    test = [{"id": f"e{i}", "messages": [{"role": "user", "content": email},
                                         {"role": "assistant", "content": json.dumps(ref)}]}
            for i, (email, ref) in enumerate(rows)]
    with FakeOpenAI(answers) as server:
        cfg = build_config({"name": "emails", "output_dir": str(tmp_path / "runs"), "seed": 1, "eval": {
            "models": ["api"], "scorer": "json_fields", "bootstrap_samples": 200, "adversarial": {"enabled": False},
            "endpoints": [{"name": "api", "base_url": server.base_url, "model": "echo", "api_key_env": None}]}},
            base_dir=tmp_path)
        metrics = evaluate_from_config(cfg, PreparedData(train=[], validation=[], test=test))
    api = metrics["api"]
    # field F1: 120 of 125 fields right, 5 wrong (4 dates + 1 sender): 96%
    assert api["field_f1"] == pytest.approx(0.96)
    assert api["invented_value_rate"] == pytest.approx(4 / 5)
    assert (api["values"]["not_in_input"], api["values"]["grounded"]) == (1, 120)  # the input is the user message
    assert api["values"]["flagged"] is True
    saved = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert saved["api"]["values"]["per_field"]["date"]["invented"] == 4
    first = json.loads((cfg.run_dir / "eval" / "api.jsonl").read_text().splitlines()[0])
    assert first["values"]["date"] == "invented"

    md = (cfg.run_dir / "report.md").read_text()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = cells(next(line for line in md.splitlines() if line.startswith("| model | accuracy")))
    row = dict(zip(header, cells(next(line for line in md.splitlines() if line.startswith("| api |"))), strict=True))
    assert row["field f1"].startswith("96.0% [") and row["accuracy"].startswith("80.0% [")  # 20 of 25 fully right
    assert row["invented values"].startswith("80.0% [")  # next to the hallucination column
    assert header.index("invented values") == header.index("hallucination") + 1
    # the sender found nowhere in the input (1 of 120) is counted but is under the 5% limit: not part of the flag
    assert ("**Invented values flagged for api**: 4 of 5 fields whose reference has no value got one (80.0%), "
            "though its field F1 is 96.0% (above eval.max_invented_value_rate, 5.0%).") in md
    date_row = next(line for line in md.splitlines() if line.startswith("| date | api |"))
    assert "80.0% [" in date_row and "(4/5)" in date_row
    html = (cfg.run_dir / "report.html").read_text()
    assert "<b>Invented values flagged for api</b>" in html and "<td>date</td>" in html
    assert "e0 — score 0.0; invented: date</summary>" in html and "e10 — score 0.0; invented: sender</summary>" in html
    printed = " ".join(capsys.readouterr().out.split())
    assert "invented values flagged for api: 4 of 5 fields" in printed


def test_nothing_to_abstain_on_adds_no_column():
    from types import SimpleNamespace

    from tunesmith.evaluate.report_content import build_report

    s = TaskScorer("label", label_pattern=LABEL_RE)
    m = {"api": {**aggregate([s("Urgency: Low\nCategory: Billing", "Urgency: High\nCategory: Billing")],
                             kind="label", n_resamples=200), "n_failed": 0}}
    assert m["api"]["invented_value_rate"] is None and m["api"]["missing_value_rate"] == 0.0
    result = SimpleNamespace(examples=[], scores={}, adversarial_examples=[], general_scores={})
    report = build_report({"api": result}, m, title="r", show_failures=1)
    assert "invented values" not in report.headline.header
    assert not any(re.search("Invented", s.title) for s in report.sections) and report.invented_flags == ()
