"""The parity certificate: is the candidate not worse than the reference by more than a margin, on the same examples?

A team replacing a model (an OpenAI ``ft:`` model, or the adapter it evaluated) with another (a tuned open model,
or the merged / GGUF / served artifact) needs one verdict it can show. On the test examples both models answered:

* the paired difference ``candidate − reference`` of the per-example task scores (the scorer of evaluate/
  task_scoring.py), in points, with a two-sided ``confidence`` interval:

  - 0/1 scores (exact, label, JSON all-fields-right): **Newcombe's hybrid score interval for paired proportions**
    (Newcombe 1998, Statistics in Medicine 17:2635-2650, method 10: Wilson intervals of the two marginal
    proportions, combined with the phi correction for their correlation). Closed form, good coverage with few
    discordant pairs, never degenerate when the two models agree on every example.
  - continuous scores (ROUGE-L, chrF): a **paired percentile bootstrap** of the mean difference (the examples
    resampled together, seeded).

* the non-inferiority verdict at ``margin_points`` (M): **pass** when the lower bound is above −M, **fail** when
  the upper bound is below −M (the candidate is worse by more than the margin with this confidence), otherwise
  **inconclusive**. The lower bound of a two-sided 95% interval is a one-sided 97.5% bound, the usual
  non-inferiority reading (CONSORT / ICH E9).

* when inconclusive, the number of test examples that would decide, from the standard paired-difference power
  calculation: ``n = (z_{1-α/2} + z_power)² · σ² / (d + M)²``, assuming the observed mean difference ``d`` and the
  observed variance ``σ²`` of the per-example differences (for 0/1 scores ``σ² = ψ − d²``, ψ the discordant share)
  are the true ones, a normal approximation, and 80% power by default. With no discordant pair observed, σ² is 0
  and the formula says nothing: the count is then the smallest ``n`` at which an all-agreeing sample's Newcombe
  lower bound clears −M (``n > z²(1 − M)/M``). When ``d ≤ −M``, no number of examples would show
  non-inferiority at the observed difference: the count is None and the note says so.

Also: how often the two models' answers agree (after exact-match normalisation), where they differ per field /
per label, and which examples changed. Pure functions (numpy and the standard library).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from tunesmith.evaluate.scorers import normalise
from tunesmith.evaluate.stats import bootstrap_ci, wilson_interval
from tunesmith.evaluate.task_scoring import CONTINUOUS, ExampleScore

VERDICTS = ("pass", "fail", "inconclusive")
RULE = "pass: lower bound > −margin; fail: upper bound < −margin; otherwise inconclusive"
RIGHT = ("right", "abstained")  # a field's ValueOutcome statuses that count as right
MAX_LISTED = 20  # changed answers listed in the certificate


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def newcombe_paired_interval(both: int, first_only: int, second_only: int, neither: int,
                             confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for ``p_first − p_second`` from a paired 2×2 table.

    ``both``: pairs where both are right (Newcombe's e); ``first_only`` (f): first right, second wrong;
    ``second_only`` (g); ``neither`` (h). ``p_first = (e + f) / n``, ``p_second = (e + g) / n``.
    """
    e, f, g, h = both, first_only, second_only, neither
    n = e + f + g + h
    if n == 0:
        raise ValueError("no pairs")
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson_interval(e + f, n, confidence)
    l2, u2 = wilson_interval(e + g, n, confidence)
    denom = (e + f) * (g + h) * (e + g) * (f + h)
    phi = 0.0
    if denom > 0:
        cross = e * h - f * g
        phi = (max(cross - n / 2, 0.0) if cross > 0 else cross) / math.sqrt(denom)
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def verdict(lower: float, upper: float, margin: float) -> str:
    """Non-inferiority at ``margin`` (same unit as the bounds): see :data:`RULE`."""
    if lower > -margin:
        return "pass"
    if upper < -margin:
        return "fail"
    return "inconclusive"


def examples_needed(mean_difference: float, variance: float, margin: float, *, confidence: float = 0.95,
                    power: float = 0.8) -> int | None:
    """Test examples for the interval's lower bound to clear −``margin`` with ``power`` (module docstring).

    Differences and margin in the same unit (fractions). None when ``mean_difference ≤ −margin``."""
    room = mean_difference + margin
    if room <= 0:
        return None
    z = _z(confidence)
    if variance <= 0:  # every pair agreed: the all-agreeing Newcombe bound z²/(n + z²) must drop below the margin
        return math.floor(z * z * (1 - margin) / margin) + 1
    return math.ceil((z + NormalDist().inv_cdf(power)) ** 2 * variance / room ** 2)


@dataclass(frozen=True)
class Side:
    """One model in the certificate: its scores and answers by example id, latencies, and cost (parity_cost.py)."""

    name: str
    scores: Mapping[str, ExampleScore]
    answers: Mapping[str, str]
    latencies_s: tuple[float, ...] = ()
    cost: Mapping[str, Any] | None = None


def _field_right(s: ExampleScore) -> dict[str, bool]:
    """Per field of one example: right or not (label groups, else JSON leaves; the whole answer is no field)."""
    if s.fields:
        return dict(s.fields)
    return {k: o.status in RIGHT for k, o in s.values.items() if k != "answer"}


