"""Seeded train/validation/test assignment, stratified by label when rows carry one."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2


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
