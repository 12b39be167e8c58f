"""`tunesmith train`: from a run config and prepared data to a saved adapter (or full model).

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel with
DDP, FSDP2 or DeepSpeed ZeRO-2/3 (:mod:`tunesmith.train.parallel`; gloo on CPU, NCCL on GPUs).
Checkpoints are collectives; the final weights are gathered and only rank 0 writes them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
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
from tunesmith.data.prepare import PreparedData
from tunesmith.errors import DataError, TunesmithError
from tunesmith.models.loading import load_tokenizer, model_dir_or_id
from tunesmith.train.batching import epoch_batches
from tunesmith.train.checkpoint import (
    TrainState,
    list_checkpoints,
    load_best,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from tunesmith.train.loop import Hooks, train_loop
from tunesmith.train.methods import (
    build_trainable_model,
    compute_dtypes,
    count_parameters,
)
from tunesmith.train.metrics import (
    Trackers,
    device_peak,
    flops_per_token,
    peak_memory_bytes,
    plot_loss_curve,
    step_line,
)
from tunesmith.train.parallel import (
    Distributed,
    deepspeed_config,
    gather_trainable,
    init_distributed,
    setup_data_parallel,
)
from tunesmith.train.quiet import model_loading_noise_silenced
from tunesmith.train.tokenize import tokenize_records
from tunesmith.utils.io import atomic_dir, write_json


@dataclass
class TrainOutput:
    output_dir: Path  # adapter/ or model/
    steps: int
    final_loss: float
    val_loss: float | None
    train_seconds: float
    tokens_per_s: float


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


def train_from_config(cfg: RunConfig, prepared: PreparedData, *, resume: bool = False) -> TrainOutput:
    tc = cfg.train
    tokenizer = load_tokenizer(cfg.model)
    tok_kw = dict(max_seq_length=tc.max_seq_length, completion_only=tc.completion_only_loss)
    train_ex, report = tokenize_records(tokenizer, prepared.train, truncation=tc.truncation, **tok_kw)
    val_ex, _ = tokenize_records(tokenizer, prepared.validation, truncation="truncate", **tok_kw)
    if not train_ex:
        raise DataError("no training example fits train.max_seq_length",
                        hint="raise train.max_seq_length or set train.truncation: truncate")

    if tc.preflight:
        _preflight(cfg)
    with model_loading_noise_silenced():
        model, device = build_trainable_model(cfg)
    _, autocast_dtype = compute_dtypes(cfg, device)
    dist = init_distributed(device, tc.distributed, tc.zero_stage or 2)
    main = dist.rank == 0
    trainable, total = count_parameters(model)  # before ZeRO-3 partitions the parameters away
    avg_row = sum(len(e.input_ids) for e in train_ex) / len(train_ex)
    fpt = flops_per_token(model, method=tc.method, seq_len=int(avg_row))
    weights_dtype = next(model.parameters()).dtype
    if report.rejected and main:
        console.print(f"[yellow]{len(report.rejected)} training examples not used[/] (reasons in tokenize_rejected.json)")
        write_json(cfg.run_dir / "tokenize_rejected.json", report.rejected)

    def batches_for(epoch: int):
        return epoch_batches(train_ex, batch_size=tc.batch_size, packing=tc.packing, row_length=tc.max_seq_length,
                             pad_id=tokenizer.pad_token_id, seed=cfg.seed, epoch=epoch)

    steps_per_epoch = math.ceil(len(batches_for(0)) / (tc.grad_accum * dist.world_size))
    total_steps = tc.max_steps or max(1, math.ceil(steps_per_epoch * tc.epochs))
    val_batches = (epoch_batches(val_ex, batch_size=tc.batch_size, packing=tc.packing, row_length=tc.max_seq_length,
                                 pad_id=tokenizer.pad_token_id, seed=cfg.seed, epoch=0) if val_ex else None)

    def make_optimizer():
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)

    ds_config = None
    if dist.strategy == "deepspeed":
        ds_config = deepspeed_config(batch_size=tc.batch_size, grad_accum=tc.grad_accum, world_size=dist.world_size,
                                     zero_stage=dist.zero_stage, max_grad_norm=tc.max_grad_norm, dtype=weights_dtype)
        if main:
            write_json(cfg.run_dir / "deepspeed_config.json", ds_config)
    optimizer = setup_data_parallel(model, dist, device, make_optimizer, ds_config)

    from transformers import get_scheduler

    scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=round(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)

    ckpt_dir = cfg.run_dir / "checkpoints"
    metrics_path = cfg.run_dir / "train_metrics.jsonl"
    state = TrainState()
    if resume:
        found = list_checkpoints(ckpt_dir)
        if not found:
            raise TunesmithError(f"--resume: no complete checkpoint in {ckpt_dir}", hint="run without --resume to start over")
        state = load_checkpoint(found[-1], model, optimizer, scheduler, dist)
        if main:
            console.print(f"[bold]train[/]: resumed from {found[-1].name} (step {state.step}, epoch {state.epoch})")
            # metrics after the checkpoint were never part of this run's history
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in state.history))
    elif main:
        metrics_path.unlink(missing_ok=True)

    peak = device_peak(device, autocast_dtype or compute_dtypes(cfg, device)[0]) if main else None
    if main:
        console.print(
            f"[bold]train[/]: {tc.method} on {cfg.model.name_or_path} ({device.type}, {weights_dtype}"
            + (f", {autocast_dtype} autocast" if autocast_dtype else "")
            + (f", {dist.world_size} processes, {_strategy_name(dist)}" if dist.world_size > 1 else "") + f"), {trainable:,} trainable of {total:,} "
            f"parameters ({100 * trainable / total:.2f}%); {len(train_ex)} examples, {total_steps} steps "
            f"(batch {tc.batch_size} x accumulation {tc.grad_accum}{', packed' if tc.packing else ''})"
        )
        console.print(f"[bold]train[/]: MFU against {peak.describe()}")
    trackers = Trackers(tc.report_to if main else [], cfg.run_dir, cfg.train.model_dump())
    fault_step = int(os.environ.get("TUNESMITH_FAULT_KILL_AFTER_STEP", "0"))  # fault injection for resume tests

    with Progress(TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not main) as progress, trackers:  # trackers end FAILED on error
        task = progress.add_task("train", total=total_steps, completed=state.step, loss="-")

        def on_step(rec: dict) -> None:
            rec["tokens_per_s"] *= dist.world_size
            rec["model_flops_per_s"] = fpt * rec["tokens_per_s"]
            rec["mfu"] = peak.mfu(rec["model_flops_per_s"] / dist.world_size) if peak else None  # per device
            rec["peak_memory_gb"] = peak_memory_bytes(device) / 1e9
            if main:
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                trackers.log(rec)
                progress.update(task, completed=rec["step"], loss=f"{rec['loss']:.4f}")
                if rec["step"] % tc.logging_steps == 0 or rec["step"] == 1:
                    progress.console.log(step_line(rec, total_steps))
            if fault_step and rec["step"] == fault_step:
                os.kill(os.getpid(), 9)

        def on_eval(rec: dict, improved: bool) -> None:
            if main:
                progress.console.log(f"validation loss {rec['val_loss']:.4f} at step {rec['step']}"
                                     + (" (best)" if improved else ""))
                trackers.log(rec)
            if improved and tc.load_best_at_end:
                save_best(ckpt_dir, model, dist)  # a collective when sharded

        def checkpoint(st: TrainState) -> None:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, st, dist, keep=tc.keep_checkpoints)

        state = train_loop(
            model, optimizer, scheduler, epoch_batches=batches_for, total_steps=total_steps, grad_accum=tc.grad_accum,
            device=device, state=state, max_grad_norm=tc.max_grad_norm, val_batches=val_batches,
            eval_every=tc.eval_steps, save_every=tc.save_steps, save_each_epoch=tc.save_every_epoch,
            early_stopping_patience=tc.early_stopping_patience,
            hooks=Hooks(on_step=on_step, on_eval=on_eval, checkpoint=checkpoint), dist=dist,
            autocast_dtype=autocast_dtype,
        )
    used_best = tc.load_best_at_end and bool(state.val_history) and load_best(ckpt_dir, model, dist)
    # sharded parameters are gathered (every rank takes part); rank 0 then saves plain tensors
    gathered = gather_trainable(model, dist) if dist.sharded else None
    if not main:
        dist.barrier()
        return TrainOutput(cfg.run_dir, state.step, 0.0, None, 0.0, 0.0)
    out_dir = save_trained(model, tokenizer, cfg, state_dict=gathered)
    hist = state.history
    final_loss = sum(r["loss"] for r in hist[-5:]) / max(1, len(hist[-5:]))
    seconds = sum(r["step_s"] for r in hist)
    tokens = sum(r["tokens"] for r in hist) * dist.world_size
    summary = {
        "method": tc.method, "steps": state.step, "examples": len(train_ex), "world_size": dist.world_size,
        "trainable_parameters": trainable, "total_parameters": total,
        "first_loss": hist[0]["loss"] if hist else None, "final_loss": final_loss,
        "best_val_loss": state.best_val_loss, "used_best_checkpoint": used_best, "val_history": state.val_history,
        "train_seconds": seconds, "tokens_per_s": tokens / seconds if seconds else None,
        "peak_memory_gb": peak_memory_bytes(device) / 1e9, "mfu_peak": peak.summary(), "output_dir": str(out_dir),
    }
    write_json(cfg.run_dir / "train_summary.json", summary)
    plot_loss_curve(metrics_path, state.val_history, cfg.run_dir / "loss_curve.png")
    val = state.val_history[-1]["val_loss"] if state.val_history else None
    console.print(
        f"[bold]train[/]: done, {state.step} steps in {seconds:.0f}s, loss {summary['first_loss']:.3f} -> {final_loss:.3f}"
        + (f", validation loss {val:.3f}" if val is not None else "")
        + (" (best checkpoint kept)" if used_best else "") + f"; saved {out_dir}"
    )
    dist.barrier()  # the other ranks exit only once the result is on disk
    return TrainOutput(out_dir, state.step, final_loss, val, seconds, summary["tokens_per_s"] or 0.0)


def _strategy_name(dist: Distributed) -> str:
    return {"ddp": "DDP", "fsdp": "FSDP2", "deepspeed": f"DeepSpeed ZeRO-{dist.zero_stage}"}[dist.strategy]
