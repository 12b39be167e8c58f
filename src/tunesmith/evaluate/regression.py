"""Regression (forgetting): perplexity on general text and ROUGE-L on general prompts, before vs after.

(Verifiable instructions are in :mod:`tunesmith.evaluate.instructions`, drift from base's answers in
:mod:`tunesmith.evaluate.drift`; :func:`with_flags` joins their flags to the ones here.)

Perplexity is exp(mean next-token loss) over non-overlapping windows of the text (each window
starts fresh, so every model sees identical contexts). Its interval is a bootstrap over windows
of the mean loss, mapped through exp.

General prompts are scored by ROUGE-L against their reference answers (:func:`general_prompt_scores`);
lm-eval task scores (:mod:`tunesmith.evaluate.lm_eval_tasks`) are compared task by task
(:func:`lm_eval_change`); :func:`change_vs_base` compares a model with base and flags forgetting. All but
:func:`window_losses` are pure functions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tunesmith.data.records import Record, reference_answer
from tunesmith.evaluate.scorers import rouge_l
from tunesmith.evaluate.stats import bootstrap_ci, paired_permutation


@torch.no_grad()
def window_losses(model, tokenizer, text: str, *, window: int = 256, batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed next-token loss, tokens predicted) per window of ``text``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    chunks = [c for c in chunks if len(c) >= 2]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = []
    for s in range(0, len(chunks), batch_size):
        batch = chunks[s : s + batch_size]
        length = max(len(c) for c in batch)
        x = torch.zeros((len(batch), length), dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for r, c in enumerate(batch):  # right padding: positions stay 0..len-1 for every window
            x[r, : len(c)] = torch.tensor(c)
            mask[r, : len(c)] = 1
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = x[:, 1:].to(device)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        valid = mask[:, 1:].to(device).bool()
        for r in range(len(batch)):
            out.append((float(nll[r][valid[r]].sum()), int(valid[r].sum())))
    model.train(was_training)
    return out


def perplexity(losses: list[tuple[float, int]], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    total = sum(l for l, _ in losses)
    tokens = sum(n for _, n in losses)
    if not tokens:
        return {"perplexity": None, "perplexity_ci": None, "tokens": 0}
    arr = np.array(losses, dtype=float)

    def stat(idx: np.ndarray) -> float:
        return float(arr[idx, 0].sum() / max(arr[idx, 1].sum(), 1))

    ci = bootstrap_ci(losses, statistic=stat, n_resamples=n_resamples, seed=seed)
    return {"perplexity": math.exp(total / tokens), "perplexity_ci": [math.exp(ci[0]), math.exp(ci[1])] if ci else None,
            "tokens": tokens, "windows": len(losses)}


def lm_eval_change(base: dict[str, Any], other: dict[str, Any], *, max_drop_points: float
                   ) -> tuple[dict[str, Any], list[str]]:
    """A model's lm-eval scores with their change vs base, and its forgetting flags.

    Per task and metric both have: ``change`` (other − base, the metric's units). For a higher-is-better metric
    also ``change_points`` (100 × change), ``combined_stderr_points`` (√(se_base² + se_other²), the standard
    errors lm-eval reports, treated as independent: conservative, the same documents were scored),
    ``allowed_drop_points`` (max(``max_drop_points``, 2 × combined stderr)) and ``flagged`` (the drop exceeds it).
    Flags are raised for the tasks and groups that were named (not for the members of a scored group).
    """
    out: dict[str, Any] = {}
    flags: list[str] = []
    for task, entry in other.items():
        b_entry = base.get(task, {})
        metrics = {}
        for name, m in entry["metrics"].items():
            b = b_entry.get("metrics", {}).get(name)
            metrics[name] = dict(m)
            if b is None:
                continue
            change = m["value"] - b["value"]
            metrics[name]["change"] = change
            if m.get("higher_is_better") is not True:
                continue  # perplexities and the like: shown, not flagged (eval.regression's perplexity flags those)
            se = [s for s in (b.get("stderr"), m.get("stderr")) if s is not None]
            combined = 100 * math.sqrt(sum(s * s for s in se)) if len(se) == 2 else None
            allowed = max(max_drop_points, 2 * combined) if combined is not None else max_drop_points
            flagged = -100 * change > allowed and "group" not in entry
            metrics[name].update({"change_points": 100 * change, "combined_stderr_points": combined,
                                  "allowed_drop_points": allowed, "flagged": flagged})
            if flagged:
                flags.append(f"lm-eval {task} {name} -{-100 * change:.1f} points > {allowed:.1f}")
        out[task] = {**entry, "metrics": metrics}
    return out, flags


def forgetting_flags(base: dict[str, Any], other: dict[str, Any], *, max_ppl_increase_pct: float,
                     max_rouge_drop_points: float, max_lm_eval_drop_points: float | None = None) -> dict[str, Any]:
    """Change of a model's general measurements vs base, and whether it crosses a forgetting threshold.
    lm-eval scores (``lm_eval``, when both have them) are compared when ``max_lm_eval_drop_points`` is given."""
    out: dict[str, Any] = {}
    flags = []
    if base.get("perplexity") and other.get("perplexity"):
        pct = 100 * (other["perplexity"] / base["perplexity"] - 1)
        out["perplexity_change_pct"] = pct
        if pct > max_ppl_increase_pct:
            flags.append(f"perplexity +{pct:.1f}% > {max_ppl_increase_pct:g}%")
    if base.get("rouge_l") is not None and other.get("rouge_l") is not None:
        drop = 100 * (base["rouge_l"] - other["rouge_l"])
        out["rouge_l_change_points"] = -drop
        if drop > max_rouge_drop_points:
            flags.append(f"general ROUGE-L -{drop:.1f} points > {max_rouge_drop_points:g}")
    if max_lm_eval_drop_points is not None and base.get("lm_eval") and other.get("lm_eval"):
        out["lm_eval"], lm_flags = lm_eval_change(base["lm_eval"], other["lm_eval"],
                                                  max_drop_points=max_lm_eval_drop_points)
        flags += lm_flags
    out["forgetting"] = bool(flags)
    out["flags"] = flags
    out["ok"] = 0.0 if flags else 1.0
    return out


def general_prompt_scores(prompts: list[Record], answers: list[str | None]) -> dict[str, float]:
    """ROUGE-L of each answer against its general prompt's reference answer, by prompt id (prompts without a
    reference, ``no_reference``, are left out)."""
    return {r["id"]: rouge_l(a or "", reference_answer(r)) for r, a in zip(prompts, answers, strict=True)
            if not r.get("no_reference")}


def general_prompt_summary(scores: dict[str, float], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean general-prompt ROUGE-L with its 95% bootstrap CI (empty when there were no prompts)."""
    vals = list(scores.values())
    if not vals:
        return {}
    ci = bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)
    return {"rouge_l": sum(vals) / len(vals), "rouge_l_ci": list(ci) if ci else None, "general_prompts": len(vals)}


