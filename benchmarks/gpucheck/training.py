"""Section train: LoRA, QLoRA, DoRA, full fine-tuning through tunesmith's own entry point (train_from_config)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil

from gpucheck.context import Context
from gpucheck.device import GIB, flops_text
from gpucheck.runner import Skip


@contextlib.contextmanager
def captured_model():
    """Record the model ``train_from_config`` builds (and a CPU copy of its trainable tensors) by wrapping
    tunesmith's own ``build_trainable_model``; the run itself is untouched."""
    import tunesmith.train.run as run_mod

    real = run_mod.build_trainable_model
    box: dict = {}

    def capturing(cfg):
        model, device = real(cfg)
        box["model"] = model
        box["before"] = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        return model, device

    run_mod.build_trainable_model = capturing
    try:
        yield box
    finally:
        run_mod.build_trainable_model = real


def trainable_changed(box: dict) -> tuple[int, int, list[str]]:
    import torch

    model, before = box["model"], box["before"]
    unchanged = [n for n, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[n].to(p.device))]
    return len(before) - len(unchanged), len(before), unchanged


def check_loss(losses: list[float]) -> str:
    if not losses or not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"loss is not finite: {losses}")
    tail = sum(losses[-2:]) / len(losses[-2:])
    if not tail < losses[0]:
        raise AssertionError(f"loss is not decreasing: {[round(x, 4) for x in losses]}")
    return f"loss {losses[0]:.3f} -> {tail:.3f} (finite, decreasing)"


def require_bitsandbytes(cpu: bool) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise Skip("bitsandbytes: not installed, QLoRA skipped (its CUDA wheel is 41 MiB; benchmarks/README.md "
                   "says which wheels fit the 64 MiB)") from None
    if cpu:
        return
    import torch
    from bitsandbytes import cextension

    if isinstance(getattr(cextension, "lib", None), cextension.ErrorHandlerMockBNBNativeLibrary):
        raise Skip(f"bitsandbytes: no native library for this torch's CUDA {torch.version.cuda} (it has "
                   f"{', '.join(cextension.get_available_cuda_binary_versions()) or 'none'}), QLoRA skipped")


def section_train(ctx: Context, key: str, method: str) -> dict:
    from transformers import AutoConfig

    from tunesmith.data.prepared import PreparedData
    from tunesmith.models.loading import resolve_dtype
    from tunesmith.train.telemetry import flops_per_token
    from tunesmith.train.preflight import DoesNotFitError, check_memory
    from tunesmith.train.run import train_from_config

    plan = ctx.plan[(key, method)]
    if not plan["fits"]:
        raise Skip(plan["reason"])
    if method == "qlora":
        require_bitsandbytes(ctx.cpu)
    wl, sched = ctx.workloads[key], ctx.schedule(key)
    cfg = ctx.run_config(key, method)
    dev = ctx.device.torch
    try:  # tunesmith's pre-flight, as train_from_config runs it (it runs it again inside)
        pf = check_memory(cfg, AutoConfig.from_pretrained(cfg.model.name_or_path), dev, resolve_dtype("bfloat16", dev))
    except DoesNotFitError as e:
        raise Skip(f"pre-flight refused it: {e.message}") from None
    with captured_model() as box:
        ctx.device.reset_peak()
        train_from_config(cfg, PreparedData(train=ctx.records, validation=[], test=[]))
        ctx.device.sync()
        peak = ctx.device.peak()
        changed, total, unchanged = trainable_changed(box)
        fpt = flops_per_token(box["model"], method=method, seq_len=int(sched.avg_example))
        box.clear()
    history = [json.loads(x) for x in (cfg.run_dir / "train_metrics.jsonl").read_text().splitlines() if x.strip()]
    sched.check(history)
    loss_line = check_loss([r["loss"] for r in history])
    if unchanged:
        raise AssertionError(f"{len(unchanged)} of {total} trainable tensors did not change: {unchanged[:5]}")
    timed = [r for r in history if r["step"] > wl.warmup]
    tok_s = sum(sched.nonpad[r["step"] - 1] for r in timed) / sum(r["step_s"] for r in timed)
    m = {"tokens_per_s": tok_s, "mfu": fpt * tok_s / ctx.peak_flops, "flops_per_token": fpt,
         "mfu_vs_measured_matmul": fpt * tok_s / ctx.measured_flops, "losses": [r["loss"] for r in history],
         "trainable_tensors_changed": f"{changed}/{total}", "peak_bytes": peak["bytes"], "peak": peak,
         "estimate_bytes": pf.estimate_bytes, "estimate_over_measured": pf.estimate_bytes / peak["bytes"],
         "padding_share": 1 - sum(sched.nonpad) / sum(sched.positions)}
    if method == "lora":  # served in section serve (bf16 base, mixed-batch adapter path)
        ctx.adapters[key] = cfg.run_dir / "adapter"
    shutil.rmtree(cfg.run_dir / "model", ignore_errors=True)  # full fine-tuning's fp32 weights: GiBs, not needed
    print(f"  {loss_line}; {changed}/{total} trainable tensors changed")
    print(f"  {tok_s:,.0f} tokens/s (non-pad, {wl.steps} timed steps after {wl.warmup}), MFU {100 * m['mfu']:.1f}% "
          f"of {flops_text(ctx.peak_flops)} ({100 * m['mfu_vs_measured_matmul']:.1f}% of the measured matmul peak)")
    print(f"  peak memory {peak['bytes'] / GIB:.2f} GiB"
          + (f" (allocated {peak['allocated'] / GIB:.2f}, reserved {peak['reserved'] / GIB:.2f} + CUDA context "
             f"{peak['context'] / GIB:.2f})" if "allocated" in peak else f" ({peak['note']})")
          + f"; pre-flight estimate {pf.estimate_bytes / GIB:.2f} GiB = {m['estimate_over_measured']:.2f}x measured")
    return m
