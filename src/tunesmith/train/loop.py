"""The training loop. Read it top to bottom: batches -> loss -> backward -> step -> log -> checkpoint.

Loss normalisation: every optimizer step sums token losses over all its micro-batches and divides
by the number of label tokens in the whole step (not per micro-batch), so batch 8 x accumulation 1
and batch 2 x accumulation 4 produce the same gradient. In data-parallel runs the token count is
summed over all ranks and the loss scaled by the world size, because DDP, FSDP and DeepSpeed
average gradients over ranks.

The loop is resumable: ``state`` says which step, epoch and micro-batch come next, and the data
order of an epoch is a pure function of (seed, epoch).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tunesmith.train.batching import Batch
from tunesmith.train.checkpoint import TrainState
from tunesmith.train.loss import summed_token_loss
from tunesmith.train.parallel import Distributed


@dataclass
class Hooks:
    """What the loop tells the outside world; every hook is optional."""

    on_step: Callable[[dict], None] | None = None
    on_eval: Callable[[dict, bool], None] | None = None  # (record, improved)
    checkpoint: Callable[[TrainState], None] | None = None


@torch.no_grad()
def evaluate_loss(model, batches: list[Batch], device: torch.device, forward=None) -> float:
    """Mean token loss over ``batches`` (token-weighted). ``forward`` is the (DDP/FSDP) loss module
    when there is one: sharded parameters are only whole inside its forward."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for b in batches:
        b = b.to(device)
        if forward is None:
            total += float(summed_token_loss(model, b))
        else:
            total += float(forward(input_ids=b.input_ids, labels=b.labels, position_ids=b.position_ids,
                                   attention_mask=b.attention_mask))
        n += b.n_label_tokens
    model.train(was_training)
    return total / max(n, 1)


def train_loop(
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epoch_batches: Callable[[int], list[Batch]],
    total_steps: int,
    grad_accum: int,
    device: torch.device,
    state: TrainState | None = None,
    max_grad_norm: float | None = None,
    val_batches: list[Batch] | None = None,
    eval_every: int | None = None,
    save_every: int | None = None,
    save_each_epoch: bool = False,
    early_stopping_patience: int | None = None,
    hooks: Hooks | None = None,
    dist: Distributed | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> TrainState:
    state = state or TrainState()
    hooks = hooks or Hooks()
    dist = dist or Distributed()
    params = [p for p in model.parameters() if p.requires_grad]
    forward = dist.loss_module or (lambda **b: summed_token_loss(model, Batch(**b, n_examples=0)))
    # full fine-tuning in bf16: fp32 master weights, bf16 compute
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    model.train()
    stop = False
    while state.step < total_steps and not stop:
        batches = epoch_batches(state.epoch)
        # this rank's micro-batches; each optimizer step takes grad_accum of them on every rank
        usable = len(batches) - len(batches) % dist.world_size  # equal counts on every rank, or collectives hang
        mine = batches[:usable][dist.rank :: dist.world_size]
        while state.next_batch < len(mine) and state.step < total_steps and not stop:
            group = mine[state.next_batch : state.next_batch + grad_accum]
            state.next_batch += len(group)
            n_label = dist.global_sum(sum(b.n_label_tokens for b in group))
            if n_label == 0:
                continue
            t0 = time.perf_counter()
            loss_sum = 0.0
            for i, b in enumerate(group):
                b = b.to(device)
                with dist.no_sync(last=i == len(group) - 1):
                    with autocast:
                        loss = forward(input_ids=b.input_ids, labels=b.labels, position_ids=b.position_ids,
                                       attention_mask=b.attention_mask) / n_label
                    dist.backward(loss * dist.world_size)  # data-parallel wrappers average over ranks
                loss_sum += float(loss.detach())
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = dist.optimizer_step(optimizer, params, max_grad_norm)  # clip, step, zero grads
            scheduler.step()
            state.step += 1
            dt = time.perf_counter() - t0
            n_tokens = sum(b.n_tokens for b in group)
            record = {
                "step": state.step, "epoch": state.epoch + state.next_batch / len(mine),
                "loss": dist.global_sum(loss_sum),
                "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens, "label_tokens": n_label,
                "tokens_per_s": n_tokens / dt if dt > 0 else 0.0, "step_s": dt,
            }
            state.history.append(record)
            if hooks.on_step:
                hooks.on_step(record)
            if val_batches and eval_every and state.step % eval_every == 0:
                stop = _validate(model, forward, val_batches, device, state, early_stopping_patience, hooks, autocast)
            if hooks.checkpoint and save_every and state.step % save_every == 0:
                hooks.checkpoint(state)
        if state.next_batch >= len(mine):  # epoch finished
            state.epoch += 1
            state.next_batch = 0
            if val_batches and not eval_every:
                stop = _validate(model, forward, val_batches, device, state, early_stopping_patience, hooks, autocast) or stop
            if hooks.checkpoint and save_each_epoch:
                hooks.checkpoint(state)
    return state


def _validate(model, forward, val_batches, device, state: TrainState, patience: int | None, hooks: Hooks,
              autocast=None) -> bool:
    """Record validation loss; returns True when early stopping says to stop."""
    with autocast or contextlib.nullcontext():
        val = evaluate_loss(model, val_batches, device, forward)
    improved = state.best_val_loss is None or val < state.best_val_loss
    if improved:
        state.best_val_loss = val
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    record = {"step": state.step, "epoch": state.epoch, "val_loss": val}
    state.val_history.append(record)
    if hooks.on_eval:
        hooks.on_eval(record, improved)
    return patience is not None and state.evals_without_improvement >= patience
