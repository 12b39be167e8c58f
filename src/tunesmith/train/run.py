"""`tunesmith train`: from a run config and prepared data to a saved adapter (or full model).

Three phases: :func:`setup` (tokenise, load and wrap the model, optimizer, schedule, the validation
scorer, resume), :func:`train` (the loop of :mod:`tunesmith.train.loop`, with the metrics log,
trackers and checkpoints as its hooks, paced by :mod:`tunesmith.train.budget` under
``train.time_budget``) and :func:`finish` (best weights, save, summary).

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel with
DDP, FSDP2 or DeepSpeed ZeRO-2/3 (:mod:`tunesmith.train.parallel`; gloo on CPU, NCCL on GPUs).
Checkpoints are collectives; the final weights are gathered and only rank 0 writes them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepared import PreparedData
from tunesmith.errors import ConfigError, DataError, TunesmithError
from tunesmith.models.loading import load_tokenizer, model_dir_or_id
from tunesmith.train.batching import Batch, epoch_batches
from tunesmith.train.budget import BudgetPacer, FittedSchedule, Plan, format_duration
from tunesmith.train.checkpoint import (
    TrainState,
    list_checkpoints,
    load_best,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from tunesmith.train.faults import kill_after_step_hook
from tunesmith.train.loop import Hooks, train_loop
from tunesmith.train.methods import (
    build_trainable_model,
    compute_dtypes,
    count_parameters,
)
from tunesmith.train.parallel import (
    Distributed,
    deepspeed_config,
    gather_trainable,
    init_distributed,
    setup_data_parallel,
)
from tunesmith.utils.quiet import model_loading_noise_silenced
from tunesmith.train.task_eval import ValidationScorer, scorable, validation_scorer
from tunesmith.train.telemetry import (
    PeakFlops,
    Trackers,
    TrainingFlops,
    device_peak,
    peak_memory_bytes,
    plot_loss_curve,
    step_line,
    training_flops,
)
from tunesmith.train.tokenize import TokenizedExample, is_general, tokenize_records
from tunesmith.train.validation_set import ValidationBatches
from tunesmith.utils.io import atomic_dir, write_json


@dataclass
class TrainOutput:
    output_dir: Path  # adapter/ or model/
    steps: int
    final_loss: float
    val_loss: float | None
    train_seconds: float
    tokens_per_s: float


def train_from_config(cfg: RunConfig, prepared: PreparedData, *, resume: bool = False,
                      clock: Callable[[], float] = time.monotonic) -> TrainOutput:
    """``tunesmith train``: setup -> train -> finish. ``clock``: what ``train.time_budget`` is measured by."""
    run = setup(cfg, prepared, resume=resume, clock=clock)
    state = train(run)
    return finish(run, state)


@dataclass
class TrainSetup:
    """What the setup phase builds for the training and finishing phases."""

    cfg: RunConfig
    tokenizer: Any
    n_examples: int  # training examples that fit
    model: Any
    device: torch.device
    autocast_dtype: torch.dtype | None
    dist: Distributed
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState  # where training starts (step 0, or the resumed checkpoint's)
    epoch_batches: Callable[[int], list[Batch]]
    val_batches: ValidationBatches | None  # what the validation loss is computed on (a subset when asked / budgeted)
    total_steps: int
    flops: TrainingFlops
    peak: PeakFlops | None  # the MFU denominator (rank 0 only)
    parameters: tuple[int, int]  # (trainable, total), counted before ZeRO-3 partitions them away
    scorer: ValidationScorer | None  # the task score of validations (select_by task_score); None: validation loss
    clock: Callable[[], float]
    started: float  # the clock at the start of `tunesmith train`, rank 0's
    schedule: FittedSchedule | None  # the LR multiplier the time budget re-fits (train.time_budget only)
    guard: dict = field(default_factory=dict)  # the forgetting guard as applied (mode, rows, kl_weight, replay cache)
    pacer: BudgetPacer | None = None  # set by train() under train.time_budget

    @property
    def main(self) -> bool:
        return self.dist.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        return self.cfg.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.cfg.run_dir / "train_metrics.jsonl"


# --- setup: data, model, data-parallel wrapping, optimizer, schedule, resume ----------------------

def setup(cfg: RunConfig, prepared: PreparedData, *, resume: bool = False,
          clock: Callable[[], float] = time.monotonic) -> TrainSetup:
    """Tokenise, load and wrap the model, build the optimizer, schedule and validation scorer, restore
    ``--resume``'s checkpoint."""
    started = clock()
    tc = cfg.train
    cfg.run_dir.mkdir(parents=True, exist_ok=True)  # also when called without the pipeline (benchmarks, scripts)
    tokenizer = load_tokenizer(cfg.model)
    train_ex, val_ex, rejected = _tokenize(cfg, tokenizer, prepared)
    to_score = _records_to_score(cfg, prepared, has_validation=bool(val_ex))
    if tc.preflight:
        _preflight(cfg)
    with model_loading_noise_silenced():
        model, device = build_trainable_model(cfg)
    loaded_dtype, autocast_dtype = compute_dtypes(cfg, device)
    dist = init_distributed(device, tc.distributed, tc.zero_stage or 2)
    train_ex, guard = _forgetting_guard(cfg, model, tokenizer, prepared, train_ex, dist)
    trainable, total = count_parameters(model)  # before ZeRO-3 partitions the parameters away
    avg_row = sum(len(e.input_ids) for e in train_ex) / len(train_ex)
    flops = training_flops(model, method=tc.method, seq_len=int(avg_row))
    weights_dtype = next(model.parameters()).dtype
    if rejected and dist.rank == 0:
        console.print(f"[yellow]{len(rejected)} training examples not used[/] (reasons in tokenize_rejected.json)")
        write_json(cfg.run_dir / "tokenize_rejected.json", rejected)

    def batches(examples: list[TokenizedExample], epoch: int) -> list[Batch]:
        return epoch_batches(examples, batch_size=tc.batch_size, packing=tc.packing, row_length=tc.max_seq_length,
                             pad_id=tokenizer.pad_token_id, seed=cfg.seed, epoch=epoch)

    steps_per_epoch = math.ceil(len(batches(train_ex, 0)) / (tc.grad_accum * dist.world_size))
    total_steps = tc.max_steps or max(1, math.ceil(steps_per_epoch * tc.epochs))
    optimizer = _data_parallel_optimizer(cfg, model, dist, device, weights_dtype, guard["kl_weight"])
    scheduler, schedule = _lr_schedule(cfg, optimizer, total_steps)
    run = TrainSetup(
        cfg=cfg, tokenizer=tokenizer, n_examples=len(train_ex), model=model, device=device,
        autocast_dtype=autocast_dtype, dist=dist, optimizer=optimizer, scheduler=scheduler, state=TrainState(),
        epoch_batches=lambda epoch: batches(train_ex, epoch),
        val_batches=ValidationBatches(val_ex, lambda examples: batches(examples, 0), seed=cfg.seed,
                                      n=tc.validation_examples) if val_ex else None,
        total_steps=total_steps, flops=flops,
        peak=device_peak(device, autocast_dtype or loaded_dtype) if dist.rank == 0 else None,
        parameters=(trainable, total),
        scorer=_task_scorer(cfg, to_score, tokenizer, dist), clock=clock,
        started=_rank0(dist, started), schedule=schedule, guard=guard,
    )
    if resume:
        run.state = _restore(run)
    elif run.main:
        run.metrics_path.unlink(missing_ok=True)
    if run.main:
        _announce(run, weights_dtype)
    return run