def with_flags(entry: dict[str, Any], measured: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """``entry`` (a :func:`change_vs_base` result) with more measurements and their flags: ``forgetting``,
    ``flags`` and ``ok`` cover them all."""
    all_flags = [*entry.get("flags", []), *flags]
    return {**entry, **measured, "flags": all_flags, "forgetting": bool(all_flags), "ok": 0.0 if all_flags else 1.0}


def change_vs_base(base: dict[str, Any], base_scores: dict[str, float], other: dict[str, Any],
                   other_scores: dict[str, float], *, max_ppl_increase_pct: float, max_rouge_drop_points: float,
                   max_lm_eval_drop_points: float | None = None, seed: int = 0) -> dict[str, Any]:
    """A model's regression entry vs base: its measurements, the changes and forgetting flags, and a
    paired permutation test on the general prompts both answered (``rouge_l_test``)."""
    entry = {**other, **forgetting_flags(base, other, max_ppl_increase_pct=max_ppl_increase_pct,
                                         max_rouge_drop_points=max_rouge_drop_points,
                                         max_lm_eval_drop_points=max_lm_eval_drop_points)}
    common = [i for i in base_scores if i in other_scores]
    if common:
        entry["rouge_l_test"] = paired_permutation([base_scores[i] for i in common], [other_scores[i] for i in common],
                                                   seed=seed)
    return entry
