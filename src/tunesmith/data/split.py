"""Seeded train/validation/test assignment, stratified by label when rows carry one, and the split
stage of a preparation: ``max_examples``, the assignment, and the leakage check of held-out rows
against train."""

from __future__ import annotations

import random
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunesmith.data.config import DataConfig, DedupConfig
from tunesmith.data.dedup import cross_matches, read_signatures

if TYPE_CHECKING:
    from tunesmith.data.compact import Codes, IdTable
    from tunesmith.data.spool import JsonlSink

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2
UNUSED, LEAKED = -1, -2  # assignments of rows in no split: over max_examples, removed as leakage
MAX_LEAKS_LISTED = 50


def assign_splits(labels: Sequence[Any], validation_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) per row. Each label keeps its share in every split
    (rounded per label); rows without labels form one group."""
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    out = np.zeros(len(labels), dtype=np.int8)
    for key in sorted(groups, key=lambda k: (k is not None, str(k))):
        items = groups[key]
        rng.shuffle(items)
        n_test = round(len(items) * test_fraction)
        n_val = round(len(items) * validation_fraction)
        out[items[:n_test]] = TEST
        out[items[n_test : n_test + n_val]] = VALIDATION
    return out


@dataclass(frozen=True)
class SplitResult:
    assign: np.ndarray  # int8 per checked row: TRAIN, VALIDATION, TEST, UNUSED or LEAKED
    unused: int  # rows over max_examples
    leak_removed: int
    leakage: dict[str, Any]  # checked, found, action, by_split, examples
    counts: dict[str, int]  # rows per split

    @property
    def kept(self) -> int:
        return sum(self.counts.values())


def split_rows(cfg: DataConfig, survivors: array, label_codes: array, labels: Codes, ids: IdTable, signatures: dict[str, Path],
               *, seed: int, removed: JsonlSink, given_split: array | None = None) -> SplitResult:
    """Assign each checked row (``survivors``: its first-pass row index) to a split, after keeping a
    seeded sample of ``max_examples``; then remove (or count) held-out rows with a near duplicate in train.

    ``given_split`` (per first-pass row: a split index, or -1) marks the rows of held-out files: they keep their
    split as given, are never sampled away by ``max_examples``, and a train row with a near duplicate among them
    is the one removed (the held-out file is the reference; the train file is what a team can change)."""
    n = len(survivors)
    surv = np.frombuffer(survivors, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    given = np.full(n, -1, dtype=np.int8)
    if given_split is not None and n:
        given = np.frombuffer(given_split, dtype=np.int8)[surv]
    pool = given < 0
    use = pool.copy()
    unused = 0
    n_pool = int(pool.sum())
    if cfg.max_examples is not None and n_pool > cfg.max_examples:
        pool_idx = np.nonzero(pool)[0]
        use[:] = False
        use[pool_idx[random.Random(seed).sample(range(n_pool), cfg.max_examples)]] = True
        unused = n_pool - cfg.max_examples
        for i in np.nonzero(pool & ~use)[0].tolist():
            removed.write({"id": ids[survivors[i]], "kind": "unused", "reason": f"over data.max_examples={cfg.max_examples}"})
    used_idx = np.nonzero(use)[0]
    assign = np.full(n, UNUSED, dtype=np.int8)
    assign[used_idx] = assign_splits([labels.value(label_codes[i]) for i in used_idx.tolist()], *cfg.split_fractions(), seed)
    assign[~pool] = given[~pool]
    dd = cfg.dedup
    leakage: dict[str, Any] = {"checked": bool(dd.cross_split and signatures), "found": 0, "action": dd.cross_split_action}
    leak_removed = 0
    if dd.cross_split and signatures:
        found, leak_removed = _check_leakage(assign, survivors, signatures, ids, dd, removed, given=~pool)
        leakage.update(found)
    counts = {name: int((assign == k).sum()) for k, name in enumerate(SPLITS)}
    return SplitResult(assign, unused, leak_removed, leakage, counts)


def _near_partners(surv: np.ndarray, query: np.ndarray, ref: np.ndarray, signatures: dict[str, Path],
                   dd: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each ``query`` row (checked-row index): whether a ``ref`` row is a near duplicate in any scope, which
    (position in ``ref``), and the similarity."""
    leak = np.zeros(len(query), dtype=bool)
    partner = np.full(len(query), -1, dtype=np.int64)
    sim = np.zeros(len(query), dtype=np.float32)
    for path in signatures.values():
        m, s = cross_matches(read_signatures(path, dd.num_perm), surv[query], surv[ref], dd.threshold)
        new = (m >= 0) & ~leak
        partner[new] = m[new]
        sim[new] = s[new]
        leak |= new
    return leak, partner, sim


def _check_leakage(assign: np.ndarray, survivors: array, signatures: dict[str, Path], ids: IdTable, dd: DedupConfig,
                   removed: JsonlSink, given: np.ndarray) -> tuple[dict[str, Any], int]:
    """(what was found: found, by_split, examples; how many rows were removed). With action ``remove``, the
    leaking rows are marked LEAKED in ``assign`` and logged: train rows with a near duplicate in a held-out file
    (``given``) first, then the held-out rows split off the train pool that have a near duplicate in what is left of train."""
    surv = np.frombuffer(survivors, dtype=np.int64) if len(survivors) else np.zeros(0, dtype=np.int64)
    by_split = {"validation": 0, "test": 0}
    examples: list[dict[str, Any]] = []
    n_found = n_removed = 0

    def mark(rows: np.ndarray, ref: np.ndarray, leak: np.ndarray, partner: np.ndarray, sim: np.ndarray, *, key: str) -> None:
        nonlocal n_found, n_removed
        n_found += int(leak.sum())
        for j in np.nonzero(leak)[0].tolist():
            r, p = int(rows[j]), int(ref[partner[j]])
            entry = {"id": ids[survivors[r]], "split": SPLITS[assign[r]], key: ids[survivors[p]],
                     "similarity": round(float(sim[j]), 3)}
            if key != "near_duplicate_in_train":
                entry["near_duplicate_split"] = SPLITS[assign[p]]
            if len(examples) < MAX_LEAKS_LISTED:
                examples.append(entry)
            if dd.cross_split_action == "remove":
                removed.write({**entry, "kind": "leakage"})
                assign[r] = LEAKED
                n_removed += 1

    given_rows = np.nonzero(given & ((assign == VALIDATION) | (assign == TEST)))[0]
    if len(given_rows):
        train_rows = np.nonzero(assign == TRAIN)[0]
        leak, partner, sim = _near_partners(surv, train_rows, given_rows, signatures, dd)
        by_split["train"] = int(leak.sum())  # train rows near a held-out file's row
        mark(train_rows, given_rows, leak, partner, sim, key="near_duplicate_in_held_out_file")
    train_rows = np.nonzero(assign == TRAIN)[0]
    held_rows = np.nonzero(~given & ((assign == VALIDATION) | (assign == TEST)))[0]
    leak, partner, sim = _near_partners(surv, held_rows, train_rows, signatures, dd)
    by_split["validation"] = int((leak & (assign[held_rows] == VALIDATION)).sum())
    by_split["test"] = int((leak & (assign[held_rows] == TEST)).sum())
    mark(held_rows, train_rows, leak, partner, sim, key="near_duplicate_in_train")
    return {"found": n_found, "by_split": by_split, "examples": examples}, n_removed