def _forgetting_guard(cfg: RunConfig, model, tokenizer, prepared: PreparedData, train_ex: list[TokenizedExample],
                      dist: Distributed) -> tuple[list[TokenizedExample], dict]:
    """Apply train.forgetting_guard to the general rows: replay swaps their answers for the base's own
    (generated by rank 0 once, cached); kl sets the loss module's KL weight. Returns (training examples, what
    was applied)."""
    tc = cfg.train
    mode = tc.guard_mode
    general = [r for r in prepared.train if is_general(r)]
    info: dict[str, Any] = {"mode": mode, "asked": tc.forgetting_guard, "general_rows": len(general),
                            "kl_weight": tc.guard.kl_weight if "kl" in mode and general else 0.0,
                            "kl_on": tc.guard.kl_on}
    if mode == "off" or not general:
        return train_ex, info
    if "replay" in mode:
        from tunesmith.train.guard import base_answers, base_generator, replay_prompt, replay_records

        generate = base_generator(model, tokenizer, max_new_tokens=tc.guard.replay_max_new_tokens,
                                  batch_size=cfg.eval.batch_size)
        cache = cfg.run_dir / "guard" / "base_answers.json"
        prompts = [replay_prompt(r) for r in general]
        args = (cache, model_dir_or_id(cfg.model), prompts, tc.guard.replay_max_new_tokens, generate)
        if dist.rank == 0:
            answers, cached = base_answers(*args)
        dist.barrier()  # the other ranks read rank 0's answers from the cache
        if dist.rank != 0:
            answers, cached = base_answers(*args)
        replayed, _ = tokenize_records(tokenizer, replay_records(general, answers), max_seq_length=tc.max_seq_length,
                                       completion_only=tc.completion_only_loss, truncation="truncate")
        train_ex = [e for e in train_ex if not e.general] + replayed
        info.update(replay_rows=len(replayed), replay_cached=cached, replay_cache=str(cache))
        if dist.rank == 0:
            console.print(f"[bold]train[/]: forgetting guard {mode}: {len(replayed)} general rows answered by the base "
                          f"({'cached' if cached else 'generated'}, {cache})")
    return train_ex, info


