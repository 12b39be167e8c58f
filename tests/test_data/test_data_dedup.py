"""Exact, near and cross-split duplicates."""

from __future__ import annotations

import json
import random

import numpy as np

from tunesmith.data.dedup import MinHasher, cross_matches, find_near_duplicates, normalise

from support.data_files import accounted, all_records, alpaca, prepare, write_lines

WORDS = [f"word{i}" for i in range(3000)]


def _texts(n: int, length: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=length)) for _ in range(n)]


def _jaccard(a: str, b: str, k: int = 3) -> float:
    def sh(t):
        w = normalise(t).split()
        return {tuple(w[i : i + k]) for i in range(max(1, len(w) - k + 1))}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def test_minhash_estimates_jaccard():
    texts = _texts(200)
    rng = random.Random(1)
    pairs = []
    for i in range(100):
        words = texts[i].split()
        for _ in range(rng.randint(0, 6)):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        pairs.append((texts[i], " ".join(words)))
    mh = MinHasher(num_perm=128, shingle=3)
    a = mh.signatures([p[0] for p in pairs])
    b = mh.signatures([p[1] for p in pairs])
    est = (a == b).mean(axis=1)
    true = np.array([_jaccard(x, y) for x, y in pairs])
    assert np.abs(est - true).mean() < 0.05
    # batch and single-row signatures agree
    assert (mh.signatures([pairs[3][1]])[0] == b[3]).all()


def test_near_duplicate_clusters_keep_the_first_row():
    texts = _texts(500, seed=2)
    texts[300] = texts[10].replace(texts[10].split()[20], "changed", 1)  # one word of 40: J ~ 0.86
    texts[301] = texts[10] + " ."  # differs only in punctuation: identical after normalisation
    texts[400] = " ".join(texts[10].split()[:20] + texts[11].split()[:20])  # half of it: J ~ 0.3, not a duplicate
    sigs = MinHasher(64, 3).signatures(texts)
    nd = find_near_duplicates(sigs, 0.8)
    assert sorted(np.nonzero(nd.is_duplicate)[0].tolist()) == [300, 301]
    assert nd.rep[300] == 10 and nd.rep[301] == 10
    assert nd.similarity[301] == 1.0


def test_exact_near_and_prompt_duplicates_in_prepare(tmp_path):
    rows = [alpaca(i) for i in range(60)]
    rows.append(dict(rows[3]))  # exact copy -> line 61
    rows.append({**rows[4], "input": rows[4]["input"].upper() + "  "})  # same after normalisation -> line 62
    rows[5]["input"] = _texts(1, 50, seed=9)[0]
    near = dict(rows[5])
    w = near["input"].split()
    w[25] = "different"
    near["input"] = " ".join(w)
    rows.append(near)  # one word changed -> near duplicate, line 63
    rows.append({**rows[7], "output": "A different answer to the same prompt"})  # same prompt -> line 64
    p = write_lines(tmp_path / "d.jsonl", rows)
    data = prepare(p, tmp_path / "out", dedup={"threshold": 0.7})
    s = data.stats
    assert s["duplicates_by_kind"] == {"exact_example": 2, "exact_prompt": 1, "near_example": 1}
    assert s["kept"] == 60 and s["rows_read"] == 64 == accounted(s)
    removed = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "removed.jsonl").read_text().splitlines())}
    assert removed["d.jsonl:61"]["duplicate_of"] == "d.jsonl:4"
    assert removed["d.jsonl:62"]["duplicate_of"] == "d.jsonl:5"
    assert removed["d.jsonl:63"]["kind"] == "near_duplicate" and removed["d.jsonl:63"]["duplicate_of"] == "d.jsonl:6"
    assert removed["d.jsonl:64"]["scope"] == "prompt" and removed["d.jsonl:64"]["duplicate_of"] == "d.jsonl:8"
    # dedup can be switched off: then all 64 rows are kept
    data = prepare(p, dedup={"exact": False, "near": False})
    assert data.stats["kept"] == 64 and data.stats["duplicates"] == 0


