"""``stats.json`` of a preparation, built from the results of its stages; it checks that every
input row is counted exactly once::

    rows_read = kept + rejected + duplicates + leakage_removed + unused_by_max_examples
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.checks import CheckResult
from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.dedup import Duplicates
from tunesmith.data.first_pass import ReadResult
from tunesmith.data.mix import MixResult
from tunesmith.data.split import SPLITS, SplitResult


@dataclass(frozen=True)
class Outcome:
    """Whether the preparation may be trained on."""

    rejected: int
    rejected_fraction: float
    failure: str | None  # None, "too_many_rejected" or "no_usable_rows"


def judge(cfg: DataConfig, read: ReadResult, check: CheckResult, split: SplitResult) -> Outcome:
    rejected = sum(read.rejected_by_kind.values()) + sum(check.rejected_by_kind.values())
    fraction = rejected / read.rows_read if read.rows_read else 0.0
    failure = None
    if read.rows_read > 0 and fraction > cfg.max_rejected_fraction:
        failure = "too_many_rejected"
    elif split.kept == 0:
        failure = "no_usable_rows"
    return Outcome(rejected, fraction, failure)


def _labels_by_split(read: ReadResult, check: CheckResult, split: SplitResult) -> dict[str, dict[str, int]]:
    labels = read.rows.labels
    if not labels.values:
        return {}
    codes = np.frombuffer(check.label_codes, dtype=np.int32) if len(check.label_codes) else np.zeros(0, dtype=np.int32)
    out = {}
    for k, name in enumerate(SPLITS):
        c = Counter(codes[split.assign == k].tolist())
        out[name] = {str(labels.value(a)): b for a, b in sorted(c.items(), key=lambda x: str(labels.value(x[0])))}
    return out


def _held_out_files(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], read: ReadResult, near: Duplicates,
                    split: SplitResult) -> dict[str, Any]:
    """The held-out files used as given (validation_file, test_file): per split its files and kept examples, and the
    train rows removed because they duplicate (exactly, nearly, or as leakage) one of their rows. {} without them."""
    given = {spec.split for _, spec in inputs if spec.split != "auto"}
    if not given:
        return {}
    codes = np.frombuffer(read.rows.given_split, dtype=np.int8) if len(read.rows.given_split) else np.zeros(0, dtype=np.int8)

    def train_dups_of_held_out(d: Duplicates) -> int:
        rows = np.nonzero(d.original >= 0)[0]
        return int(((codes[rows] < 0) & (codes[d.original[rows]] >= 0)).sum())

    out: dict[str, Any] = {s: {"files": [str(p) for p, spec in inputs if spec.split == s], "examples": split.counts[s]}
                           for s in SPLITS if s in given}
    leaked = split.leakage.get("by_split", {}).get("train", 0) if split.leakage.get("action") == "remove" else 0
    out["train_removed"] = {"exact_duplicate": train_dups_of_held_out(read.exact), "near_duplicate": train_dups_of_held_out(near),
                            "leakage": leaked}
    return out


def build_stats(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], fingerprint: str, *, read: ReadResult, near: Duplicates,
                check: CheckResult, split: SplitResult, mix: MixResult, outcome: Outcome, max_seq_length: int | None,
                seconds: dict[str, float]) -> dict[str, Any]:
    dd = cfg.dedup
    dup_counts = {**read.exact.by_kind, **near.by_kind}
    n_dups = sum(dup_counts.values())
    accounted = split.kept + outcome.rejected + n_dups + split.leak_removed + split.unused
    if read.rows_read != accounted:  # a bug, not a user error
        raise RuntimeError(f"row accounting does not add up: {read.rows_read} read vs "
                           f"{split.kept}+{outcome.rejected}+{n_dups}+{split.leak_removed}+{split.unused}")
    rejected_by_kind = Counter(read.rejected_by_kind)
    rejected_by_kind.update(check.rejected_by_kind)
    return {
        "status": "failed" if outcome.failure else "ok",
        "failure": outcome.failure,
        "fingerprint": fingerprint,
        "input_files": [str(p) for p, _ in inputs],
        "input_file": str(next((p for p, spec in inputs if spec.split == "auto"), inputs[0][0])),
        "per_file": read.per_file,
        "formats": read.formats,
        "rows_read": read.rows_read,
        "rejected": outcome.rejected,
        "rejected_fraction": round(outcome.rejected_fraction, 6),
        "max_rejected_fraction": cfg.max_rejected_fraction,
        "rejected_by_kind": dict(rejected_by_kind.most_common()),
        "duplicates": n_dups,
        "duplicates_by_kind": dup_counts,
        "leakage_removed": split.leak_removed,
        "unused_by_max_examples": split.unused,
        "kept": split.kept,
        **{f"{s}_examples": split.counts[s] for s in SPLITS},
        "general_train_examples": len(mix.general_train),
        "truncated": check.truncated,
        "warnings": read.warnings,
        "pii": read.pii.summary(cfg.pii),
        "dedup": {"exact": dd.exact, "exact_scope": dd.exact_scope, "near": dd.near, "near_scope": list(read.signatures) if dd.near else [],
                  "threshold": dd.threshold, "num_perm": dd.num_perm},
        "leakage": split.leakage,
        "held_out_files": _held_out_files(cfg, inputs, read, near, split),
        "mix": mix.stats,
        "labels_by_split": _labels_by_split(read, check, split),
        "consistency": check.consistency,
        "token_lengths": length_summary(check.token_lengths, max_seq_length) if check.token_lengths is not None else None,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "workers": read.workers,
    }


def length_summary(lengths: list[int], max_len: int | None) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    lo, hi = int(a.min()), int(a.max()) + 1
    edges = np.unique(np.linspace(lo, hi, 21).round().astype(int))
    hist, _ = np.histogram(a, bins=edges)
    return {
        "count": int(len(a)), "min": int(a.min()), "mean": round(float(a.mean()), 1), "p50": int(np.percentile(a, 50)),
        "p95": int(np.percentile(a, 95)), "max": int(a.max()), "max_seq_length": max_len,
        "histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
    }