def _lr_schedule(cfg: RunConfig, optimizer, total_steps: int):
    """(scheduler, the re-fittable multiplier under train.time_budget else None). Without a budget,
    transformers' schedule; with one, the same shapes in :class:`FittedSchedule`, which the plan re-fits."""
    tc = cfg.train
    warmup = round(tc.warmup_ratio * total_steps)
    if tc.time_budget is None:
        from transformers import get_scheduler

        return get_scheduler(tc.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps), None
    schedule = FittedSchedule(tc.scheduler, warmup, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), schedule


def _records_to_score(cfg: RunConfig, prepared: PreparedData, *, has_validation: bool) -> list[dict] | None:
    """The validation records to score when train.select_by asks for (auto: allows) the task score, else
    None; an impossible task_score is refused here, before the model loads."""
    wanted = cfg.train.select_by
    records = scorable(prepared.validation) if has_validation and wanted != "val_loss" else []
    if wanted == "task_score" and not records:
        raise ConfigError("train.select_by is task_score but there is no validation split to score"
                          if not has_validation else "train.select_by is task_score but no validation example "
                          "has an answer to score (raw-text data)",
                          hint="set data.validation_fraction above 0, or train.select_by: val_loss")
    return records or None


def _task_scorer(cfg: RunConfig, records: list[dict] | None, tokenizer, dist: Distributed) -> ValidationScorer | None:
    """The validation scorer when checkpoints are chosen by task score, else None (validation loss)."""
    if records is None:
        return None
    if dist.sharded:  # each rank answers on its own: it needs the whole model
        if cfg.train.select_by == "task_score":
            raise ConfigError(f"train.select_by: task_score generates answers on every process, which needs the "
                              f"whole model; with train.distributed {dist.strategy} the model is sharded",
                              hint="use train.distributed: ddp (or deepspeed with zero_stage 2), or "
                              "train.select_by: val_loss")
        return None
    return validation_scorer(cfg, records, tokenizer, dist)


def _rank0(dist: Distributed, x: float) -> float:
    """Rank 0's ``x`` on every rank (a collective in multi-process runs)."""
    return dist.global_sum(x if dist.rank == 0 else 0.0)


