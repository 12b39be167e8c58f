"""PII detection: precision and recall per type on a labelled file, consistent numbered placeholders
across a record, names found by cue only (never a role or department), the default that leaves names in
place, and the warning when redaction changes answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.data.pii import ALL_TYPES, PiiScanner, iban_ok, luhn_ok

from support.data_files import all_records, prepare, write_lines

LABELLED = Path(__file__).parents[1] / "fixtures" / "pii_labelled.jsonl"
ORIGINAL_ROWS = 82  # the first rows of the file: short texts; the rest are business e-mails and prompt/answer records


def _texts(row: dict) -> list[str]:
    return [row["text"]] if "text" in row else [m["content"] for m in row["messages"]]


def _score(rows: list[dict]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Per type: true positives, false positives, false negatives, counting each (type, value) of a row once."""
    scanner = PiiScanner()
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for row in rows:
        gold = {(e["type"], e["value"]) for e in row["entities"]}
        pred = {(f.type, f.value) for found in scanner.find_in_texts(_texts(row)) for f in found}
        for t, _ in gold & pred:
            tp[t] += 1
        for t, _ in pred - gold:
            fp[t] += 1
        for t, _ in gold - pred:
            fn[t] += 1
    return tp, fp, fn


def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


def test_precision_and_recall_on_the_original_short_texts():
    tp, fp, fn = _score(_labelled()[:ORIGINAL_ROWS])
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    precision = total_tp / (total_tp + total_fp)
    recall = total_tp / (total_tp + total_fn)
    assert total_tp + total_fn == 53  # labelled entities in those 82 texts (31 of them without PII)
    assert precision >= 0.97
    assert recall >= 0.9
    # the known misses: a name without a cue ("I am John"), a 7-digit local number without area code,
    # and a UK number in national format (phone_region is US)
    assert fn == Counter({"PERSON": 1, "PHONE": 2})
    for t in ("EMAIL", "CREDIT_CARD", "SSN", "IBAN", "IP_ADDRESS", "SECRET"):
        assert fp[t] == 0 and fn[t] == 0, t


def test_precision_and_recall_per_type_on_the_whole_file():
    """The table in docs/data.md ("PII") is this test's output (pytest -s)."""
    rows = _labelled()
    tp, fp, fn = _score(rows)
    print(f"\n{len(rows)} rows, {sum(not r['entities'] for r in rows)} without PII\n| type | entities | found | false positives | precision | recall |\n|---|---|---|---|---|---|")
    for t in ALL_TYPES:
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 1.0
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 1.0
        print(f"| {t} | {tp[t] + fn[t]} | {tp[t]} | {fp[t]} | {p:.2f} | {r:.2f} |")
    assert len(rows) == 153 and sum(tp.values()) + sum(fn.values()) == 96
    # validated types: no false positive and no miss on this sample
    for t in ("EMAIL", "CREDIT_CARD", "SSN", "IBAN", "IP_ADDRESS", "SECRET"):
        assert tp[t] > 0 and fp[t] == 0 and fn[t] == 0, t
    assert fp["PHONE"] == 0 and tp["PHONE"] / (tp["PHONE"] + fn["PHONE"]) >= 0.8
    # names, by cue only: the measured figures are why PERSON is report-only by default
    assert tp["PERSON"] / (tp["PERSON"] + fp["PERSON"]) >= 0.85
    assert tp["PERSON"] / (tp["PERSON"] + fn["PERSON"]) >= 0.8
    # known false positives: company or product names after a cue ("Regards,\nGlobex", "Hello Acme,",
    # "This is Google Chrome", {"customer": "Northwind Traders"}); known misses: names without a cue,
    # lower-case names, "Mr. and Mrs. Smith", "Maria's"
    assert fp == Counter({"PERSON": 4}) and fn == Counter({"PERSON": 6, "PHONE": 2})


@pytest.mark.parametrize("text", [
    "Dear Accounts Payable,\nplease find the invoice attached.",
    "Dear Team,\nthe numbers are in.",
    "Dear Customer Support,\nmy order is late.",
    "Dear Hiring Manager,\nI attach my CV.",
    "Dear Accounts Receivable Team,\nwe paid.",
    "Hello Billing Team,\nI was charged twice.",
    "Dear Contoso team,\nthe shipment left.",
    "Hi all,\ntimesheets are due.",
    "Thanks,\nThe Finance Team",
    "Best regards,\nAccounts Payable\nGlobex Ltd",
    "This is Urgent: the invoice is overdue.",
    "I'm writing to ask about my refund.",
    "Dear Mr. and Mrs. Smith,",
])
def test_roles_departments_and_sentences_are_not_names(text):
    assert PiiScanner(["PERSON"], report_only=[]).scan(text, redact=True) == (text, [])


