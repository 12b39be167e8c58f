"""Verifiable-instruction prompts for the regression measurement: generated, answered, checked, compared.

A prompt is a general topic ("Describe the water cycle.") and one constraint a program can check
("Answer in at most 20 words."), both from ``data/instruction_templates.json`` (shipped, offline). The
constraint kinds are dealt in turn (a seeded order), so 240 prompts cover the 14 kinds 17 or 18 times each;
topics and parameters are drawn by the same seeded generator: the same seed, the same prompts.

A model's answers are checked by :mod:`tunesmith.evaluate.instruction_checks` (pass / fail per prompt);
:func:`instruction_summary` gives the pass rate with its 95% bootstrap CI, overall and per kind;
:func:`instruction_change` compares a model with base on the prompts both answered (the difference in
points, its paired bootstrap CI, McNemar's test) and flags a drop of more than
``eval.regression.max_instruction_drop_points``. All pure functions.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

from tunesmith.evaluate.instruction_checks import CHECKS, follows, is_answer
from tunesmith.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_delta_ci

TEMPLATES = Path(__file__).parent / "data" / "instruction_templates.json"


@cache
def templates(path: Path = TEMPLATES) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(data["constraints"]) - set(CHECKS)
    if unknown:  # a template without a checker would never be scored
        raise ValueError(f"{path}: constraint kinds without a checker: {sorted(unknown)}")
    return data


def instruction_prompts(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` prompts: ``{"id", "kind", "params", "messages": [one user turn]}``, the same for the same seed."""
    t = templates()
    rng = random.Random(seed)
    kinds = sorted(t["constraints"])
    rng.shuffle(kinds)
    topics = list(t["topics"])
    rng.shuffle(topics)
    out = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        spec = t["constraints"][kind]
        params = {k: rng.choice(v) for k, v in sorted(spec.items()) if k != "instruction"}
        text = f"{topics[i % len(topics)]} {spec['instruction'].format(**params)}"
        out.append({"id": f"instruction-{i:03d}-{kind}", "kind": kind, "params": params,
                    "messages": [{"role": "user", "content": text}]})
    return out


def check_answers(prompts: list[dict[str, Any]], answers: list[str | None]) -> list[dict[str, Any]]:
    """One row per prompt: ``{"id", "kind", "params", "prompt", "prediction", "passed"}``."""
    return [{"id": p["id"], "kind": p["kind"], "params": p["params"], "prompt": p["messages"][-1]["content"],
             "prediction": a, "passed": follows(p["kind"], a, p["params"])}
            for p, a in zip(prompts, answers, strict=True)]


def instruction_summary(rows: list[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pass rate with its 95% CI, per constraint kind ``{"n", "passed", "pass_rate"}``, and how many predictions
    were no answer at all (fewer than MIN_ANSWER_WORDS words: they follow no constraint); {} for no rows."""
    if not rows:
        return {}
    passed = [1.0 if r["passed"] else 0.0 for r in rows]
    ci = bootstrap_ci(passed, n_resamples=n_resamples, seed=seed)
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        sub = [r["passed"] for r in rows if r["kind"] == kind]
        by_kind[kind] = {"n": len(sub), "passed": sum(sub), "pass_rate": sum(sub) / len(sub)}
    return {"instruction_pass_rate": sum(passed) / len(passed), "instruction_pass_rate_ci": list(ci) if ci else None,
            "instruction_prompts": len(rows), "instruction_by_kind": by_kind,
            "instruction_non_answers": sum(not is_answer(r["prediction"]) for r in rows)}


def instruction_change(base: dict[str, bool], other: dict[str, bool], *, max_drop_points: float,
                       n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, Any], list[str]]:
    """A model's pass rate minus base's on the prompts both answered (by prompt id: passed), in points, with its
    paired 95% bootstrap CI and McNemar's test; flagged when it drops by more than ``max_drop_points``."""
    common = [i for i in base if i in other]
    if not common:
        return {}, []
    a = [1.0 if base[i] else 0.0 for i in common]
    b = [1.0 if other[i] else 0.0 for i in common]
    change = 100 * (sum(b) - sum(a)) / len(common)
    ci = paired_delta_ci(a, b, n_resamples=n_resamples, seed=seed)
    out = {"instruction_change_points": change,
           "instruction_change_points_ci": [100 * ci[0], 100 * ci[1]] if ci else None,
           "instruction_test": mcnemar_exact([x == 1.0 for x in a], [x == 1.0 for x in b])}
    flags = [f"instructions followed {change:+.1f} points < -{max_drop_points:g}"] if -change > max_drop_points else []
    return out, flags
