"""The training loop. Read it top to bottom: batches -> loss -> backward -> step -> log -> checkpoint.

Loss normalisation: every optimizer step sums token losses over all its micro-batches and divides
by the number of label tokens in the whole step (not per micro-batch), so batch 8 x accumulation 1
and batch 2 x accumulation 4 produce the same gradient. In data-parallel runs the token count is
summed over all ranks and the loss scaled by the world size, because DDP, FSDP and DeepSpeed
average gradients over ranks.

The loss is always computed by the loss module (:class:`tunesmith.train.loss.CausalLMLoss`): the
data-parallel wrapper around it when there is one, else a plain one around the model. The forgetting
guard's KL term on general rows (``kl_weight``) is part of it, and so is ``shared_prefix``: a prefix common
to a micro-batch's rows encoded once (:mod:`tunesmith.train.shared_prefix`).

The loop is resumable: ``state`` says which step, epoch and micro-batch come next, and the data
order of an epoch is a pure function of (seed, epoch).

Validation records the validation loss and, given ``task_score``, the task score of the validation
examples; the best checkpoint is the one with the best task score, the lower validation loss breaking
ties (without a task score: the lowest validation loss). A ``pacer`` (``train.time_budget``:
:class:`tunesmith.train.budget.BudgetPacer`) decides when to validate and when to stop instead of
``eval_every`` and the epochs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from tunesmith.train.batching import Batch
from tunesmith.train.checkpoint import TrainState
from tunesmith.train.loss import CausalLMLoss, shared_prefix_spared_tokens
from tunesmith.train.parallel import Distributed


@dataclass
class Hooks:
    """What the loop tells the outside world; every hook is optional."""

    on_step: Callable[[dict], None] | None = None
    on_eval: Callable[[dict, bool], None] | None = None  # (record, improved)
    checkpoint: Callable[[TrainState], None] | None = None


class Pacer(Protocol):
    """Asked after every optimizer step (on every rank): validate now? (then) stop now?"""

    def validate_now(self, state: TrainState) -> bool: ...

    def stop_now(self, state: TrainState) -> bool: ...


@torch.no_grad()
def evaluate_loss(loss_module: torch.nn.Module, batches: list[Batch], device: torch.device) -> float:
    """Mean token loss over ``batches`` (token-weighted). Through the (DDP/FSDP) loss module:
    sharded parameters are only whole inside its forward."""
    was_training = loss_module.training
    loss_module.eval()
    total, n = 0.0, 0
    for b in batches:
        total += float(loss_module(**b.to(device).loss_inputs()))
        n += b.n_label_tokens
    loss_module.train(was_training)
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
    task_score: Callable[[], float] | None = None,
    pacer: Pacer | None = None,
    kl_weight: float = 0.0,
    shared_prefix: bool = False,
    kl_on: str = "answers",
) -> TrainState:
    state, hooks, dist = state or TrainState(), hooks or Hooks(), dist or Distributed()
    loss_module = dist.loss_module or CausalLMLoss(model, kl_weight, shared_prefix, kl_on)
    step = _OptimizerStep(model, loss_module, optimizer, scheduler, device, dist, max_grad_norm, autocast_dtype,
                          shared_prefix)

    def validate() -> bool:  # records validation loss (and task score); True when early stopping says stop
        return _validate(step, val_batches, state, early_stopping_patience, hooks, task_score)

    def validate_now() -> bool:
        if pacer is not None:
            return pacer.validate_now(state) and bool(val_batches)
        return bool(val_batches and eval_every and state.step % eval_every == 0)

    model.train()
    stop = False
    while state.step < total_steps and not stop:
        mine = _this_ranks_share(epoch_batches(state.epoch), dist)
        while state.next_batch < len(mine) and state.step < total_steps and not stop:
            group = mine[state.next_batch : state.next_batch + grad_accum]
            state.next_batch += len(group)
            stats = step(group)
            if stats is None:  # no label tokens in this step on any rank
                continue
            state.step += 1
            record = {"step": state.step, "epoch": state.epoch + state.next_batch / len(mine), **stats}
            state.history.append(record)
            if hooks.on_step:
                hooks.on_step(record)
            if validate_now():
                stop = validate()
            if pacer is not None and pacer.stop_now(state):
                stop = True
            if hooks.checkpoint and save_every and state.step % save_every == 0:
                hooks.checkpoint(state)
        if state.next_batch >= len(mine):  # epoch finished
            state.epoch += 1
            state.next_batch = 0
            if val_batches and not eval_every and pacer is None:
                stop = validate() or stop
            if hooks.checkpoint and save_each_epoch:
                hooks.checkpoint(state)
    return state


def _this_ranks_share(batches: list[Batch], dist: Distributed) -> list[Batch]:
    """This rank's micro-batches of an epoch: every rank gets the same count, or collectives hang."""
    usable = len(batches) - len(batches) % dist.world_size
    return batches[:usable][dist.rank :: dist.world_size]