def _breakdown(ids: list[str], ref: Side, cand: Side, key_of) -> dict[str, dict[str, Any]]:
    """Accuracy of each model per key (``key_of(score) -> {key: right}``), only keys where an outcome differs."""
    tallies: dict[str, list[int]] = {}  # key -> [n, reference right, candidate right, differing]
    for i in ids:
        a, b = key_of(ref.scores[i]), key_of(cand.scores[i])
        for k in a.keys() | b.keys():
            t = tallies.setdefault(k, [0, 0, 0, 0])
            ra, rb = a.get(k, False), b.get(k, False)
            t[0] += 1
            t[1] += ra
            t[2] += rb
            t[3] += ra != rb
    return {k: {"n": n, "reference_accuracy": ra / n, "candidate_accuracy": rb / n,
                "difference_points": 100 * (rb - ra) / n, "differing_examples": diff}
            for k, (n, ra, rb, diff) in sorted(tallies.items()) if diff}


def _label_right(s: ExampleScore) -> dict[str, bool]:
    return {f"{field}={want}": got == want for field, (want, got) in s.labels.items()}


def _latency(values: tuple[float, ...]) -> dict[str, Any] | None:
    if not values:
        return None
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return {"p50_s": float(p50), "p95_s": float(p95), "n": len(values)}


def _interval(ref: list[ExampleScore], cand: list[ExampleScore], *, continuous: bool, confidence: float,
              n_resamples: int, seed: int) -> tuple[dict[str, Any], float, float, float]:
    """(method fields, lower, upper, variance of the per-example differences), all as fractions."""
    if not continuous:
        e = sum(1 for a, b in zip(ref, cand, strict=True) if a.correct and b.correct)
        f = sum(1 for a, b in zip(ref, cand, strict=True) if b.correct and not a.correct)
        g = sum(1 for a, b in zip(ref, cand, strict=True) if a.correct and not b.correct)
        h = len(ref) - e - f - g
        lo, hi = newcombe_paired_interval(e, f, g, h, confidence)
        n, d = len(ref), (f - g) / len(ref)
        method = {"method": "Newcombe (1998) hybrid score interval for paired proportions (method 10)",
                  "pairs": {"both_right": e, "candidate_only_right": f, "reference_only_right": g, "both_wrong": h}}
        return method, lo, hi, (f + g) / n - d * d
    diffs = np.array([b.score - a.score for a, b in zip(ref, cand, strict=True)], dtype=float)
    lo, hi = bootstrap_ci(diffs, n_resamples=n_resamples, confidence=confidence, seed=seed, differences=True)
    method = {"method": f"paired percentile bootstrap of the mean difference ({n_resamples} resamples, seed {seed})"}
    return method, lo, hi, float(diffs.var(ddof=1)) if len(diffs) > 1 else 0.0


def certificate(ref: Side, cand: Side, *, kind: str, margin_points: float, confidence: float = 0.95,
                power: float = 0.8, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The parity certificate of ``cand`` against ``ref`` on the examples both scored (the metrics.json section)."""
    ids = [i for i in ref.scores if i in cand.scores]
    out: dict[str, Any] = {"reference": ref.name, "candidate": cand.name, "n": len(ids),
                           "margin_points": margin_points, "confidence": confidence, "rule": RULE,
                           "scores": "continuous" if kind in CONTINUOUS else "binary"}
    if not ids:
        out.update({"verdict": "inconclusive", "passed": 0, "examples_needed": None,
                    "note": "no test example was answered by both models"})
        return out
    a, b = [ref.scores[i] for i in ids], [cand.scores[i] for i in ids]
    method, lo, hi, variance = _interval(a, b, continuous=kind in CONTINUOUS, confidence=confidence,
                                         n_resamples=n_resamples, seed=seed)
    d = float(np.mean([s.score for s in b]) - np.mean([s.score for s in a]))
    margin = margin_points / 100
    v = verdict(lo, hi, margin)
    out.update(method)
    out.update({"reference_score": float(np.mean([s.score for s in a])),
                "candidate_score": float(np.mean([s.score for s in b])),
                "difference_points": 100 * d, "difference_ci_points": [100 * lo, 100 * hi],
                "verdict": v, "passed": int(v == "pass")})
    if v == "inconclusive":
        need = examples_needed(d, variance, margin, confidence=confidence, power=power)
        out["examples_needed"] = need
        out["examples_needed_note"] = (
            f"assumes the observed difference ({100 * d:+.1f} points) and per-example variance of the differences "
            f"are the true ones, a normal approximation and {power:.0%} power" if need is not None and variance > 0
            else "no discordant pair observed: the size at which an all-agreeing sample's interval clears the margin"
            if need is not None else
            "the observed difference is at or below −margin: more examples at this difference would not show "
            "non-inferiority")
    same = [i for i in ids if normalise(ref.answers.get(i, "")) == normalise(cand.answers.get(i, ""))]
    changed = [i for i in ids if i not in set(same)]
    out.update({"agreement": len(same) / len(ids), "agreed": len(same), "changed": len(changed),
                "changed_examples": [{"id": i, "reference": ref.answers.get(i), "candidate": cand.answers.get(i)}
                                     for i in changed[:MAX_LISTED]]})
    fields = _breakdown(ids, ref, cand, _field_right)
    if fields:
        out["fields"] = fields
    labels = _breakdown(ids, ref, cand, _label_right)
    if labels:
        out["labels"] = labels
    out["latency"] = {s.name: _latency(s.latencies_s) for s in (ref, cand)}
    out["cost"] = {s.name: dict(s.cost) if s.cost else None for s in (ref, cand)}
    prices = [(s.cost or {}).get("usd_per_million_tokens") for s in (ref, cand)]
    if all(p is not None for p in prices) and prices[0] > 0:
        out["cost_ratio"] = prices[1] / prices[0]  # the candidate's cost per million tokens as a share of the reference's
    return out