def _tokenize(cfg: RunConfig, tokenizer, prepared: PreparedData):
    """(training examples, validation examples, rejected training examples with reasons)."""
    tc = cfg.train
    kw = dict(max_seq_length=tc.max_seq_length, completion_only=tc.completion_only_loss)
    train_ex, report = tokenize_records(tokenizer, prepared.train, truncation=tc.truncation, **kw)
    val_ex, _ = tokenize_records(tokenizer, prepared.validation, truncation="truncate", **kw)
    if not train_ex:
        raise DataError("no training example fits train.max_seq_length",
                        hint="raise train.max_seq_length or set train.truncation: truncate")
    return train_ex, val_ex, report.rejected


def _preflight(cfg: RunConfig) -> None:
    """Estimate peak memory from the model's config (no weights loaded) and refuse what cannot fit."""
    from transformers import AutoConfig

    from tunesmith.models.loading import (
        resolve_device,
        resolve_dtype,
        resolve_model_path,
    )
    from tunesmith.train.preflight import check_memory

    device = resolve_device(cfg.model.device)
    model_config = AutoConfig.from_pretrained(resolve_model_path(cfg.model), trust_remote_code=cfg.model.trust_remote_code)
    pf = check_memory(cfg, model_config, device, resolve_dtype(cfg.model.dtype, device))
    avail = f" of {pf.device_bytes / 2**30:.1f} GiB available" if pf.device_bytes else ""
    console.print(f"[bold]pre-flight[/]: estimated peak memory {pf.estimate_bytes / 2**30:.2f} GiB{avail}")


def _data_parallel_optimizer(cfg: RunConfig, model, dist: Distributed, device: torch.device,
                             weights_dtype: torch.dtype, kl_weight: float) -> torch.optim.Optimizer:
    """Wrap the model for the data-parallel strategy (writing the DeepSpeed config it runs with) and
    return the AdamW optimizer over what the strategy trains."""
    tc = cfg.train

    def make_optimizer():
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)

    ds_config = None
    if dist.strategy == "deepspeed":
        ds_config = deepspeed_config(batch_size=tc.batch_size, grad_accum=tc.grad_accum, world_size=dist.world_size,
                                     zero_stage=dist.zero_stage, max_grad_norm=tc.max_grad_norm, dtype=weights_dtype)
        if dist.rank == 0:
            write_json(cfg.run_dir / "deepspeed_config.json", ds_config)
    return setup_data_parallel(model, dist, device, make_optimizer, ds_config, kl_weight=kl_weight,
                               shared_prefix=cfg.train.uses_shared_prefix, kl_on=tc.guard.kl_on)


def _restore(run: TrainSetup) -> TrainState:
    """``--resume``: load the newest complete checkpoint; the metrics log keeps only the steps before it."""
    found = list_checkpoints(run.ckpt_dir)
    if not found:
        raise TunesmithError(f"--resume: no complete checkpoint in {run.ckpt_dir}",
                             hint="run without --resume to start over")
    state = load_checkpoint(found[-1], run.model, run.optimizer, run.scheduler, run.dist)
    if run.main:
        console.print(f"[bold]train[/]: resumed from {found[-1].name} (step {state.step}, epoch {state.epoch})")
        # metrics after the checkpoint were never part of this run's history
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in state.history))
    return state


def _announce(run: TrainSetup, weights_dtype: torch.dtype) -> None:
    cfg, tc, dist = run.cfg, run.cfg.train, run.dist
    trainable, total = run.parameters
    console.print(
        f"[bold]train[/]: {tc.method} on {cfg.model.name_or_path} ({run.device.type}, {weights_dtype}"
        + (f", {run.autocast_dtype} autocast" if run.autocast_dtype else "")
        + (f", {dist.world_size} processes, {_strategy_name(dist)}" if dist.world_size > 1 else "")
        + f"), {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%); "
        f"{run.n_examples} examples, {'at most ' if tc.time_budget else ''}{run.total_steps} steps "
        f"(batch {tc.batch_size} x accumulation {tc.grad_accum}{', packed' if tc.packing else ''})"
    )
    console.print(f"[bold]train[/]: MFU against {run.peak.describe()}")
    if run.val_batches:
        what = (f"task score ({run.scorer.describe()}), validation loss breaking ties" if run.scorer
                else "validation loss")
        console.print(f"[bold]train[/]: best checkpoint by {escape(what)}")
        if tc.validation_examples is not None:
            console.print(f"[bold]train[/]: validation loss on {run.val_batches.describe()} examples "
                          "(train.validation_examples; the same ones at every validation)")
    if tc.time_budget:
        console.print(f"[bold]train[/]: time budget {format_duration(tc.time_budget)}: the first steps are timed "
                      "to plan the rest")


