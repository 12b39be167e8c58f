"""Splits, mixing, token lengths, consistency, reports and the pipeline stage."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tunesmith.data.config import DataConfig
from tunesmith.data.prepare import prepare_data
from tunesmith.data.prepared import load_prepared

from support.data_files import accounted, alpaca, prepare, write_lines

CATS = {"billing": 0.5, "shipping": 0.3, "technical": 0.2}


def _tickets(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        cat = "billing" if i % 10 < 5 else "shipping" if i % 10 < 8 else "technical"
        rows.append(alpaca(i, category=cat, urgency=["low", "high"][i % 2]))
    return rows


def test_stratified_seeded_split(tmp_path):
    p = write_lines(tmp_path / "t.jsonl", _tickets(500))
    data = prepare(p, stratify_field="category", validation_fraction=0.1, test_fraction=0.2)
    assert (len(data.train), len(data.validation), len(data.test)) == (350, 50, 100)
    for split, n in (("train", 350), ("validation", 50), ("test", 100)):
        c = Counter(r["label"] for r in data.split(split))
        for cat, share in CATS.items():
            assert c[cat] == round(n * share), (split, c)
    assert data.stats["labels_by_split"]["test"] == {"billing": 50, "shipping": 30, "technical": 20}
    # seeded: same seed, same split; another seed, another split
    again = prepare(p, stratify_field="category", validation_fraction=0.1, test_fraction=0.2)
    assert [r["id"] for r in again.test] == [r["id"] for r in data.test]
    other = prepare_data(DataConfig(train_file=str(p), stratify_field="category", validation_fraction=0.1, test_fraction=0.2, report=False),
                         None, None, seed=1, base_dir=tmp_path)
    assert {r["id"] for r in other.test} != {r["id"] for r in data.test}
    assert data.stats["consistency"]["labels"]["billing"] == {"count": 250, "share": 0.5}
    # the answers are "Answer number i: yes|no": prose, not label-like
    assert "answer_labels" not in data.stats["consistency"]


def test_classification_like_answers_report_their_label_set(tmp_path):
    rows = [{"instruction": f"Urgency of ticket {i}: " + " ".join(f"w{(i * 13 + k) % 997}" for k in range(20)),
             "output": ["low", "medium", "high", "high"][i % 4]} for i in range(80)]
    rows.append({"instruction": "Urgency of the odd ticket", "output": "It is probably quite urgent, I would say."})
    p = write_lines(tmp_path / "c.jsonl", rows)
    # the fast path (labels known from the first pass) and the per-record path (a JSON schema forces it)
    for extra in ({}, {"consistency": {"json_schema": {"type": "string"}}}):
        c = prepare(p, **extra).stats["consistency"]
        assert c["answer_labels"] == {"high": {"count": 40, "share": 0.5}, "low": {"count": 20, "share": 0.25},
                                      "medium": {"count": 20, "share": 0.25}}
        assert c["majority_format"] == "short" and c["format_outliers"] == 1 and c["format_outlier_ids"] == ["c.jsonl:81"]


def test_max_examples_is_accounted(tmp_path):
    p = write_lines(tmp_path / "t.jsonl", _tickets(100))
    data = prepare(p, tmp_path / "out", max_examples=40, validation_fraction=0.25)
    assert data.stats["kept"] == 40 and data.stats["unused_by_max_examples"] == 60
    assert data.stats["rows_read"] == accounted(data.stats) == 100
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    unused = {r["id"] for r in removed if r["kind"] == "unused"}
    kept = {r["id"] for r in data.train + data.validation + data.test}
    assert len(unused) == 60 and not (unused & kept) and len(unused | kept) == 100


def test_mixing_ratio_marker_and_no_leak_into_eval(tmp_path):
    p = write_lines(tmp_path / "t.jsonl", _tickets(400))
    data = prepare(p, stratify_field="category", validation_fraction=0.1, test_fraction=0.1, mix={"ratio": 0.25, "eval_fraction": 0.05})
    general = [r for r in data.train if r.get("source") == "general"]
    task = [r for r in data.train if r.get("source") != "general"]
    assert len(task) == 320
    assert len(general) == round(320 * 0.25 / 0.75) == 107
    assert len(general) / len(data.train) == pytest.approx(0.25, abs=0.002)
    assert all(r["id"].startswith("chatterbot:") for r in general)
    assert not any(r.get("source") == "general" for r in data.validation + data.test)
    # the pool excludes the conversations held out for evaluation (a few per topic: data.mix.split_chatterbot)
    pool = data.stats["mix"]["pool"]
    assert 1500 < pool < 2000 and data.stats["mix"]["added"] == 107 and data.stats["mix"]["eval"] == round(pool * 0.05)
    assert data.stats["mix"]["held_out"] > 20
    # general rows are shuffled into train, not appended at the end
    positions = [i for i, r in enumerate(data.train) if r.get("source") == "general"]
    assert positions[0] < len(data.train) // 2
    # the user's own general file
    own = write_lines(tmp_path / "general.jsonl", [{"prompt": f"general question {i}", "completion": f"general answer {i}"} for i in range(30)])
    data = prepare(p, mix={"ratio": 0.5, "source": str(own)})
    g = [r for r in data.train if r.get("source") == "general"]
    assert len(g) == 30 and data.stats["mix"]["shortfall"] == 370  # asked for 400, the file has 30: reported
    # general rows get PII redaction like task rows
    write_lines(own, [{"prompt": f"mail me at g{i}@x.org", "completion": "ok"} for i in range(5)])
    data = prepare(p, mix={"ratio": 0.5, "source": str(own)})
    g = [r for r in data.train if r.get("source") == "general"]
    assert data.stats["mix"]["pii_found"] == 5 and all(r["messages"][0]["content"] == "mail me at <EMAIL_1>" for r in g)


def test_length_check_with_the_real_tokenizer(tmp_path, tokenizer):
    long_input = " ".join(f"word{i}" for i in range(400))
    rows = [alpaca(i) for i in range(6)] + [{"instruction": "Summarise", "input": long_input, "output": "Short."}]
    p = write_lines(tmp_path / "l.jsonl", rows)
    cfg = DataConfig(train_file=str(p), validation_fraction=0, test_fraction=0, report=True, max_rejected_fraction=0.5)
    data = prepare_data(cfg, None, tmp_path / "out", seed=0, base_dir=tmp_path, tokenizer=tokenizer, max_seq_length=256, truncation="reject")
    assert data.stats["rejected_by_kind"] == {"too_long": 1}
    rej = data.rejected[0]
    assert rej["line"] == 7 and "over train.max_seq_length=256" in rej["reason"]
    n = int(rej["reason"].split()[0])
    messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(rej["raw"])["messages"]]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert n == len(ids)  # the same count as the chat template gives
    tl = data.stats["token_lengths"]
    assert tl["count"] == 6 and tl["max"] <= 256 and sum(tl["histogram"]["counts"]) == 6
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Token lengths" in html and "<svg" in html
    # general rows over the limit are dropped from the mixing pool and counted
    own = write_lines(tmp_path / "g.jsonl", [{"prompt": "hi", "completion": "hello"}, {"prompt": long_input, "completion": "x"}])
    mix_cfg = DataConfig(train_file=str(p), validation_fraction=0, test_fraction=0, report=False, max_rejected_fraction=0.5,
                         mix={"ratio": 0.5, "source": str(own)})
    mixed = prepare_data(mix_cfg, None, None, seed=0, base_dir=tmp_path, tokenizer=tokenizer, max_seq_length=256, truncation="reject")
    assert mixed.stats["mix"]["too_long_dropped"] == 1 and mixed.stats["general_train_examples"] == 1
    # truncate: the example is kept, cut at the start of the prompt, and counted
    data = prepare_data(cfg, None, None, seed=0, base_dir=tmp_path, tokenizer=tokenizer, max_seq_length=256, truncation="truncate")
    assert data.stats["truncated"] == 1 and data.stats["rejected"] == 0
    cut = next(r for r in data.train if "truncated_tokens" in r)
    assert cut["messages"][-1]["content"] == "Short."
    assert cut["messages"][0]["content"].endswith("word399") and not cut["messages"][0]["content"].startswith("Summarise")
    msgs = [{"role": m["role"], "content": m["content"]} for m in cut["messages"]]
    ids = tokenizer.apply_chat_template(msgs, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert len(ids) <= 256


def test_consistency_labels_json_schema_and_format_outliers(tmp_path):
    rows = [{"instruction": f"Extract from ticket {i} w{i}", "output": json.dumps({"category": "billing", "urgency": i % 3})} for i in range(20)]
    rows.append({"instruction": "Extract from ticket x", "output": json.dumps({"category": "billing"})})  # misses urgency
    rows.append({"instruction": "Extract from ticket y", "output": "billing, urgent"})  # not JSON
    p = write_lines(tmp_path / "j.jsonl", rows)
    schema = {"type": "object", "required": ["category", "urgency"], "properties": {"urgency": {"type": "integer"}}}
    data = prepare(p, consistency={"json_schema": schema}, dedup={"near": False})
    c = data.stats["consistency"]
    assert c["json_schema"]["checked"] == 22 and c["json_schema"]["valid"] == 20
    assert {f["id"] for f in c["json_schema"]["failures"]} == {"j.jsonl:21", "j.jsonl:22"}
    assert c["majority_format"] == "json" and c["format_outliers"] == 1 and c["format_outlier_ids"] == ["j.jsonl:22"]
    data = prepare(p, consistency={"json_schema": schema, "json_schema_action": "reject"}, dedup={"near": False})
    assert sorted(r["line"] for r in data.rejected) == [21, 22] and data.stats["kept"] == 20


def test_pipeline_run_data_writes_folder_and_reuses_it(tmp_path):
    from tunesmith.config import load_config
    from tunesmith.pipeline import _prepared, run_data

    write_lines(tmp_path / "tickets.jsonl", _tickets(200) + ['{"bad json'])
    (tmp_path / "c.yaml").write_text(
        "name: t\ndata:\n  train_file: tickets.jsonl\n  stratify_field: category\n  system_prompt: You are a support agent.\n"
        "  check_length: false\n"
    )
    cfg = load_config(tmp_path / "c.yaml")
    data = run_data(cfg)
    d = tmp_path / "runs" / "t" / "data"
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "rejected.jsonl", "removed.jsonl", "stats.json", "report.md", "report.html"):
        assert (d / name).is_file(), name
    s = json.loads((d / "stats.json").read_text())
    assert (s["rows_read"], s["rejected"], s["kept"]) == (201, 1, 200)
    assert (s["train_examples"], s["validation_examples"], s["test_examples"]) == (160, 20, 20)
    task_rows = [r for r in data.train if r.get("source") != "general"]
    assert all(r["messages"][0] == {"role": "system", "content": "You are a support agent."} for r in task_rows)
    loaded = load_prepared(d)
    # the default forgetting guard (kl for LoRA) mixes general rows into train: 20% of it, never into val/test
    task = [r for r in loaded.train if r.get("source") != "general"]
    assert len(task) == 160 and len(loaded.train) == 160 + 40 and loaded.stats["kept"] == 200
    # data.system_prompt is the task's: general rows keep their own context
    general = [r for r in loaded.train if r.get("source") == "general"]
    assert all(m["content"] != "You are a support agent." for r in general for m in r["messages"])
    assert "Label" in (d / "report.md").read_text()
    # unchanged config and input: reused; changed config: prepared again
    mtime = (d / "stats.json").stat().st_mtime_ns
    assert len(_prepared(cfg).test) == 20 and (d / "stats.json").stat().st_mtime_ns == mtime
    cfg2 = load_config(tmp_path / "c.yaml", ["data.test_fraction=0.2"])
    assert len(_prepared(cfg2).test) == 40


def test_chatterbot_mixing_never_uses_the_held_out_conversations():
    from tunesmith.data import mix

    held_out = {r["id"] for r in mix.chatterbot_held_out()}  # a dependency: installed with tunesmith
    mixed = {r["id"] for r in mix.load_chatterbot()}
    assert held_out and mixed and not (mixed & held_out)
