"""The last stage of a preparation: the split files ``train.jsonl``, ``validation.jsonl`` and
``test.jsonl``, each shuffled (seeded) through buckets of at most ~BUCKET_ROWS rows in memory;
general rows are shuffled into train."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from tunesmith.data.records import Record
from tunesmith.data.split import SPLITS, TRAIN

BUCKET_ROWS = 200_000  # rows per shuffle bucket


def write_split_files(spool: Path, assign: np.ndarray, general_train: list[Record], out: Path, work: Path, *, seed: int) -> None:
    """``spool`` holds one record per entry of ``assign`` (its split, or negative for none)."""
    rng = random.Random(seed + 1)
    n_rows = {k: int((assign == k).sum()) + (len(general_train) if k == TRAIN else 0) for k in range(len(SPLITS))}
    n_buckets = {k: max(1, -(-n // BUCKET_ROWS)) for k, n in n_rows.items()}
    buckets = {k: [open(work / f"b{k}_{b}.jsonl", "w", encoding="utf-8") for b in range(n)] for k, n in n_buckets.items()}  # noqa: SIM115
    try:
        with open(spool, encoding="utf-8") as f:
            for i, line in enumerate(f):
                k = int(assign[i])
                if k >= 0:
                    buckets[k][rng.randrange(n_buckets[k])].write(line)
        for r in general_train:
            buckets[TRAIN][rng.randrange(n_buckets[TRAIN])].write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        for files in buckets.values():
            for fh in files:
                fh.close()
    for k, name in enumerate(SPLITS):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as dst:
            for b in range(n_buckets[k]):
                p = work / f"b{k}_{b}.jsonl"
                # split on "\n" only: str.splitlines would also split at U+2028 and friends inside the JSON
                lines = p.read_text(encoding="utf-8").split("\n")[:-1]
                rng.shuffle(lines)
                dst.writelines(line + "\n" for line in lines)
                p.unlink()
