"""PII detection: precision and recall on a labelled file, placeholders, report-only mode."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.data.pii import ALL_TYPES, PiiScanner, iban_ok, luhn_ok

from data_helpers import all_records, prepare, write_lines

LABELLED = Path(__file__).parent / "data" / "pii_labelled.jsonl"


def _score():
    scanner = PiiScanner()
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for line in LABELLED.read_text().splitlines():
        row = json.loads(line)
        gold = {(e["type"], e["value"]) for e in row["entities"]}
        _, found = scanner.scan(row["text"], redact=True)
        pred = {(f.type, f.value) for f in found}
        for t, _ in gold & pred:
            tp[t] += 1
        for t, _ in pred - gold:
            fp[t] += 1
        for t, _ in gold - pred:
            fn[t] += 1
    return tp, fp, fn


def test_precision_and_recall_on_the_labelled_file():
    tp, fp, fn = _score()
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    precision = total_tp / (total_tp + total_fp)
    recall = total_tp / (total_tp + total_fn)
    print(f"\nPII on {LABELLED.name}: precision {precision:.3f}, recall {recall:.3f} (tp {total_tp}, fp {total_fp}, fn {total_fn})")
    for t in ALL_TYPES:
        print(f"  {t:12s} tp {tp[t]:2d} fp {fp[t]:2d} fn {fn[t]:2d}")
    assert total_tp + total_fn == 53  # labelled entities in the file (82 texts, 31 of them without PII)
    assert precision >= 0.97
    assert recall >= 0.9
    # the known misses: a name without a cue ("I am John"), a 7-digit local number without area code,
    # and a UK number in national format (phone_region is US)
    assert fn == Counter({"PERSON": 1, "PHONE": 2})
    for t in ("EMAIL", "CREDIT_CARD", "SSN", "IBAN", "IP_ADDRESS", "SECRET"):
        assert fp[t] == 0 and fn[t] == 0, t


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
    assert text.count("<EMAIL>") == 2 and text.count("<CREDIT_CARD>") == 1 and text.count("<SECRET>") == 1
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
    assert out == "mail <EMAIL>, call (415) 555-2671" and len(found) == 1
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError):
        PiiScanner(["EMAILS"])


def test_rejected_lines_are_scrubbed_too(tmp_path):
    p = write_lines(tmp_path / "r.jsonl", ['{"instruction": "mail bob@corp.com", "output": ', {"instruction": "q", "output": "a"}])
    data = prepare(p)
    assert data.rejected[0]["line"] == 1 and "bob@corp.com" not in data.rejected[0]["raw"] and "<EMAIL>" in data.rejected[0]["raw"]
    data = prepare(p, pii={"mode": "report"})
    assert "bob@corp.com" in data.rejected[0]["raw"]
