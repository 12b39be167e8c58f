"""Hostile and mistaken input through the whole `tunesmith data prepare` path: deeply nested JSON,
duplicate keys, a folder given as the input, content that does not match the file's extension.

Each case ends with a clean exit code and a reason (never a traceback), and every input row is
accounted for in stats.json: rows_read = kept + rejected + removed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.data.config import DataConfig
from tunesmith.data.prepare import prepare_data
from tunesmith.errors import DataError

from support.data_files import accounted, alpaca, prepare, write_lines

DEEP = 100_000


def _cli(tmp_path: Path, data: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`tunesmith data prepare` on a config whose data section is ``data`` (YAML, indented 2)."""
    (tmp_path / "c.yaml").write_text(f"name: r\ndata:\n  check_length: false\n{data}")
    src = str(Path(__file__).resolve().parents[2] / "src")
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", "data", "prepare", "c.yaml"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         check=False)
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]
    return res, tmp_path / "runs" / "r" / "data"


def _outputs(data_dir: Path) -> tuple[dict, dict[tuple[str, int], dict]]:
    stats = json.loads((data_dir / "stats.json").read_text())
    rejected = [json.loads(x) for x in (data_dir / "rejected.jsonl").read_text().splitlines()]
    return stats, {(Path(r["file"]).name, r["line"]): r for r in rejected}


