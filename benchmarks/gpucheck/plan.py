"""Sections env (versions, device, peak FLOP/s) and plan (the pre-flight estimator on the real shapes)."""

from __future__ import annotations

import sys

from gpucheck.context import Context
from gpucheck.device import GIB, measure_bf16_matmul_peak
from gpucheck.shapes import METHODS, SHAPES, WORKLOADS, llama_config


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def section_env(ctx: Context) -> dict:
    import torch
    import transformers

    from tunesmith.train.telemetry import device_peak

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__, "mode": "cpu-dry-run" if ctx.cpu else "gpu"}
    for pkg in ("peft", "accelerate", "trl", "datasets", "liger-kernel", "bitsandbytes", "fastapi", "uvicorn",
                "pydantic", "triton"):
        env[pkg] = package_version(pkg)
    if not ctx.cpu:
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / GIB,
                   bf16=torch.cuda.is_bf16_supported(), cuda_context_gib=ctx.device.context_bytes / GIB,
                   sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                   sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled())
    else:
        env["device"] = "cpu"
    ctx.peak_flops = device_peak(ctx.device.torch, torch.bfloat16 if ctx.device.torch.type == "cuda" else torch.float32).flops_per_s
    ctx.measured_flops = measure_bf16_matmul_peak(ctx.device)
    env.update(peak_flops=ctx.peak_flops, measured_matmul_flops=ctx.measured_flops)
    for k, v in env.items():
        print(f"  {k}: {v}")
    if ctx.peak_flops is None:
        print("  (tunesmith has no datasheet peak for this device: MFU is against the measured matmul peak)")
        ctx.peak_flops = ctx.measured_flops
    ctx.env = env
    return env


def section_plan(ctx: Context) -> dict:
    """tunesmith's estimator on the real shapes (the H200's memory, or the free memory of this GPU): which
    configurations run. The dry run follows the same plan, so it runs what the GPU run would."""
    from tunesmith.estimate.arch import Architecture, load_architecture_catalog
    from tunesmith.estimate.hardware import get_gpu
    from tunesmith.estimate.memory import estimate_memory, fits
    from tunesmith.train.config import TrainConfig

    if ctx.cpu:
        capacity, where = get_gpu("H200").memory_bytes, "an H200 (tunesmith's GPU catalogue)"
    else:
        import torch

        capacity, where = torch.cuda.mem_get_info()[0], "this GPU's free memory"
    catalog = load_architecture_catalog()
    lora = TrainConfig().lora
    out = {}
    print(f"  pre-flight estimates for the real shapes, bf16, on {where} ({capacity / GIB:.1f} GiB):")
    for key in ctx.models_run:
        real = dict(SHAPES[key])
        ref = catalog.get(key, {})
        for dim, ours in (("hidden_size", "hidden_size"), ("num_layers", "num_hidden_layers"),
                          ("intermediate_size", "intermediate_size"), ("num_kv_heads", "num_key_value_heads")):
            if dim in ref and ref[dim] != real[ours]:
                raise AssertionError(f"{key}: {ours}={real[ours]} here but {ref[dim]} in tunesmith's catalogue")
        arch = Architecture.from_transformers_config(llama_config(real, ctx.tokenizer))
        wl = WORKLOADS[key]
        for method in METHODS:
            est = estimate_memory(arch, method=method, batch_size=wl.batch_size, seq_len=wl.seq_len, dtype="bfloat16",
                                  optimizer="adamw", lora_r=lora.r, lora_targets=lora.target_modules,
                                  lora_dropout=lora.dropout, device="cuda")
            ok = fits(est, capacity, headroom=0.05)  # the pre-flight's own rule
            reason = "" if ok else (f"pre-flight estimate {(est.total_bytes / GIB):.1f} GiB ({est.peak_phase}) does not fit "
                                    f"{capacity / GIB:.1f} GiB with 5% headroom: skipped, as tunesmith would refuse it")
            ctx.plan[(key, method)] = {"estimate_gib": (est.total_bytes / GIB), "fits": ok, "reason": reason}
            out[f"{key} {method}"] = ctx.plan[(key, method)]
            print(f"    {key:<13} {method:<5} batch {wl.batch_size} x {wl.seq_len}: {(est.total_bytes / GIB):6.1f} GiB "
                  f"{'runs' if ok else 'SKIP (does not fit)'}")
    return out
