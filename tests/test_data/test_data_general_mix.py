"""General data for mixing that lasts: chatterbot-corpus holds out a small fixed set of conversations (not whole
topics), and a user's own general file is read and validated like task data."""

from __future__ import annotations

import json
from collections import Counter

from tunesmith.data import mix

from support.data_files import alpaca, prepare, write_lines


def _convs(topic: str, n: int) -> list[dict]:
    return [{"id": f"chatterbot:{topic}:{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                                        {"role": "assistant", "content": f"a{i}"}]}
            for i in range(1, n + 1)]


def test_held_out_set_is_small_per_topic_disjoint_and_deterministic():
    records = _convs("big.yml", 500) + _convs("small.yml", 2) + _convs("mid.yml", 20)
    pool, held = mix.split_chatterbot(records)
    assert Counter(r["id"].split(":")[1] for r in held) == {"big.yml": 3, "small.yml": 2, "mid.yml": 3}
    assert len(pool) == len(records) - 8  # whole topics are never held out: mixing keeps nearly everything
    assert not {r["id"] for r in pool} & {r["id"] for r in held}
    # the same held-out set whatever order the conversations come in
    again_pool, again_held = mix.split_chatterbot(list(reversed(records)))
    assert {r["id"] for r in again_held} == {r["id"] for r in held}
    assert {r["id"] for r in again_pool} == {r["id"] for r in pool}


def test_the_installed_corpus_keeps_most_conversations_for_mixing():
    everything = mix.chatterbot_records()  # chatterbot-corpus is a dependency
    pool, held = mix.load_chatterbot(), mix.chatterbot_held_out()
    assert len(pool) >= 1500 and len(pool) >= 0.9 * len(everything)
    assert 20 <= len(held) <= 3 * len({r["id"].split(":")[1] for r in everything})
    assert not {r["id"] for r in pool} & {r["id"] for r in held}
    assert len(pool) + len(held) == len(everything)
    assert [r["id"] for r in mix.chatterbot_held_out()] == [r["id"] for r in held]  # deterministic


def test_mixing_chatterbot_writes_the_held_out_set_for_evaluation_and_never_trains_on_it(tmp_path):
    p = write_lines(tmp_path / "t.jsonl", [alpaca(i) for i in range(200)])
    data = prepare(p, tmp_path / "out", mix={"ratio": 0.8})  # asks for 800 general rows: more than the old pool of ~600
    general = [r for r in data.train if r.get("source") == "general"]
    assert len(general) == 800 and "shortfall" not in data.stats["mix"]
    evaluated = [json.loads(x) for x in (tmp_path / "out" / "general_eval.jsonl").read_text().splitlines()]
    assert {r["id"] for r in evaluated} == {r["id"] for r in mix.chatterbot_held_out()}
    assert not {r["id"] for r in general} & {r["id"] for r in evaluated}


def test_a_users_general_file_is_mixed_and_its_bad_rows_quarantined(tmp_path):
    own = write_lines(tmp_path / "general.jsonl", [
        {"instruction": f"Name a colour, number {i}.", "output": f"Colour {i}: blue."} for i in range(12)
    ] + ['{"instruction": "broken', {"instruction": "no answer here"}])
    p = write_lines(tmp_path / "t.jsonl", [alpaca(i) for i in range(40)])
    data = prepare(p, tmp_path / "out", mix={"ratio": 0.2, "source": "general.jsonl"})
    general = [r for r in data.train if r.get("source") == "general"]
    assert len(general) == 10 and all(r["id"].startswith("general:general.jsonl:") for r in general)
    rejected = [json.loads(x) for x in (tmp_path / "out" / "general_rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [13, 14]
    assert all(r["file"].endswith("general.jsonl") and r["reason"] for r in rejected)
    assert data.stats["mix"]["unreadable_rows"] == 2
