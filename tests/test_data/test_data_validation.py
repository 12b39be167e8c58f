"""Each kind of bad row is rejected with its line number and reason; nothing is lost or dropped silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.errors import DataError

from support.data_files import accounted, alpaca, prepare, write_lines

GOOD = [alpaca(i) for i in range(16)]

BAD_LINES = {
    # line content -> (kind, field or None, a word the reason must contain)
    '{"instruction": "Q", "output": ': ("malformed_json", None, "malformed JSON"),
    '["not", "an", "object"]': ("not_an_object", None, "object"),
    '{"instruction": 5, "output": "A"}': ("wrong_type", "instruction", "string"),
    '{"instruction": "   ", "output": "A"}': ("empty_field", "instruction", "whitespace"),
    '{"instruction": "Q", "output": ""}': ("empty_field", "output", "empty"),
    '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}': ("unknown_role", "messages[0].role", "robot"),
    '{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}': ("role_order", "messages[0].role", "expected a user turn"),
    '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, {"role": "assistant", "content": "z"}]}': (
        "role_order", "messages[1].role", "alternate"),
    '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "only a question"}]}': ("no_assistant", "messages", "no assistant"),
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}': ("no_assistant", "messages", "weight 0"),
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}': ("wrong_type", "messages[1].weight", "0 or 1"),
    '{"conversations": [{"from": "alien", "value": "x"}]}': ("unknown_role", "conversations[0].from", "alien"),
    '{"foo": "bar"}': ("unknown_format", None, "cannot tell the format"),
}


def test_each_error_kind_has_line_reason_and_nothing_is_lost(tmp_path):
    lines: list = []
    expected: dict[int, tuple] = {}
    for (bad, exp), good in zip(BAD_LINES.items(), GOOD, strict=False):
        lines.append(good)
        lines.append(bad)
        expected[len(lines)] = (bad, *exp)
    lines += GOOD[len(BAD_LINES):]
    lines.append("x" * 600)  # over the size limit below
    expected[len(lines)] = ("x" * 600, "line_too_long", None, "over the limit")
    p = write_lines(tmp_path / "bad.jsonl", lines)
    data = prepare(p, tmp_path / "out", max_line_bytes=500, dedup={"near": False}, format="mixed")
    rejected = {r["line"]: r for r in data.rejected}
    assert sorted(rejected) == sorted(expected)
    for line, (raw, kind, field, word) in expected.items():
        r = rejected[line]
        assert r["kind"] == kind, (line, r)
        assert r["field"] == field, (line, r)
        assert word in r["reason"], (line, r)
        assert r["hint"], r
        assert r["file"].endswith("bad.jsonl")
        if kind != "line_too_long":
            assert r["raw"] == raw
    s = data.stats
    assert s["rows_read"] == len(lines) == 30
    assert s["rejected"] == 14 and s["kept"] == 16
    assert s["rows_read"] == accounted(s)
    assert sum(s["rejected_by_kind"].values()) == 14
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["rejected"] == 14


def test_invalid_utf8_bom_and_crlf(tmp_path):
    p = tmp_path / "enc.jsonl"
    good = [json.dumps(alpaca(i)).encode() for i in range(4)]
    p.write_bytes(b"\xef\xbb\xbf" + good[0] + b"\r\n" + good[1] + b"\r\n" + b'{"instruction": "caf\xe9", "output": "x"}\r\n' + good[2] + b"\r\n" + good[3] + b"\n")
    data = prepare(p, dedup={"near": False})
    assert data.stats["kept"] == 4 and data.stats["rejected"] == 1
    assert data.rejected[0]["line"] == 3 and data.rejected[0]["kind"] == "invalid_utf8" and "UTF-8" in data.rejected[0]["reason"]
    warns = data.stats["warnings"][str(p)]
    assert warns["bom_removed"] == {"count": 1, "first_line": 1}
    assert warns["crlf_normalised"] == {"count": 3, "first_line": 1}
    # strict mode: the BOM line and CRLF lines are rejected instead of fixed
    data = prepare(p, dedup={"near": False}, fix_encoding=False)
    kinds = {r["line"]: r["kind"] for r in data.rejected}
    assert kinds == {1: "bom", 2: "crlf", 3: "invalid_utf8", 4: "crlf"}
    assert data.stats["kept"] == 1 and data.stats["rows_read"] == accounted(data.stats) == 5


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", "data", "prepare", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, check=False)


def test_threshold_decides_exit_code_without_traceback(tmp_path):
    lines = [alpaca(i) for i in range(8)] + ['{"broken', "\x00\x01 not json", '{"instruction": ""}']
    write_lines(tmp_path / "d.jsonl", lines)
    (tmp_path / "c.yaml").write_text("name: r\ndata:\n  train_file: d.jsonl\n  check_length: false\n  max_rejected_fraction: 0.2\n")
    res = _cli("c.yaml", cwd=tmp_path)  # 3 of 11 = 27% > 20%
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert "3 of 11 input rows" in res.stderr and "max_rejected_fraction" in res.stderr
    data_dir = tmp_path / "runs" / "r" / "data"
    assert len((data_dir / "rejected.jsonl").read_text().splitlines()) == 3
    assert not (data_dir / "train.jsonl").exists()  # a failed preparation leaves no split to train on
    res = _cli("c.yaml", "data.max_rejected_fraction=0.3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    stats = json.loads((data_dir / "stats.json").read_text())
    assert (stats["rejected"], stats["kept"], stats["status"]) == (3, 8, "ok")


def test_garbage_files_never_traceback(tmp_path):
    (tmp_path / "bin.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "arr.json").write_text('[{"instruction": "q", "output": "a"}, {"instruction": ')
    (tmp_path / "empty.csv").write_text("")
    for name in ("bin.jsonl", "arr.json"):
        (tmp_path / "c.yaml").write_text(f"name: r\ndata:\n  train_file: {name}\n  check_length: false\n")
        res = _cli("c.yaml", cwd=tmp_path)
        assert "Traceback" not in res.stderr + res.stdout, (name, res.stderr)
        assert res.returncode == 2 and "error:" in res.stderr, (name, res.stderr)
    # the truncated JSON array: its first object is read, the rest is one rejected entry at its line
    data = prepare(tmp_path / "arr.json")
    assert data.stats["kept"] == 1 and data.rejected[0]["line"] == 1 and "rest of the file" in data.rejected[0]["reason"]
    for name in ("empty.csv", "missing.jsonl"):  # user errors (DataError), which the CLI prints without a traceback
        with pytest.raises(DataError):
            prepare(tmp_path / name)


def test_csv_errors_have_line_numbers(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(
        b"instruction,output\n"
        b"Q1,A1\n"
        b'"multi\nline question",A2\n'  # lines 3-4: one row
        b"Q3,A3,extra\n"  # line 5: wrong column count
        b"caf\xe9,A4\n"  # line 6: invalid UTF-8
        b",A5\n"  # line 7: missing instruction
        b"Q6,A6\n"
    )
    data = prepare(p, dedup={"near": False})
    kinds = {r["line"]: r["kind"] for r in data.rejected}
    assert kinds == {5: "wrong_column_count", 6: "invalid_utf8", 7: "missing_field"}
    assert sorted(r["id"] for r in data.train) == ["t.csv:2", "t.csv:3", "t.csv:8"]
    assert data.stats["rows_read"] == accounted(data.stats) == 6


def test_fuzzed_rows_are_all_accounted_for(tmp_path):
    """Seeded random damage to valid rows of every format: no exception, every row kept or rejected."""
    import random

    rng = random.Random(0)
    seeds = [
        json.dumps(alpaca(0)),
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}]}',
        '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
        '{"prompt": "p", "completion": "c"}',
        '{"text": "some domain text"}',
    ]
    junk = ['"', "{", "}", "[", "]", ",", ":", "null", "1", '"role"', '"user"', '"weight": 7', "\\u0000", "\\ud800", "\u2028", "\x00"]
    lines = []
    for i in range(400):
        s = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(s) + 1)
            if rng.random() < 0.5 and s:
                del s[min(pos, len(s) - 1)]
            else:
                s.insert(pos, rng.choice(junk))
        lines.append("".join(s).replace("\n", " "))
    p = tmp_path / "fuzz.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    data = prepare(p, dedup={"exact": False, "near": False, "cross_split": False}, format="mixed")
    s = data.stats
    assert s["rows_read"] == 400 == accounted(s)
    assert s["rejected"] > 100 and s["kept"] > 10
    assert all(r["line"] and r["reason"] and r["kind"] for r in data.rejected)
    # kinds this damage produces, including lone surrogate escapes (\ud800) that cannot be written as UTF-8
    assert {"malformed_json", "invalid_unicode", "unknown_format"} <= set(s["rejected_by_kind"])
    # records holding U+2028 (a line separator for str.splitlines) still round-trip one per line
    assert any("\u2028" in json.dumps(r, ensure_ascii=False) for r in data.train)


def test_truncated_gzip_and_corrupt_parquet(tmp_path):
    import gzip

    blob = gzip.compress(("\n".join(json.dumps(alpaca(i)) for i in range(2000)) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    data = prepare(tmp_path / "cut.jsonl.gz")
    assert data.stats["kept"] > 100 and data.stats["rejected"] == 1
    assert data.rejected[0]["kind"] == "unreadable_file" and data.rejected[0]["line"] == data.stats["kept"] + 1
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + b"\x00" * 100 + b"PAR1")
    with pytest.raises(DataError, match="no usable rows"):
        prepare(tmp_path / "bad.parquet")