def _chat(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_deeply_nested_json_is_rejected_per_row_in_jsonl_json_and_csv(tmp_path):
    deep_array = "[" * DEEP + "]" * DEEP
    deep_object = '{"a":' * DEEP + "1" + "}" * DEEP
    write_lines(tmp_path / "deep.jsonl", [
        alpaca(0),
        deep_array,  # line 2
        deep_object,  # line 3
        '{"instruction": "q", "output": "a", "extra": ' + deep_array + "}",  # line 4: deep inside a field
        alpaca(1),
        {"instruction": "an answer that is deeply nested JSON text", "output": deep_array},  # a string: kept
        alpaca(2),
    ])
    elements = [json.dumps(alpaca(3)), deep_array, deep_object, json.dumps(alpaca(4))]  # one per line: lines 2-5
    (tmp_path / "deep.json").write_text("[\n" + ",\n".join(elements) + "\n]\n")
    with open(tmp_path / "deep.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(_chat("q5", "a5"))])  # line 2
        w.writerow([deep_array])  # line 3
        w.writerow(["[" + deep_object + "]"])  # line 4
        w.writerow([json.dumps(_chat("q6", "a6"))])  # line 5
    res, data_dir = _cli(tmp_path, "  max_rejected_fraction: 0.9\n  files: [{path: deep.jsonl}, {path: deep.json}, {path: deep.csv}]\n")
    assert res.returncode == 0, res.stderr
    stats, rejected = _outputs(data_dir)
    assert {k: r["kind"] for k, r in rejected.items()} == {
        ("deep.jsonl", 2): "too_deep", ("deep.jsonl", 3): "too_deep", ("deep.jsonl", 4): "too_deep",
        ("deep.json", 3): "too_deep", ("deep.json", 4): "too_deep",  # and the element after them is still read
        ("deep.csv", 3): "too_deep", ("deep.csv", 4): "too_deep",
    }
    assert all("nested more than 100 levels" in r["reason"] and r["hint"] for r in rejected.values())
    assert rejected["deep.csv", 3]["field"] == "messages"
    assert stats["rows_read"] == 7 + 4 + 4 == accounted(stats)
    assert stats["kept"] == 8 and stats["rejected"] == 7


def test_nesting_that_parses_but_is_too_deep_to_pickle_is_rejected(tmp_path):
    """500 levels pass json.loads but broke later recursive work (here: sending the row to a worker process)."""
    mid = '{"instruction": "q", "output": "a", "extra": ' + "[" * 500 + "]" * 500 + "}"
    elements = [json.dumps(alpaca(i)) for i in range(4)] + [mid] + [json.dumps(alpaca(i)) for i in range(4, 8)]
    (tmp_path / "mid.json").write_text("[\n" + ",\n".join(elements) + "\n]\n")
    data = prepare(tmp_path / "mid.json", workers=2, dedup={"near": False})
    assert [(r["line"], r["kind"]) for r in data.rejected] == [(6, "too_deep")]
    assert data.stats["kept"] == 8 and data.stats["rows_read"] == accounted(data.stats) == 9


def test_duplicate_keys_are_rejected_naming_the_key(tmp_path):
    write_lines(tmp_path / "d.jsonl", [
        alpaca(0),
        '{"instruction": "q", "output": "first", "output": "second"}',  # line 2
        '{"messages": [{"role": "user", "content": "q", "content": "q2"}, {"role": "assistant", "content": "a"}]}',  # line 3
        alpaca(1),
    ])
    (tmp_path / "d.json").write_text('[\n{"instruction": "q", "instruction": "q2", "output": "a"},\n' + json.dumps(alpaca(2)) + "\n]\n")
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow(['[{"role": "user", "role": "assistant", "content": "q"}, {"role": "assistant", "content": "a"}]'])
        w.writerow([json.dumps(_chat("q3", "a3"))])
    res, data_dir = _cli(tmp_path, "  max_rejected_fraction: 0.9\n  format: mixed\n  files: [{path: d.jsonl}, {path: d.json}, {path: d.csv}]\n")
    assert res.returncode == 0, res.stderr
    stats, rejected = _outputs(data_dir)
    assert {k: (r["kind"], r["field"]) for k, r in rejected.items()} == {
        ("d.jsonl", 2): ("duplicate_key", "output"), ("d.jsonl", 3): ("duplicate_key", "content"),
        ("d.json", 2): ("duplicate_key", "instruction"), ("d.csv", 2): ("duplicate_key", "messages"),
    }
    assert "'output' appears more than once" in rejected["d.jsonl", 2]["reason"]
    assert "'role' appears more than once" in rejected["d.csv", 2]["reason"]
    assert stats["rows_read"] == 4 + 2 + 2 == accounted(stats) and stats["kept"] == 4


def test_a_directory_is_read_file_by_file(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    write_lines(folder / "b.jsonl", [alpaca(0), '{"broken', alpaca(1)])
    (folder / "a.json").write_text("[\n" + json.dumps(alpaca(2)) + ",\n" + json.dumps(alpaca(3)) + "\n]\n")
    with open(folder / "c.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["instruction", "output"], ["q4", "a4"]])
    (folder / "README.md").write_text("not data")
    write_lines(folder / ".hidden.jsonl", ['{"broken'])
    res, data_dir = _cli(tmp_path, "  train_file: inputs\n  max_rejected_fraction: 0.5\n")
    assert res.returncode == 0, res.stderr
    stats, rejected = _outputs(data_dir)
    assert [Path(p).name for p in stats["per_file"]] == ["a.json", "b.jsonl", "c.csv"]
    assert list(rejected) == [("b.jsonl", 2)]
    assert stats["rows_read"] == 6 == accounted(stats) and stats["kept"] == 5
    train = [json.loads(x) for x in (data_dir / "train.jsonl").read_text().splitlines()]
    ids = {r["id"] for r in train if r.get("source") != "general"}  # general rows, were the forgetting guard on, are not task rows
    assert ids == {"a.json:2", "a.json:3", "b.jsonl:1", "b.jsonl:3", "c.csv:2"}


def test_a_directory_without_data_files_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    res, _ = _cli(tmp_path, "  train_file: empty\n")
    assert res.returncode == 2
    assert "is a directory with no data files" in res.stderr and "does not exist" not in res.stderr


def test_jsonl_named_csv_is_a_clear_error(tmp_path):
    write_lines(tmp_path / "rows.csv", [alpaca(i) for i in range(5)])
    res, _ = _cli(tmp_path, "  train_file: rows.csv\n")
    assert res.returncode == 2
    assert "rows.csv" in res.stderr and "JSON Lines" in res.stderr and "container: jsonl" in res.stderr


def _parquet(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([alpaca(0)]), path)
    return path


@pytest.mark.parametrize(("name", "content", "looks"), [
    ("array.csv", json.dumps([alpaca(0)]), "looks like JSON"),
    ("lines.json", json.dumps(alpaca(0)) + "\n" + json.dumps(alpaca(1)) + "\n", "looks like JSON Lines"),
    ("lines.parquet", json.dumps(alpaca(0)) + "\n", "looks like JSON Lines"),
    ("table.jsonl", None, "looks like Parquet"),
    ("table.csv", None, "looks like Parquet"),
])
def test_content_that_contradicts_the_extension_is_named(tmp_path, name, content, looks):
    path = tmp_path / name
    if content is None:
        _parquet(tmp_path / "t.parquet").rename(path)
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=looks) as e:
        prepare(path)
    assert name in str(e.value)
    # with the right container set, the file is read
    container = {"array.csv": "json", "lines.json": "jsonl", "lines.parquet": "jsonl"}.get(name, "parquet")
    cfg = DataConfig(files=[{"path": name, "container": container}], validation_fraction=0, test_fraction=0, report=False)
    assert prepare_data(cfg, None, None, seed=0, base_dir=tmp_path).stats["kept"] >= 1


def test_mix_source_may_be_a_folder(tmp_path):
    general = tmp_path / "general"
    general.mkdir()
    write_lines(general / "a.jsonl", [{"prompt": f"general question {i}", "completion": f"general answer {i}"} for i in range(10)])
    write_lines(general / "b.jsonl", [{"prompt": f"other question {i}", "completion": f"other answer {i}"} for i in range(10)])
    p = write_lines(tmp_path / "t.jsonl", [alpaca(i) for i in range(40)])
    data = prepare(p, mix={"ratio": 0.3, "source": "general"})
    names = {r["id"].split(":")[1] for r in data.train if r.get("source") == "general"}
    assert names == {"a.jsonl", "b.jsonl"} and data.stats["mix"]["pool"] == 20
