"""Sections trl / trl+liger: TRL's SFTTrainer on the same model, data and batch, in the same process."""

from __future__ import annotations

import time
import warnings

from gpucheck.context import Context
from gpucheck.device import GIB
from gpucheck.runner import Skip


def require_trl(ctx: Context, liger: bool) -> None:
    if liger and ctx.cpu:
        raise Skip("Liger: its Triton kernels need CUDA, skipped in the CPU dry run")
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as e:
        label = "TRL+Liger" if liger else "TRL"
        raise Skip(f"{label}: not installed, skipped ({e.name} missing; pip install 'trl>=1.10,<2')") from None
    if liger:
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            raise Skip("Liger: not installed, skipped (pip install liger-kernel)") from None


def trl_trainer(ctx: Context, key: str, liger: bool, model, counts: dict):
    """SFTTrainer at its best here: prompt/completion data (completion-only loss), bfd packing into padding-free
    rows, bf16, no gradient checkpointing; batch, accumulation, length, LR schedule and LoRA as tunesmith's run."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.train.methods import lora_config

    wl = ctx.workloads[key]
    msgs = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in ctx.records]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in msgs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames gradient_checkpointing; TRL's is True
        args = SFTConfig(
            output_dir=str(ctx.work / f"trl-{key}{'-liger' if liger else ''}"),
            per_device_train_batch_size=wl.batch_size, gradient_accumulation_steps=wl.grad_accum,
            max_steps=wl.total_steps, max_length=wl.seq_len, learning_rate=wl.lr_adapter, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0, bf16=True, fp16=False,
            gradient_checkpointing=False, packing=True, packing_strategy="bfd", padding_free=True,
            completion_only_loss=True, report_to="none", save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, logging_steps=1, use_liger_kernel=liger, use_cpu=ctx.cpu)
    if args.gradient_checkpointing or not args.bf16:
        raise AssertionError(f"TRL config not as intended: {args.gradient_checkpointing=} {args.bf16=}")
    device = ctx.device

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training and wl.warmup < self.state.global_step + 1 <= wl.total_steps:
                mask = inputs.get("attention_mask")
                counts["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return out

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (wl.warmup, wl.total_steps):
                device.sync()
                counts["t0" if state.global_step == wl.warmup else "t1"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                counts["losses"].append(float(logs["loss"]))

    cfg = ctx.run_config(key, "lora")
    return Counting(model=model, args=args, train_dataset=dataset, processing_class=ctx.tokenizer,
                    peft_config=lora_config(cfg), callbacks=[Timer()])


def section_trl(ctx: Context, key: str, liger: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.train.telemetry import flops_per_token

    require_trl(ctx, liger)
    label = "TRL+Liger" if liger else "TRL"
    sched = ctx.schedule(key)
    ctx.device.reset_peak()
    model = AutoModelForCausalLM.from_pretrained(ctx.store.folder(key), dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").to(ctx.device.torch)
    model.config.use_cache = False
    fpt = flops_per_token(model, method="lora", seq_len=int(sched.avg_example))  # the number tunesmith's side uses
    counts = {"tokens": 0, "losses": []}
    trainer = trl_trainer(ctx, key, liger, model, counts)
    trainer.train()
    peak = ctx.device.peak()
    tok_s = counts["tokens"] / (counts["t1"] - counts["t0"])
    m = {"tokens_per_s": tok_s, "mfu": fpt * tok_s / ctx.peak_flops, "peak_bytes": peak["bytes"], "peak": peak,
         "losses": counts["losses"], "padding_free": bool(trainer.padding_free),
         "completion_only_loss": bool(trainer.completion_only_loss)}
    del trainer, model
    ours = ctx.runner.get(f"train {key} lora")
    if ours and ours.status == "ok":
        m["tunesmith_over_trl"] = ours.metrics["tokens_per_s"] / tok_s
        print(f"  {label} ratio {key} lora: tunesmith/{label} = {m['tunesmith_over_trl']:.2f}x "
              f"(tunesmith {ours.metrics['tokens_per_s']:,.0f} tok/s, {label} {tok_s:,.0f} tok/s)")
    else:
        print(f"  {label} ratio {key} lora: no tunesmith LoRA result to compare with")
    print(f"  {label}: {tok_s:,.0f} tokens/s (non-pad), MFU {100 * m['mfu']:.1f}%, peak memory "
          f"{peak['bytes'] / GIB:.2f} GiB, padding_free={m['padding_free']}, losses "
          f"{[round(x, 3) for x in counts['losses']]}")
    return m