@pytest.mark.parametrize(("text", "name"), [
    ("Hi, this is Maria Garcia from Northwind Traders.", "Maria Garcia"),
    ("I'm John Smith, the new office manager.", "John Smith"),
    ("I am Sofia Rossi and I look after the account.", "Sofia Rossi"),
    ("Hello, this is Tom from the billing office.", "Tom"),  # one word: only with "from/at/with/here/..." after it
    ("Dear Ms. Chen,\nthank you.", "Ms. Chen"),
    ("Best regards,\nDaniel Okafor\nAccounts Payable | Globex Ltd", "Daniel Okafor"),
    ("Thanks, Maria Garcia", "Maria Garcia"),
    ("From: Emily Clarke <emily.clarke@contoso.com>", "Emily Clarke"),
    ('{"customer_name": "Aiko Tanaka", "amount": 12}', "Aiko Tanaka"),
])
def test_names_after_a_cue_are_found(text, name):
    found = PiiScanner(["PERSON"]).find(text)
    assert [(f.type, f.value) for f in found] == [("PERSON", name)]


def test_same_entity_same_placeholder_across_the_record():
    scanner = PiiScanner(report_only=[])
    record = {"messages": [
        {"role": "user", "content": "Extract the sender as JSON.\n\nHi, this is Maria Garcia from Northwind (maria.garcia@northwind.com, "
                                    "415-555-0188). Copy ops@acme.io.\nBest,\nMaria"},
        {"role": "assistant", "content": '{"sender": "Maria Garcia", "email": "Maria.Garcia@northwind.com", "phone": "(415) 555-0188", '
                                         '"greeting": "Dear Ms. Garcia"}'},
    ]}
    n = scanner.apply(record, redact=True)
    prompt, answer = (m["content"] for m in record["messages"])
    assert prompt == ("Extract the sender as JSON.\n\nHi, this is <PERSON_1> from Northwind (<EMAIL_1>, <PHONE_1>). "
                      "Copy <EMAIL_2>.\nBest,\n<PERSON_1>")
    # the answer names the same person, address (other case) and number (other format): the same placeholders
    assert answer == '{"sender": "<PERSON_1>", "email": "<EMAIL_1>", "phone": "<PHONE_1>", "greeting": "Dear <PERSON_1>"}'
    assert n == 9 and scanner.counts["PERSON"] == 4 and scanner.counts["EMAIL"] == 3 and scanner.counts["PHONE"] == 2
    assert scanner.tally.rows_with_pii == 1 and scanner.tally.rows_with_pii_in_answer == 1 and scanner.tally.rows_answer_redacted == 1
    # numbers start again in the next record
    other = {"messages": [{"role": "user", "content": "mail b@x.org then a@x.org"}, {"role": "assistant", "content": "ok"}]}
    scanner.apply(other, redact=True)
    assert other["messages"][0]["content"] == "mail <EMAIL_1> then <EMAIL_2>"


def test_a_name_shared_by_two_people_is_not_guessed():
    scanner = PiiScanner(["PERSON"], report_only=[])
    record = {"text": "My name is Maria Garcia.\nCustomer: Maria Lopez\nMaria called twice."}
    scanner.apply(record, redact=True)
    assert record["text"] == "My name is <PERSON_1>.\nCustomer: <PERSON_2>\nMaria called twice."


def test_names_are_found_but_kept_by_default(tmp_path):
    rows = [
        {"instruction": "Dear Accounts Payable,\nplease pay invoice 7.\nThanks,\nPeter Novak", "output": "Sender: Peter Novak"},
        {"instruction": "Hi, this is Maria Garcia, maria@northwind.com. Who wrote this?", "output": "Maria Garcia <maria@northwind.com>"},
        {"instruction": "Dear Hiring Manager,\nI attach my CV.", "output": "HR"},
        {"instruction": "Nothing personal here", "output": "Good."},
    ]
    data = prepare(write_lines(tmp_path / "p.jsonl", rows), dedup={"near": False})
    by_prompt = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in all_records(data)}
    assert by_prompt["Dear Accounts Payable,\nplease pay invoice 7.\nThanks,\nPeter Novak"] == "Sender: Peter Novak"
    assert by_prompt["Hi, this is Maria Garcia, <EMAIL_1>. Who wrote this?"] == "Maria Garcia <<EMAIL_1>>"
    assert "Dear Hiring Manager,\nI attach my CV." in by_prompt
    pii = data.stats["pii"]
    assert pii["report_only"] == ["PERSON"] and "PERSON" not in pii["redacted_types"] and "EMAIL" in pii["redacted_types"]
    assert pii["counts"]["PERSON"] == 4 and pii["counts"]["EMAIL"] == 2
    assert pii["rows_with_pii"] == 2 and pii["rows_with_pii_in_answer"] == 2 and pii["rows_answer_redacted"] == 1


