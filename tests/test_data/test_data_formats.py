"""Every input format and file type becomes the same canonical record."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support.data_files import accounted, all_records, prepare, write_lines

OPENAI_MULTI = {
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "My parcel is late."},
        {"role": "assistant", "content": "Sorry! What is the order number?", "weight": 0},
        {"role": "user", "content": "It is 7781."},
        {"role": "assistant", "content": "Order 7781 ships tomorrow.", "weight": 1},
    ]
}


def test_openai_multiturn_with_system_and_weight(tmp_path):
    p = write_lines(tmp_path / "chat.jsonl", [OPENAI_MULTI, {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    data = prepare(p, dedup={"near": False})
    recs = sorted(all_records(data), key=lambda r: r["id"])
    assert [r["id"] for r in recs] == ["chat.jsonl:1", "chat.jsonl:2"]
    m = recs[0]["messages"]
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant"]
    assert [x.get("weight") for x in m] == [None, None, 0, None, 1]
    assert m[4]["content"] == "Order 7781 ships tomorrow."
    assert data.stats["formats"] == {"openai": 2}


def test_alpaca_with_input_system_and_default_system_prompt(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "Hallo", "output": "Hello", "system": "Be brief."},
        {"instruction": "Say hi", "output": "Hi"},
    ]
    data = prepare(write_lines(tmp_path / "a.jsonl", rows), system_prompt="Default system.", dedup={"near": False})
    recs = {r["id"]: r for r in all_records(data)}
    assert recs["a.jsonl:1"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert recs["a.jsonl:2"]["messages"][0] == {"role": "system", "content": "Default system."}


def test_sharegpt_completion_and_text(tmp_path):
    rows = [
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                           {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]},
        {"prompt": "2+2=", "completion": "4"},
        {"text": "Domain text about turbines and their maintenance."},
    ]
    p = write_lines(tmp_path / "mix.jsonl", rows)
    # auto: the file's format comes from its first row; rows of another format are rejected, saying so
    data = prepare(p, dedup={"near": False})
    assert [(r["line"], r["kind"]) for r in data.rejected] == [(2, "format_mismatch"), (3, "format_mismatch")]
    assert "completion format" in data.rejected[0]["reason"] and "sharegpt (from line 1)" in data.rejected[0]["reason"]
    assert data.stats["per_file"][str(p)] == {"rows": 3, "format": "sharegpt", "format_detected_at_line": 1}
    # mixed: detected row by row
    data = prepare(p, dedup={"near": False}, format="mixed")
    recs = {r["id"]: r for r in all_records(data)}
    assert [m["role"] for m in recs["mix.jsonl:1"]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert recs["mix.jsonl:2"]["messages"] == [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]
    assert recs["mix.jsonl:3"] == {"id": "mix.jsonl:3", "text": "Domain text about turbines and their maintenance."}
    assert data.stats["formats"] == {"sharegpt": 1, "completion": 1, "text": 1}


def test_json_array_csv_parquet_and_gzip_give_the_same_records(tmp_path):
    rows = [{"instruction": f"Q{i}", "output": f"A{i} answer"} for i in range(5)]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["instruction", "output"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    expected = sorted(r["output"] for r in rows)
    for name in ["a.json", "a.csv", "a.parquet", "a.jsonl.gz"]:
        data = prepare(tmp_path / name, dedup={"near": False})
        assert sorted(r["messages"][-1]["content"] for r in all_records(data)) == expected, name
        assert data.stats["rows_read"] == 5
    # line numbers point into each file: the JSON array's third object starts on line 6, the CSV's third row on line 4
    ids = {r["messages"][-1]["content"]: r["id"] for r in all_records(prepare(tmp_path / "a.json", dedup={"near": False}))}
    assert ids["A2 answer"] == "a.json:10"
    ids = {r["messages"][-1]["content"]: r["id"] for r in all_records(prepare(tmp_path / "a.csv", dedup={"near": False}))}
    assert ids["A2 answer"] == "a.csv:4"


def test_csv_with_openai_messages_cell(tmp_path):
    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(OPENAI_MULTI["messages"])])
    data = prepare(tmp_path / "c.csv")
    assert len(all_records(data)[0]["messages"]) == 5


def test_column_mapping_and_explicit_format(tmp_path):
    rows = [{"question": "What is 2+2?", "answer": "4", "topic": "math"}]
    p = write_lines(tmp_path / "qa.jsonl", rows)
    data = prepare(p, columns={"instruction": "question", "output": "answer"}, stratify_field="topic")
    rec = all_records(data)[0]
    assert rec["messages"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    assert rec["label"] == "math"
    # without the mapping the row's format cannot be told: rejected, with the keys named; no usable
    # row at all is an error, and the folder still holds rejected.jsonl to say why
    from tunesmith.errors import DataError

    with pytest.raises(DataError, match="no usable rows"):
        prepare(write_lines(tmp_path / "qa2.jsonl", rows * 2), tmp_path / "out")
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rej] == [1, 2] and all(r["kind"] == "unknown_format" and "answer" in r["reason"] for r in rej)
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_several_input_files(tmp_path):
    write_lines(tmp_path / "a.jsonl", [{"instruction": "Qa", "output": "Aa"}])
    write_lines(tmp_path / "b.jsonl", [{"q": "Qb", "a": "Ab"}])
    from tunesmith.data.config import DataConfig
    from tunesmith.data.prepare import prepare_data

    cfg = DataConfig(train_file="a.jsonl", files=[{"path": "b.jsonl", "format": "alpaca", "columns": {"instruction": "q", "output": "a"}}],
                     validation_fraction=0, test_fraction=0, report=False)
    data = prepare_data(cfg, None, None, seed=0, base_dir=tmp_path)
    assert sorted(r["id"] for r in data.train) == ["a.jsonl:1", "b.jsonl:1"]
    assert data.stats["rows_read"] == 2 == accounted(data.stats)


@pytest.mark.parametrize("fmt", ["openai", "sharegpt"])
def test_forced_format_rejects_rows_of_another_format(tmp_path, fmt):
    p = write_lines(tmp_path / "x.jsonl", [{"instruction": "Q", "output": "A"}, OPENAI_MULTI if fmt == "openai" else
                                           {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}])
    data = prepare(p, format=fmt)
    assert data.stats["rejected"] == 1 and data.stats["kept"] == 1
    assert data.rejected[0]["line"] == 1 and data.rejected[0]["field"] in ("messages", "conversations")


def test_openai_fixture_file(tmp_path):
    """tests/fixtures/openai_multiturn.jsonl: multi-turn, system messages and weight, as OpenAI's fine-tuning docs
    show them."""
    from pathlib import Path

    src = Path(__file__).parents[1] / "fixtures" / "openai_multiturn.jsonl"
    data = prepare(src, dedup={"near": False})
    recs = {r["id"]: r for r in all_records(data)}
    assert data.stats["rows_read"] == 3 == data.stats["kept"] and data.stats["formats"] == {"openai": 3}
    first = recs["openai_multiturn.jsonl:1"]["messages"]
    assert [(m["role"], m.get("weight")) for m in first] == [("system", None), ("user", None), ("assistant", 0), ("user", None), ("assistant", 1)]
    third = recs["openai_multiturn.jsonl:3"]["messages"]
    assert third[0] == {"role": "system", "content": "Answer in one word."} and "weight" not in third[-1]
    from tunesmith.data.records import prompt_messages, reference_answer

    assert reference_answer(recs["openai_multiturn.jsonl:1"]).startswith("Order 7781")
    assert len(prompt_messages(recs["openai_multiturn.jsonl:1"])) == 4


def test_worker_processes_give_the_same_result(tmp_path):
    from support.data_files import alpaca

    rows = [alpaca(i) for i in range(3000)] + [alpaca(5), '{"bad', alpaca(7, input="x")]
    p = write_lines(tmp_path / "w.jsonl", rows)
    one = prepare(p, validation_fraction=0.1, test_fraction=0.1, workers=1)
    two = prepare(p, validation_fraction=0.1, test_fraction=0.1, workers=2)
    assert two.stats["workers"] == 2
    for s in ("train", "validation", "test"):
        assert [r["id"] for r in one.split(s)] == [r["id"] for r in two.split(s)]
    assert one.rejected == two.rejected and one.stats["duplicates_by_kind"] == two.stats["duplicates_by_kind"]
