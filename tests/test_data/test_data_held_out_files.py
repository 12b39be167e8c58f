"""data.validation_file / data.test_file: used as given (never re-split), validated like train, deduplicated against
train (the train row is the one removed), counted in stats.json, part of the fingerprint."""

from __future__ import annotations

import json
import os

from tunesmith.data.config import DataConfig
from tunesmith.data.inputs import fingerprint, resolve_inputs
from tunesmith.data.prepare import prepare_data

from support.data_files import accounted, alpaca, write_lines


def _prepare(tmp_path, **cfg):
    cfg.setdefault("max_rejected_fraction", 1.0)
    cfg.setdefault("report", True)
    return prepare_data(DataConfig(**cfg), None, tmp_path / "out", seed=0, base_dir=tmp_path)


def _one_word_changed(row: dict) -> dict:
    words = row["input"].split()
    words[0] = "zzz"
    return {**row, "input": " ".join(words)}


def _inputs(records: list[dict]) -> set[str]:
    return {r["messages"][-2]["content"] for r in records}


def test_held_out_files_are_used_as_given_and_never_re_split(tmp_path):
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(40)])
    write_lines(tmp_path / "val.jsonl", [alpaca(100 + i) for i in range(6)])
    write_lines(tmp_path / "test.jsonl", [alpaca(200 + i) for i in range(5)])
    data = _prepare(tmp_path, train_file="train.jsonl", validation_file="val.jsonl", test_file="test.jsonl",
                    validation_fraction=0.2, test_fraction=0.2)  # fractions of given splits are not used
    assert sorted(r["id"] for r in data.validation) == sorted(f"val.jsonl:{i}" for i in range(1, 7))
    assert sorted(r["id"] for r in data.test) == sorted(f"test.jsonl:{i}" for i in range(1, 6))
    assert sorted(r["id"] for r in data.train) == sorted(f"train.jsonl:{i}" for i in range(1, 41))
    held = data.stats["held_out_files"]
    assert held["validation"] == {"files": [str(tmp_path / "val.jsonl")], "examples": 6}
    assert held["test"] == {"files": [str(tmp_path / "test.jsonl")], "examples": 5}
    assert held["train_removed"] == {"exact_duplicate": 0, "near_duplicate": 0, "leakage": 0}
    assert data.stats["per_file"][str(tmp_path / "test.jsonl")]["split"] == "test"
    assert "Held-out files" in (tmp_path / "out" / "report.md").read_text()


def test_only_a_validation_file_the_train_file_gives_train_and_test(tmp_path):
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(50)])
    write_lines(tmp_path / "val.jsonl", [alpaca(100 + i) for i in range(4)])
    data = _prepare(tmp_path, train_file="train.jsonl", validation_file="val.jsonl", validation_fraction=0.1, test_fraction=0.2)
    assert {r["id"] for r in data.validation} == {f"val.jsonl:{i}" for i in range(1, 5)}
    assert len(data.test) == 10 and all(r["id"].startswith("train.jsonl:") for r in data.test)
    assert len(data.train) == 40 and all(r["id"].startswith("train.jsonl:") for r in data.train)
    assert "test" not in data.stats["held_out_files"]


def test_train_rows_duplicating_held_out_rows_are_removed_from_train(tmp_path):
    val = [alpaca(100 + i) for i in range(5)]
    test = [alpaca(200 + i) for i in range(5)]
    train = [alpaca(i) for i in range(30)]
    train += [dict(test[0]), dict(test[1])]  # exact copies of test rows
    train += [_one_word_changed(val[0])]  # a near copy of a validation row
    write_lines(tmp_path / "train.jsonl", train)
    write_lines(tmp_path / "val.jsonl", val)
    write_lines(tmp_path / "test.jsonl", test)
    data = _prepare(tmp_path, train_file="train.jsonl", validation_file="val.jsonl", test_file="test.jsonl",
                    dedup={"threshold": 0.7})
    assert len(data.test) == 5 and len(data.validation) == 5  # the held-out files keep every row
    assert len(data.train) == 30
    assert not (_inputs(data.train) & _inputs(data.test + data.validation))
    assert data.stats["held_out_files"]["train_removed"] == {"exact_duplicate": 2, "near_duplicate": 1, "leakage": 0}
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert {(r["id"], r["duplicate_of"]) for r in removed} >= {("train.jsonl:31", "test.jsonl:1"), ("train.jsonl:32", "test.jsonl:2"),
                                                                ("train.jsonl:33", "val.jsonl:1")}
    assert data.stats["rows_read"] == accounted(data.stats) == 43


def test_with_near_dedup_off_the_leakage_check_removes_the_train_row(tmp_path):
    test = [alpaca(200 + i) for i in range(4)]
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(20)] + [_one_word_changed(t) for t in test[:3]])
    write_lines(tmp_path / "test.jsonl", test)
    data = _prepare(tmp_path, train_file="train.jsonl", test_file="test.jsonl", validation_fraction=0.0,
                    dedup={"near": False, "threshold": 0.7})
    assert len(data.test) == 4 and len(data.train) == 20
    lk = data.stats["leakage"]
    assert lk["by_split"]["train"] == 3 and data.stats["leakage_removed"] == 3
    assert {e["near_duplicate_in_held_out_file"] for e in lk["examples"]} == {"test.jsonl:1", "test.jsonl:2", "test.jsonl:3"}
    assert data.stats["held_out_files"]["train_removed"]["leakage"] == 3
    assert data.stats["rows_read"] == accounted(data.stats)


def test_bad_rows_of_a_held_out_file_are_quarantined_with_their_line(tmp_path):
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(10)])
    write_lines(tmp_path / "val.jsonl", [alpaca(100), '{"instruction": "q", "output": ', alpaca(101), {"instruction": "q", "output": ""}])
    data = _prepare(tmp_path, train_file="train.jsonl", validation_file="val.jsonl")
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert sorted((r["file"].endswith("val.jsonl"), r["line"]) for r in rejected) == [(True, 2), (True, 4)]
    assert len(data.validation) == 2


def test_the_fingerprint_covers_the_held_out_files(tmp_path):
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(5)])
    test = write_lines(tmp_path / "test.jsonl", [alpaca(100)])
    cfg = DataConfig(train_file="train.jsonl", test_file="test.jsonl")
    before = fingerprint(cfg, resolve_inputs(cfg, tmp_path), {})
    write_lines(test, [alpaca(100), alpaca(101)])
    os.utime(test, ns=(1, 1))
    assert fingerprint(cfg, resolve_inputs(cfg, tmp_path), {}) != before
    assert [p.name for p, _ in resolve_inputs(cfg, tmp_path)] == ["test.jsonl", "train.jsonl"]


def test_a_preference_dpo_row_is_rejected_with_a_clear_reason(tmp_path):
    dpo = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
           "preferred_output": [{"role": "assistant", "content": "Hello!"}],
           "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}
    write_lines(tmp_path / "train.jsonl", [alpaca(i) for i in range(5)] + [dpo])
    _prepare(tmp_path, train_file="train.jsonl", validation_fraction=0.0, test_fraction=0.0)
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert row["line"] == 6 and row["kind"] == "preference_pair"
    assert "preference" in row["reason"] and "DPO" in row["reason"]
