"""Drift from the base model: how far a model's answers to general prompts moved from base's own answers.

Per prompt, drift = 1 − ROUGE-L F1 between the model's answer and base's answer to the same prompt
(greedy, same ``max_new_tokens``): 0 for the same words in the same order, 1 for nothing in common.
ROUGE-L (:func:`tunesmith.evaluate.scorers.rouge_l`) is symmetric, so it does not matter which answer is
the "reference". :func:`drift_summary` gives the mean with its 95% bootstrap CI, the share of prompts whose
answer *changed materially* (drift above ``eval.regression.drift_changed_above``) with its CI, and a flag
when the mean is above ``eval.regression.max_mean_drift``.

Drift says *that* answers changed, not whether they got worse. When ``eval.regression.judge`` names an
endpoint, an LLM judge says which answer it prefers (:func:`preference_messages`, shown in a seeded
random order per prompt against position bias; :func:`preference_summary`). All pure functions.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tunesmith.evaluate.scorers import rouge_l
from tunesmith.evaluate.stats import bootstrap_ci


def drift_scores(base: dict[str, str | None], other: dict[str, str | None]) -> dict[str, float]:
    """1 − ROUGE-L between ``other``'s and base's answer, by prompt id (prompts both answered)."""
    return {i: 1.0 - rouge_l(other[i] or "", base[i] or "") for i in base if i in other}


def drift_summary(scores: dict[str, float], *, changed_above: float, max_mean_drift: float | None,
                  threshold_source: str = "", n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, Any], list[str]]:
    """Mean drift and the share changed materially, each with its 95% CI; the flag (mean above ``max_mean_drift``;
    None: no flag), whose text ends with ``threshold_source`` when given (where the threshold came from)."""
    vals = list(scores.values())
    if not vals:
        return {}, []
    mean = sum(vals) / len(vals)
    changed = [1.0 if v > changed_above else 0.0 for v in vals]
    ci = bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)
    changed_ci = bootstrap_ci(changed, n_resamples=n_resamples, seed=seed)
    out = {"drift": mean, "drift_ci": list(ci) if ci else None, "drift_prompts": len(vals),
           "changed_share": sum(changed) / len(changed), "changed_share_ci": list(changed_ci) if changed_ci else None}
    source = f" ({threshold_source})" if threshold_source else ""
    flagged = max_mean_drift is not None and mean > max_mean_drift
    flags = [f"drift from base {mean:.2f} > {max_mean_drift:.2f}{source}"] if flagged else []
    return out, flags


# -- the judge's preference ---------------------------------------------------------------------

PREFERENCE_RUBRIC = """You compare two answers by AI assistants to the same request. Judge which answer \
follows the request better: correct, helpful, and doing what was asked. Ignore which answer comes first \
and their length alone. Reply with exactly one word: A, B, or TIE.

[Request]
{prompt}

[Answer A]
{a}

[Answer B]
{b}"""


def tuned_first(prompt_id: str, seed: int) -> bool:
    """Whether the model's answer is shown as A (else base's is): a seeded coin per prompt."""
    return random.Random(f"{seed}:{prompt_id}").random() < 0.5


def preference_messages(prompt: list[dict], answer_a: str | None, answer_b: str | None) -> list[dict]:
    text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return [{"role": "user", "content": PREFERENCE_RUBRIC.format(prompt=text, a=answer_a or "(empty)",
                                                                 b=answer_b or "(empty)")}]


def parse_preference(text: str | None) -> str | None:
    """``"A"``, ``"B"`` or ``"TIE"`` from the judge's reply (asked for exactly one of these words): a reply that
    says TIE anywhere is a tie ("a tie"), else the first standalone A or B; None when there is none."""
    found = re.findall(r"\b(TIE|A|B)\b", (text or "").upper())
    if not found:
        return None
    return "TIE" if "TIE" in found else found[0]


def preferred(verdict: str | None, model_first: bool) -> str | None:
    """The verdict in the model's terms: ``"model"``, ``"base"``, ``"tie"`` or None (no usable verdict)."""
    if verdict is None:
        return None
    if verdict == "TIE":
        return "tie"
    return "model" if (verdict == "A") == model_first else "base"


def preference_summary(preferences: list[str | None], *, judge: str, n_resamples: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """Counts of the judge's preferences and the model's win rate (a tie counts half) with its 95% CI."""
    usable = [p for p in preferences if p is not None]
    wins = [1.0 if p == "model" else 0.5 if p == "tie" else 0.0 for p in usable]
    ci = bootstrap_ci(wins, n_resamples=n_resamples, seed=seed)
    return {"judge": judge, "n": len(usable), "n_unusable": len(preferences) - len(usable),
            "model_preferred": usable.count("model"), "base_preferred": usable.count("base"), "ties": usable.count("tie"),
            "win_rate": sum(wins) / len(wins) if wins else None, "win_rate_ci": list(ci) if ci else None}
