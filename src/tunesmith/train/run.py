"""`tunesmith train`: from a run config and prepared data to a saved adapter (or full model)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepare import PreparedData
from tunesmith.errors import DataError
from tunesmith.models.loading import load_tokenizer, model_dir_or_id
from tunesmith.train.batching import epoch_batches
from tunesmith.train.loop import train_loop
from tunesmith.train.methods import build_trainable_model, count_parameters
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


def save_trained(model, tokenizer, cfg: RunConfig) -> Path:
    """Save a standard PEFT adapter folder (or the full model) atomically into the run folder."""
    if cfg.train.method == "full":
        target = cfg.run_dir / "model"
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        return target
    target = cfg.run_dir / "adapter"
    # Point the adapter at a base that plain peft can load: the resolved folder or hub id.
    model.peft_config["default"].base_model_name_or_path = model_dir_or_id(cfg.model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return target


def train_from_config(cfg: RunConfig, prepared: PreparedData) -> TrainOutput:
    tc = cfg.train
    tokenizer = load_tokenizer(cfg.model)
    train_ex, report = tokenize_records(
        tokenizer, prepared.train, max_seq_length=tc.max_seq_length,
        completion_only=tc.completion_only_loss, truncation=tc.truncation,
    )
    val_ex, _ = tokenize_records(
        tokenizer, prepared.validation, max_seq_length=tc.max_seq_length,
        completion_only=tc.completion_only_loss, truncation="truncate",
    )
    if report.rejected:
        console.print(f"[yellow]{len(report.rejected)} training examples not used[/] (listed in tokenize_rejected.json)")
        write_json(cfg.run_dir / "tokenize_rejected.json", report.rejected)
    if not train_ex:
        raise DataError("no training example fits train.max_seq_length", hint="raise train.max_seq_length or set train.truncation: truncate")

    model, device = build_trainable_model(cfg)
    trainable, total = count_parameters(model)
    pad_id = tokenizer.pad_token_id

    def batches_for(epoch: int):
        return epoch_batches(
            train_ex, batch_size=tc.batch_size, packing=tc.packing, row_length=tc.max_seq_length,
            pad_id=pad_id, seed=cfg.seed, epoch=epoch,
        )

    steps_per_epoch = math.ceil(len(batches_for(0)) / tc.grad_accum)
    total_steps = tc.max_steps or max(1, math.ceil(steps_per_epoch * tc.epochs))
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    val_batches = (
        epoch_batches(val_ex, batch_size=tc.batch_size, packing=tc.packing, row_length=tc.max_seq_length,
                      pad_id=pad_id, seed=cfg.seed, epoch=0)
        if val_ex else None
    )

    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay
    )
    scheduler = get_scheduler(
        tc.scheduler, optimizer, num_warmup_steps=round(tc.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    console.print(
        f"[bold]train[/]: {tc.method} on {cfg.model.name_or_path} ({device.type}, "
        f"{next(model.parameters()).dtype}), {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.2f}%); {len(train_ex)} examples, {total_steps} steps "
        f"(batch {tc.batch_size} x accumulation {tc.grad_accum}{', packed' if tc.packing else ''})"
    )

    metrics_path = cfg.run_dir / "train_metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    with Progress(
        TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("train", total=total_steps, loss="-")

        def on_step(rec: dict) -> None:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            progress.update(task, advance=1, loss=f"{rec['loss']:.4f}")
            if rec["step"] % tc.logging_steps == 0 or rec["step"] == 1:
                progress.console.log(
                    f"step {rec['step']}/{total_steps} loss {rec['loss']:.4f} lr {rec['lr']:.2e} "
                    f"grad_norm {rec['grad_norm']:.3f} {rec['tokens_per_s']:.0f} tok/s"
                )

        result = train_loop(
            model, optimizer, scheduler, epoch_batches=batches_for, n_epochs=n_epochs, total_steps=total_steps,
            grad_accum=tc.grad_accum, device=device, max_grad_norm=tc.max_grad_norm, val_batches=val_batches,
            on_step=on_step,
        )
    out_dir = save_trained(model, tokenizer, cfg)
    final_loss = sum(r["loss"] for r in result.history[-5:]) / max(1, len(result.history[-5:]))
    val_loss = result.val_history[-1]["val_loss"] if result.val_history else None
    summary = {
        "method": tc.method,
        "steps": result.steps,
        "examples": len(train_ex),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "first_loss": result.history[0]["loss"] if result.history else None,
        "final_loss": final_loss,
        "val_loss": val_loss,
        "val_history": result.val_history,
        "train_seconds": result.train_seconds,
        "tokens_per_s": result.tokens / result.train_seconds if result.train_seconds else None,
        "output_dir": str(out_dir),
    }
    write_json(cfg.run_dir / "train_summary.json", summary)
    console.print(
        f"[bold]train[/]: done in {result.train_seconds:.0f}s, loss {summary['first_loss']:.3f} -> {final_loss:.3f}"
        + (f", validation loss {val_loss:.3f}" if val_loss is not None else "")
        + f"; saved {out_dir}"
    )
    return TrainOutput(out_dir, result.steps, final_loss, val_loss, result.train_seconds, summary["tokens_per_s"] or 0.0)
