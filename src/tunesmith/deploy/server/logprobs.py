"""Token log-probabilities from the engine's logits: of prompt tokens (one forward over the prompt) and of
each sampled token, with the most likely alternatives.

Always the model's own distribution, log-softmax in fp32 of the raw logits: not changed by ``temperature``
or ``top_p`` (they only change which token is sampled), as OpenAI and vLLM report them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_TOP_LOGPROBS = 20  # most alternatives per token a request may ask for (OpenAI chat: 20; legacy completions: 5)
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a token the model gives (numerically) zero probability


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability, and the ``top`` most likely tokens at its position (best first)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def _finite(x: float) -> float:
    return x if math.isfinite(x) else LOGPROB_FLOOR


def token_logprobs(logits: torch.Tensor, tokens: list[int], top: int | list[int]) -> list[TokenLogprob]:
    """Log-probabilities of ``tokens[j]`` under ``logits[j]`` ([n, vocab]), each with its ``top`` alternatives
    (one count for all rows, or one per row)."""
    if not tokens:
        return []
    tops = [top] * len(tokens) if isinstance(top, int) else top
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(-1, torch.tensor(tokens, device=lp.device)[:, None]).squeeze(-1).tolist()
    k = max(tops)
    if k:
        best_lp, best_ids = (t.tolist() for t in lp.topk(k, dim=-1))
    out = []
    for j, (tok, value) in enumerate(zip(tokens, chosen, strict=True)):
        alts = tuple((best_ids[j][i], _finite(best_lp[j][i])) for i in range(tops[j])) if k else ()
        out.append(TokenLogprob(tok, _finite(value), alts))
    return out


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], top: int) -> list[TokenLogprob]:
    """Log-probabilities of ``prompt_ids[1:]``, where ``logits`` ([len(prompt_ids), vocab]) are the model's
    outputs at the prompt's positions (the first token has none: nothing predicts it)."""
    return token_logprobs(logits[: len(prompt_ids) - 1], list(prompt_ids[1:]), top)
