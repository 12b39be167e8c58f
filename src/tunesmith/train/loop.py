"""The training loop. Read it top to bottom: batches -> loss -> backward -> step -> log.

Loss normalisation: every optimizer step sums token losses over all its micro-batches and divides
by the number of label tokens in the whole step (not per micro-batch), so batch 8 x accumulation 1
and batch 2 x accumulation 4 produce the same gradient.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tunesmith.train.batching import Batch
from tunesmith.train.loss import summed_token_loss


@dataclass
class LoopResult:
    steps: int = 0
    history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    tokens: int = 0


@torch.no_grad()
def evaluate_loss(model, batches: list[Batch], device: torch.device) -> float:
    """Mean token loss over ``batches`` (token-weighted)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for b in batches:
        b = b.to(device)
        total += float(summed_token_loss(model, b))
        n += b.n_label_tokens
    model.train(was_training)
    return total / max(n, 1)


def train_loop(
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epoch_batches: Callable[[int], list[Batch]],
    n_epochs: int,
    total_steps: int,
    grad_accum: int,
    device: torch.device,
    max_grad_norm: float | None = None,
    val_batches: list[Batch] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> LoopResult:
    result = LoopResult()
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(n_epochs):
        batches = epoch_batches(epoch)
        for first in range(0, len(batches), grad_accum):
            if step >= total_steps:
                break
            group = batches[first : first + grad_accum]
            n_label = sum(b.n_label_tokens for b in group)
            if n_label == 0:
                continue
            t0 = time.perf_counter()
            loss_sum = 0.0
            for b in group:
                loss = summed_token_loss(model, b.to(device)) / n_label
                loss.backward()
                loss_sum += float(loss.detach())
            grad_norm = (
                float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
                if max_grad_norm
                else float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            n_tokens = sum(b.n_tokens for b in group)
            result.tokens += n_tokens
            record = {
                "step": step,
                "epoch": epoch + (first + len(group)) / len(batches),
                "loss": loss_sum,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": n_tokens,
                "label_tokens": n_label,
                "tokens_per_s": n_tokens / dt if dt > 0 else math.nan,
                "step_s": dt,
            }
            result.history.append(record)
            if on_step:
                on_step(record)
        if val_batches:
            val = {"epoch": epoch + 1, "step": step, "val_loss": evaluate_loss(model, val_batches, device)}
            result.val_history.append(val)
        if on_epoch_end:
            on_epoch_end(epoch, result.val_history[-1] if result.val_history else {})
        if step >= total_steps:
            break
    result.steps = step
    result.train_seconds = time.perf_counter() - start
    return result