class _OptimizerStep:
    """One optimizer step over a group of micro-batches: forward + backward of each (gradients
    synchronised on the last one only), then clip, step, zero, and advance the scheduler. Its record counts
    the tokens the shared prefix spared (``shared_prefix_tokens``: its P tokens x (conversations - 1))."""

    def __init__(self, model, loss_module, optimizer, scheduler, device, dist: Distributed,
                 max_grad_norm: float | None, autocast_dtype: torch.dtype | None, shared_prefix: bool = False):
        self.model, self.shared_prefix = model, shared_prefix
        self.loss_module, self.optimizer, self.scheduler = loss_module, optimizer, scheduler
        self.device, self.dist, self.max_grad_norm = device, dist, max_grad_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        # full fine-tuning in bf16: fp32 master weights, bf16 compute
        self.autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                         else contextlib.nullcontext())

    def __call__(self, group: list[Batch]) -> dict | None:
        dist = self.dist
        n_label = dist.global_sum(sum(b.n_label_tokens for b in group))
        if n_label == 0:
            return None
        t0 = time.perf_counter()
        loss_sum = 0.0
        for i, b in enumerate(group):
            with dist.no_sync(last=i == len(group) - 1):
                with self.autocast:
                    loss = self.loss_module(**b.to(self.device).loss_inputs()) / n_label
                dist.backward(loss * dist.world_size)  # data-parallel wrappers average over ranks
            loss_sum += float(loss.detach())
        lr = self.optimizer.param_groups[0]["lr"]
        grad_norm = dist.optimizer_step(self.optimizer, self.params, self.max_grad_norm)  # clip, step, zero grads
        self.scheduler.step()
        dt = time.perf_counter() - t0
        n_tokens = sum(b.n_tokens for b in group)
        return {"loss": dist.global_sum(loss_sum), "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens,
                "label_tokens": n_label, "tokens_per_s": n_tokens / dt if dt > 0 else 0.0, "step_s": dt,
                "shared_prefix_tokens": sum(self._spared_tokens(b) for b in group)}

    def _spared_tokens(self, batch: Batch) -> int:
        return shared_prefix_spared_tokens(self.model, batch) if self.shared_prefix else 0


def _validate(step: _OptimizerStep, val_batches: list[Batch], state: TrainState, patience: int | None,
              hooks: Hooks, task_score: Callable[[], float] | None) -> bool:
    """Record validation loss and task score (under the step's autocast); returns True when early
    stopping says to stop."""
    with step.autocast:
        val = evaluate_loss(step.loss_module, val_batches, step.device)
        score = task_score() if task_score is not None else None
    improved = _better(score, val, state)
    if improved:
        state.best_val_loss, state.best_task_score, state.best_step = val, score, state.step
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    record = {"step": state.step, "epoch": state.epoch, "val_loss": val}
    if score is not None:
        record["task_score"] = score
    state.val_history.append(record)
    if hooks.on_eval:
        hooks.on_eval(record, improved)
    return patience is not None and state.evals_without_improvement >= patience


def _better(score: float | None, val_loss: float, state: TrainState) -> bool:
    """Better than the best so far: a higher task score, or the same score and a lower validation loss
    (validation loss alone without a task score)."""
    if state.best_val_loss is None:
        return True
    if score is not None and state.best_task_score is not None and score != state.best_task_score:
        return score > state.best_task_score
    return val_loss < state.best_val_loss