def test_cross_matches_finds_only_similar_rows():
    src = _texts(300, seed=5)
    queries = _texts(50, seed=6)
    queries[7] = src[123]
    queries[9] = src[200].replace(src[200].split()[30], "x", 1)
    sigs = MinHasher(64, 3).signatures(queries + src)  # queries first, then the reference rows
    m, sim = cross_matches(sigs, np.arange(50), np.arange(50, 350), 0.8)
    assert {i: int(m[i]) for i in np.nonzero(m >= 0)[0]} == {7: 123, 9: 200}
    assert sim[7] == 1.0


def test_leakage_between_splits_is_found_and_removed(tmp_path):
    rows = [alpaca(i) for i in range(200)]
    for i in range(50):  # 50 near-duplicate pairs (one word changed: Jaccard ~0.85, well above 0.7)
        r = dict(rows[i])
        w = r["input"].split()
        w[0] = "zzz"
        r["input"] = " ".join(w)
        rows.append(r)
    p = write_lines(tmp_path / "l.jsonl", rows)
    # near dedup off: the pairs stay, and some land on both sides of the split
    data = prepare(p, validation_fraction=0.1, test_fraction=0.2, dedup={"near": False, "threshold": 0.7})
    lk = data.stats["leakage"]
    assert lk["found"] > 0 and lk["found"] == data.stats["leakage_removed"]
    assert lk["by_split"]["test"] + lk["by_split"]["validation"] == lk["found"]
    ids_test = {r["id"] for r in data.test + data.validation}
    leaked = {e["id"] for e in lk["examples"]}
    assert not (leaked & ids_test)  # removed from the held-out splits
    for e in lk["examples"]:
        assert e["near_duplicate_in_train"] in {r["id"] for r in data.train}
    assert data.stats["rows_read"] == accounted(data.stats) == 250
    # with the default (near dedup on) the pairs are removed first and nothing leaks
    data = prepare(p, validation_fraction=0.1, test_fraction=0.2, dedup={"threshold": 0.7})
    assert data.stats["duplicates_by_kind"]["near_example"] == 50
    assert data.stats["leakage"]["found"] == 0
    # report-only mode counts but keeps them
    data = prepare(p, validation_fraction=0.1, test_fraction=0.2, dedup={"near": False, "threshold": 0.7, "cross_split_action": "report"})
    assert data.stats["leakage"]["found"] > 0 and data.stats["leakage_removed"] == 0
    assert len(all_records(data)) == 250


def test_prompt_side_near_dedup(tmp_path):
    base = _texts(40, 40, seed=11)
    rows = [{"instruction": t, "output": f"answer {i}"} for i, t in enumerate(base)]
    w = base[3].split()
    w[20] = "changed"
    rows.append({"instruction": " ".join(w), "output": _texts(1, 60, seed=99)[0]})  # near-same prompt
    p = write_lines(tmp_path / "p.jsonl", rows)
    only_example = prepare(p, dedup={"threshold": 0.7, "near_scope": ["example"]})
    assert only_example.stats["duplicates"] == 0  # whole examples differ (the answers)
    with_prompt = prepare(p, dedup={"threshold": 0.7, "near_scope": ["example", "prompt"]})
    assert with_prompt.stats["duplicates_by_kind"]["near_prompt"] == 1


def test_raw_text_records_and_prompt_only_scope(tmp_path):
    rows = [{"text": t} for t in _texts(30, 30, seed=21)] + [{"text": _texts(30, 30, seed=21)[4]}]
    p = write_lines(tmp_path / "t.jsonl", rows)
    for scope in (["prompt"], ["example"], ["example", "prompt"]):
        data = prepare(p, dedup={"exact_scope": scope, "near": False})
        assert data.stats["kept"] == 30 and data.stats["duplicates"] == 1, scope