# --- train: the loop, with progress, metrics log, trackers and checkpoints as its hooks ---------------

def train(run: TrainSetup) -> TrainState:
    tc = run.cfg.train
    trackers = Trackers(tc.report_to if run.main else [], run.cfg.run_dir, tc.model_dump())
    with Progress(TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not run.main) as progress, trackers:  # trackers end FAILED on error
        task = progress.add_task("train", total=run.total_steps, completed=run.state.step, loss="-")
        fault = kill_after_step_hook()  # a test helper, inert unless TUNESMITH_FAULT_KILL_AFTER_STEP is set

        def on_step(rec: dict) -> None:
            _measure_step(run, rec)
            if run.main:
                with open(run.metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                trackers.log(rec)
                last = run.pacer.last_step if run.pacer else run.total_steps  # a budget's re-fit moves it
                progress.update(task, completed=rec["step"], total=last, loss=f"{rec['loss']:.4f}")
                if rec["step"] % tc.logging_steps == 0 or rec["step"] == 1:
                    progress.console.log(step_line(rec, last))
            if fault:
                fault(rec)

        def on_eval(rec: dict, improved: bool) -> None:
            if run.main:
                score = f", task score {rec['task_score']:.3f}" if "task_score" in rec else ""
                progress.console.log(f"validation loss {rec['val_loss']:.4f}{score} at step {rec['step']}"
                                     + (" (best)" if improved else ""))
                trackers.log(rec)
            rec["val_examples"] = run.val_batches.n  # kept in val_history: losses on other subsets do not compare
            rec["time"] = time.time()  # when it was measured (benchmarks/time_to_quality.py: time to a target score)
            if improved and tc.load_best_at_end:
                save_best(run.ckpt_dir, run.model, run.dist)  # a collective when sharded

        def checkpoint(st: TrainState) -> None:
            save_checkpoint(run.ckpt_dir, run.model, run.optimizer, run.scheduler, st, run.dist,
                            keep=tc.keep_checkpoints)

        def on_plan(plan: Plan) -> None:
            run.total_steps = plan.steps
            progress.update(task, total=plan.steps)
            if _size_validation(run, plan.validation_examples):
                _forget_best(run.state)
            if run.main:
                progress.console.print(f"[bold]train[/]: {escape(plan.describe())}", soft_wrap=True)

        run.pacer = _pacer(run, on_plan) if tc.time_budget else None
        progress.update(task, total=run.total_steps)
        return train_loop(
            run.model, run.optimizer, run.scheduler, epoch_batches=run.epoch_batches, total_steps=run.total_steps,
            grad_accum=tc.grad_accum, device=run.device, state=run.state, max_grad_norm=tc.max_grad_norm,
            val_batches=run.val_batches, eval_every=tc.eval_steps, save_every=tc.save_steps,
            save_each_epoch=tc.save_every_epoch, early_stopping_patience=tc.early_stopping_patience,
            hooks=Hooks(on_step=on_step, on_eval=on_eval, checkpoint=checkpoint),
            dist=run.dist, autocast_dtype=run.autocast_dtype,
            task_score=_task_score(run), pacer=run.pacer,
            kl_weight=run.guard["kl_weight"], shared_prefix=tc.uses_shared_prefix, kl_on=tc.guard.kl_on,
        )


def _pacer(run: TrainSetup, on_plan: Callable[[Plan], None]) -> BudgetPacer:
    tc = run.cfg.train
    # the budget sizes the validation loss unless the user did (train.validation_examples)
    sized = run.val_batches is not None and tc.validation_examples is None
    pacer = BudgetPacer(
        budget_s=tc.time_budget, clock=run.clock, started=run.started, schedule=run.schedule,
        configured_steps=run.total_steps, limited_name="train.max_steps" if tc.max_steps else "train.epochs",
        warmup_ratio=tc.warmup_ratio, has_validation=bool(run.val_batches), eval_every=tc.eval_steps,
        on_plan=on_plan, share=lambda x: _rank0(run.dist, x), state=run.state,
        validation_tokens=run.val_batches.token_counts if sized else None)
    _size_validation(run, pacer.validation_examples)
    if pacer.resumed:
        run.total_steps = pacer.last_step
        if run.main:
            console.print(f"[bold]train[/]: --resume continues the time budget's plan ({pacer.last_step} steps); "
                          "the budget's clock is not applied again")
    elif run.main and sized and run.val_batches.n < run.val_batches.total:
        console.print(f"[bold]train[/]: the probe's validation loss on {run.val_batches.describe()} examples; the "
                      "plan then chooses how many fit the budget (train.validation_examples: your own choice)")
    return pacer


def _size_validation(run: TrainSetup, examples: int | None) -> bool:
    """Compute the validation loss on the first ``examples`` of the validation set's fixed order (None: leave
    it); True when that changed its examples."""
    return examples is not None and run.val_batches is not None and run.val_batches.resize(examples)


def _forget_best(state: TrainState) -> None:
    """The plan changed the validation loss's examples: the probe's validation, on others, stays in the history
    but is not compared with the later ones (the best checkpoint is chosen among those)."""
    state.best_val_loss = state.best_task_score = state.best_step = None
    state.evals_without_improvement = 0


def _task_score(run: TrainSetup) -> Callable[[], float] | None:
    """The validations' task score; under a time budget timed apart from the validation loss (which the budget
    sizes)."""
    if run.scorer is None:
        return None

    def score() -> float:
        return run.scorer(run.model)

    return (lambda: run.pacer.time_task_score(score)) if run.pacer else score


def _measure_step(run: TrainSetup, rec: dict) -> None:
    """Add throughput over all ranks, model FLOP/s, MFU per device and peak memory to a step record."""
    rec["tokens_per_s"] *= run.dist.world_size
    # FLOPs done: a shared prefix's spared tokens were not encoded (tokens/s still counts every row's tokens)
    encoded = 1 - rec.get("shared_prefix_tokens", 0) / rec["tokens"] if rec["tokens"] else 1.0
    label_tokens_per_s = rec["label_tokens"] / rec["step_s"] if rec["step_s"] > 0 else 0.0
    rec["model_flops_per_s"] = run.flops.per_second(rec["tokens_per_s"] * encoded, label_tokens_per_s)
    rec["mfu"] = run.peak.mfu(rec["model_flops_per_s"] / run.dist.world_size) if run.peak else None
    rec["peak_memory_gb"] = peak_memory_bytes(run.device) / 1e9


# --- finish: best weights, gather, save, summary -------------------------------------------------

def finish(run: TrainSetup, state: TrainState) -> TrainOutput:
    """Keep the best validation weights if asked, gather sharded weights (every rank), then rank 0
    saves the adapter or model, the summary and the loss curve."""
    tc = run.cfg.train
    # best_step None: no validation, or none since the time budget's plan changed the validation examples
    used_best = tc.load_best_at_end and state.best_step is not None and load_best(run.ckpt_dir, run.model, run.dist)
    # sharded parameters are gathered (every rank takes part); rank 0 then saves plain tensors
    gathered = gather_trainable(run.model, run.dist) if run.dist.sharded else None
    if not run.main:
        run.dist.barrier()
        return TrainOutput(run.cfg.run_dir, state.step, 0.0, None, 0.0, 0.0)
    out_dir = save_trained(run.model, run.tokenizer, run.cfg, state_dict=gathered)
    summary = _summary(run, state, out_dir, used_best)
    write_json(run.cfg.run_dir / "train_summary.json", summary)
    plot_loss_curve(run.metrics_path, state.val_history, run.cfg.run_dir / "loss_curve.png")
    val = state.val_history[-1]["val_loss"] if state.val_history else None
    over = run.peak.steps_over_peak if run.peak else 0
    cut = run.pacer.cut if run.pacer else None
    exhausted = bool(run.pacer and run.pacer.plan and run.pacer.plan.exhausted)
    console.print(
        f"[bold]train[/]: done, {state.step} steps in {summary['train_seconds']:.0f}s, "
        f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}"
        + (f", validation loss {val:.3f}" if val is not None else "")
        + (f" (best checkpoint kept: step {state.best_step}"
           + (f", task score {state.best_task_score:.3f}" if state.best_task_score is not None else "") + ")"
           if used_best else "")
        + (f"; the time budget cut the LR schedule at step {cut['at_step']} of {cut['planned_steps']} "
           f"(lr at {cut['lr_multiplier']:.2f} of its peak)" if cut else "")
        + (f"; [yellow]the time budget was exhausted after {state.step} steps[/] (what would fit: above)"
           if exhausted else "")
        + (f"; no MFU for {over} steps faster than the peak ({run.peak.source})" if over else "")
        + f"; saved {out_dir}"
    )
    run.dist.barrier()  # the other ranks exit only once the result is on disk
    return TrainOutput(out_dir, state.step, summary["final_loss"], val, summary["train_seconds"],
                       summary["tokens_per_s"] or 0.0)