def test_warning_when_redaction_changes_answers(tmp_path):
    rows = [{"instruction": f"Ticket {i}: what is the contact address? Write to user{i}@corp.com", "output": f"user{i}@corp.com"} for i in range(3)]
    rows += [{"instruction": "Mail me at q@corp.com", "output": "Done."}, {"instruction": "q", "output": "a"}]
    p = write_lines(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    data = prepare(p, out, dedup={"near": False}, report=True)
    assert [r["messages"][1]["content"] for r in all_records(data) if "contact" in r["messages"][0]["content"]] == ["<EMAIL_1>"] * 3
    pii = data.stats["pii"]
    assert pii["rows_with_pii"] == 4 and pii["rows_with_pii_in_answer"] == 3 and pii["rows_answer_redacted"] == 3
    report = (out / "report.md").read_text()
    assert "redaction changed the answer of 3 rows" in report
    assert "redaction changed the answer of 3 rows" in (out / "report.html").read_text()
    # report mode changes nothing, and says how many answers hold personal data
    data = prepare(p, out, dedup={"near": False}, report=True, pii={"mode": "report"})
    pii = data.stats["pii"]
    assert pii["rows_with_pii_in_answer"] == 3 and pii["rows_answer_redacted"] == 0 and pii["redacted_types"] == []
    assert "3 rows have personal data in an answer that was left unchanged (mode report)" in (out / "report.md").read_text()


def test_unknown_type_in_the_config_names_the_key():
    from tunesmith.config import build_config
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.pii\.report_only.*NAME"):
        build_config({"data": {"train_file": "x.jsonl", "pii": {"report_only": ["NAME"]}}})


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")


def test_placeholders_and_counts_in_prepare(tmp_path):
    rows = [
        {"instruction": "Email me at a.b@example.com", "output": "Sure, I wrote to a.b@example.com."},
        {"instruction": "My card 4111 1111 1111 1111 was charged", "output": "Refunded."},
        {"messages": [{"role": "user", "content": "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"}, {"role": "assistant", "content": "Revoke it."}]},
        {"instruction": "Nothing personal here", "output": "Good."},
    ]
    p = write_lines(tmp_path / "p.jsonl", rows)
    data = prepare(p, dedup={"near": False}, format="mixed")
    text = json.dumps(all_records(data))
    assert "a.b@example.com" not in text and "4111" not in text and "sk-proj" not in text
    assert text.count("<EMAIL_1>") == 2 and text.count("<CREDIT_CARD_1>") == 1 and text.count("<SECRET_1>") == 1
    pii = data.stats["pii"]
    assert pii["counts"]["EMAIL"] == 2 and pii["counts"]["CREDIT_CARD"] == 1 and pii["counts"]["SECRET"] == 1
    assert pii["rows_with_pii"] == 3


def test_report_only_mode_keeps_text_and_counts(tmp_path):
    p = write_lines(tmp_path / "p.jsonl", [{"instruction": "Call (415) 555-2671 or mail x@y.org", "output": "ok"}])
    data = prepare(p, pii={"mode": "report"})
    assert all_records(data)[0]["messages"][0]["content"] == "Call (415) 555-2671 or mail x@y.org"
    assert data.stats["pii"]["counts"]["PHONE"] == 1 and data.stats["pii"]["counts"]["EMAIL"] == 1
    data = prepare(p, pii={"mode": "off"})
    assert data.stats["pii"]["counts"] == {}


def test_type_selection():
    s = PiiScanner(["EMAIL"])
    out, found = s.scan("mail x@y.org, call (415) 555-2671", redact=True)
    assert out == "mail <EMAIL_1>, call (415) 555-2671" and len(found) == 1
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError):
        PiiScanner(["EMAILS"])


def test_rejected_lines_are_scrubbed_too(tmp_path):
    p = write_lines(tmp_path / "r.jsonl", ['{"instruction": "mail bob@corp.com", "output": ', {"instruction": "q", "output": "a"}])
    data = prepare(p)
    assert data.rejected[0]["line"] == 1 and "bob@corp.com" not in data.rejected[0]["raw"] and "<EMAIL_1>" in data.rejected[0]["raw"]
    data = prepare(p, pii={"mode": "report"})
    assert "bob@corp.com" in data.rejected[0]["raw"]
