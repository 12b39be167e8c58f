"""Uncertainty: percentile bootstrap confidence intervals and paired tests between two models.

* :func:`bootstrap_ci` - 95% percentile bootstrap of a statistic over examples (seeded, so a report
  is reproducible); a rate of right/wrong outcomes gets the Wilson score interval instead.
* :func:`wilson_interval` - Wilson score interval of a binomial proportion: honest at 0% and 100%,
  where a bootstrap collapses to [1, 1] (90/90 right does not prove a 0% error rate; Wilson says ≥ 95.9%).
* :func:`bootstrap_ratio_ci` - the same for a ratio of sums over examples (fields counted per example).
* :func:`mcnemar_exact` - exact two-sided McNemar test on paired right/wrong outcomes (binomial
  test on the discordant pairs), the standard paired test for two classifiers on one test set.
* :func:`paired_permutation` - sign-flip permutation test on paired continuous scores (ROUGE-L, chrF).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from math import comb
from statistics import NormalDist

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    differences: bool = False,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) of ``values``.

    With a custom ``statistic``, it is called with the resampled *indices* (so it can recompute
    e.g. a macro-F1 from paired predictions). None for an empty sample. The mean of 0/1 outcomes (a rate)
    gets :func:`wilson_interval`: the bootstrap of 90 right answers out of 90 is [100, 100], which claims
    a certainty 90 examples cannot give. ``differences=True`` (paired differences, which may all be 0 or 1
    without being a rate) always bootstraps.
    """
    n = len(values)
    if n == 0:
        return None
    if statistic is None and not differences:
        arr = np.asarray(values, dtype=float)
        if np.isin(arr, (0.0, 1.0)).all():
            return wilson_interval(int(arr.sum()), n, confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    if statistic is None:
        arr = np.asarray(values, dtype=float)
        stats = arr[idx].mean(axis=1)
    else:
        stats = np.array([statistic(row) for row in idx], dtype=float)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (no continuity correction)."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lower = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding residue at 0% or 100%
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def bootstrap_ratio_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of sum(numerators) / sum(denominators), resampling examples.

    Each example contributes a count and the number it is out of (e.g. invented values of its fields
    whose reference is null), so fields of one example stay together. Resamples whose denominator is
    zero are left out. None when the denominators sum to zero. At 0% or 100% (every resample gives the same
    ratio) the interval is Wilson's on the totals, treating the counted items as independent: 0 invented
    values of 374 is "at most 1.0%", not [0, 0].
    """
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if len(num) != len(den):
        raise ValueError("numerators and denominators must have the same length")
    if den.sum() == 0:
        return None
    if num.sum() == 0 or num.sum() == den.sum():
        return wilson_interval(int(round(num.sum())), int(round(den.sum())), confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(den), size=(n_resamples, len(den)))
    totals = den[idx].sum(axis=1)
    keep = totals > 0
    stats = num[idx].sum(axis=1)[keep] / totals[keep]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test: is model b right on different examples than model a more often than chance?

    ``b_only`` = examples b gets right and a wrong, ``a_only`` the reverse; p = two-sided binomial
    probability of a split at least this uneven among the discordant pairs under p=0.5.
    """
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = a_only + b_only
    if n == 0:
        p = 1.0
    else:
        k = min(a_only, b_only)
        p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
    return {"test": "mcnemar_exact", "a_only": a_only, "b_only": b_only, "p_value": p}


def paired_permutation(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, float | str]:
    """Two-sided sign-flip permutation test of the mean paired difference b - a."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) == 0:
        return {"test": "paired_permutation", "mean_difference": 0.0, "p_value": 1.0}
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    p = (1 + int((null >= observed - 1e-12).sum())) / (n_resamples + 1)
    return {"test": "paired_permutation", "mean_difference": float(d.mean()), "p_value": float(p)}


def paired_delta_ci(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of mean(b) - mean(a) resampling examples jointly (keeps the pairing)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    return bootstrap_ci(d, n_resamples=n_resamples, seed=seed, differences=True)
