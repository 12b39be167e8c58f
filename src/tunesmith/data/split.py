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
               *, seed: int, removed: JsonlSink) -> SplitResult:
    """Assign each checked row (``survivors``: its first-pass row index) to a split, after keeping a
    seeded sample of ``max_examples``; then remove (or count) held-out rows with a near duplicate in train."""
    n = len(survivors)
    use = np.ones(n, dtype=bool)
    unused = 0
    if cfg.max_examples is not None and n > cfg.max_examples:
        use[:] = False
        use[random.Random(seed).sample(range(n), cfg.max_examples)] = True
        unused = n - cfg.max_examples
        for i in np.nonzero(~use)[0].tolist():
            removed.write({"id": ids[survivors[i]], "kind": "unused", "reason": f"over data.max_examples={cfg.max_examples}"})
    used_idx = np.nonzero(use)[0]
    assign = np.full(n, UNUSED, dtype=np.int8)
    assign[used_idx] = assign_splits([labels.value(label_codes[i]) for i in used_idx.tolist()], cfg.validation_fraction,
                                     cfg.test_fraction, seed)
    dd = cfg.dedup
    leakage: dict[str, Any] = {"checked": bool(dd.cross_split and signatures), "found": 0, "action": dd.cross_split_action}
    leak_removed = 0
    if dd.cross_split and signatures:
        found, leak_removed = _check_leakage(assign, survivors, signatures, ids, dd, removed)
        leakage.update(found)
    counts = {name: int((assign == k).sum()) for k, name in enumerate(SPLITS)}
    return SplitResult(assign, unused, leak_removed, leakage, counts)


def _check_leakage(assign: np.ndarray, survivors: array, signatures: dict[str, Path], ids: IdTable, dd: DedupConfig,
                   removed: JsonlSink) -> tuple[dict[str, Any], int]:
    """(what was found: found, by_split, examples; how many rows were removed). With action
    ``remove``, the leaking rows are marked LEAKED in ``assign`` and logged."""
    surv = np.frombuffer(survivors, dtype=np.int64) if len(survivors) else np.zeros(0, dtype=np.int64)
    train_rows = np.nonzero(assign == TRAIN)[0]
    held_rows = np.nonzero((assign == VALIDATION) | (assign == TEST))[0]
    leak = np.zeros(len(held_rows), dtype=bool)
    partner = np.full(len(held_rows), -1, dtype=np.int64)
    sim = np.zeros(len(held_rows), dtype=np.float32)
    for path in signatures.values():
        m, s = cross_matches(read_signatures(path, dd.num_perm), surv[held_rows], surv[train_rows], dd.threshold)
        new = (m >= 0) & ~leak
        partner[new] = m[new]
        sim[new] = s[new]
        leak |= new
    by_split = {
        "validation": int((leak & (assign[held_rows] == VALIDATION)).sum()),
        "test": int((leak & (assign[held_rows] == TEST)).sum()),
    }
    examples = []
    n_removed = 0
    for j in np.nonzero(leak)[0].tolist():
        r = int(held_rows[j])
        entry = {"id": ids[survivors[r]], "split": SPLITS[assign[r]],
                 "near_duplicate_in_train": ids[survivors[int(train_rows[partner[j]])]], "similarity": round(float(sim[j]), 3)}
        if len(examples) < MAX_LEAKS_LISTED:
            examples.append(entry)
        if dd.cross_split_action == "remove":
            removed.write({**entry, "kind": "leakage"})
            assign[r] = LEAKED
            n_removed += 1
    return {"found": int(leak.sum()), "by_split": by_split, "examples": examples}, n_removed