def _summary(run: TrainSetup, state: TrainState, out_dir: Path, used_best: bool) -> dict:
    tc, hist = run.cfg.train, state.history
    trainable, total = run.parameters
    final_loss = sum(r["loss"] for r in hist[-5:]) / max(1, len(hist[-5:]))
    seconds = sum(r["step_s"] for r in hist)
    tokens = sum(r["tokens"] for r in hist) * run.dist.world_size
    return {
        "method": tc.method, "steps": state.step, "examples": run.n_examples, "world_size": run.dist.world_size,
        "trainable_parameters": trainable, "total_parameters": total,
        "first_loss": hist[0]["loss"] if hist else None, "final_loss": final_loss,
        "select_by": ("task_score" if run.scorer else "val_loss") if run.val_batches else None,
        "task_score_on": run.scorer.describe() if run.scorer else None,
        "best_step": state.best_step, "best_task_score": state.best_task_score,
        "best_val_loss": state.best_val_loss, "used_best_checkpoint": used_best, "val_history": state.val_history,
        "time_budget": run.pacer.summary(state) if run.pacer else None, "forgetting_guard": run.guard,
        "train_seconds": seconds, "tokens_per_s": tokens / seconds if seconds else None,
        "peak_memory_gb": peak_memory_bytes(run.device) / 1e9,
        "mfu_peak": run.peak.summary() if run.peak else None, "output_dir": str(out_dir),
    }


def save_trained(model, tokenizer, cfg: RunConfig, state_dict: dict | None = None) -> Path:
    """Save a standard PEFT adapter folder (or the full model) atomically into the run folder.
    ``state_dict``: gathered weights when the model's own parameters are sharded."""
    if cfg.train.method == "full":
        target = cfg.run_dir / "model"
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
        return target
    target = cfg.run_dir / "adapter"
    # Point the adapter at a base that plain peft can load: the resolved folder or hub id.
    model.peft_config["default"].base_model_name_or_path = model_dir_or_id(cfg.model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if cfg.model.add_special_tokens:
            tokenizer.save_pretrained(tmp)  # the base's tokenizer lacks the added tokens
    return target


def _strategy_name(dist: Distributed) -> str:
    return {"ddp": "DDP", "fsdp": "FSDP2", "deepspeed": f"DeepSpeed ZeRO-{dist.zero_stage}"}[dist.strategy]
