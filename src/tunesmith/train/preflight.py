"""Pre-flight: estimate peak training memory before any weight is loaded, and refuse runs that
cannot fit the device, with a suggestion, instead of an out-of-memory error an hour in."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.estimate.arch import Architecture
from tunesmith.estimate.memory import estimate_memory, fits
from tunesmith.train.parallel import launched_world_size, sharding_of


class DoesNotFitError(TunesmithError):
    """The estimated peak memory exceeds what the device has."""


@dataclass
class Preflight:
    estimate_bytes: int
    device_bytes: int | None
    table: list[tuple[str, int]]


def device_memory_bytes(device: torch.device) -> int | None:
    """Memory the run may use: the GPU's free memory, or on CPU the kernel's MemAvailable."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _suggestions(cfg: RunConfig, world: int = 1, sharding: str = "none") -> str:
    tc = cfg.train
    out = []
    if world > 1 and sharding != "full" and tc.method != "qlora":
        out.append(f"train.distributed: fsdp (or deepspeed with train.zero_stage: 3) to shard the model over the {world} ranks")
    if tc.method == "full":
        out.append("train.method: lora (or qlora)")
    elif tc.method in ("lora", "dora"):
        out.append("train.method: qlora (4-bit base)")
    if not tc.gradient_checkpointing:
        out.append("train.gradient_checkpointing: true")
    if tc.batch_size > 1:
        out.append(f"train.batch_size: {max(1, tc.batch_size // 2)} with train.grad_accum: {tc.grad_accum * 2}")
    out.append(f"a shorter train.max_seq_length (now {tc.max_seq_length})")
    return "try " + "; or ".join(out)


def check_memory(cfg: RunConfig, model_config, device: torch.device, dtype: torch.dtype) -> Preflight:
    """Estimate with tunesmith.estimate (what `tunesmith advise` shows); raise DoesNotFitError when it cannot fit."""
    tc = cfg.train
    world = launched_world_size()
    sharding = sharding_of(tc.distributed, tc.zero_stage or 2) if world > 1 else "none"
    est = estimate_memory(
        Architecture.from_transformers_config(model_config),
        method=tc.method, batch_size=tc.batch_size, seq_len=tc.max_seq_length, dtype=dtype,
        optimizer="adamw", gradient_checkpointing=tc.gradient_checkpointing, lora_r=tc.lora.r,
        lora_targets=tc.lora.target_modules, lora_dropout=tc.lora.dropout, device=device,
        sharding=sharding, num_shards=world,
    )
    # ranks on one machine share its RAM; each GPU rank has a device of its own
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    needed = est.total_bytes * sharing
    available = device_memory_bytes(device)
    table = [(c.name, c.bytes) for c in est.components if c.at_peak]
    if available is not None and not fits(est, available // sharing, headroom=0.05):
        per_rank = f" ({sharing} processes x {est.total_bytes / 2**30:.1f} GiB)" if sharing > 1 else ""
        sharded = f", {sharding} sharding over {world} ranks" if sharding != "none" else ""
        raise DoesNotFitError(
            f"this run needs about {needed / 2**30:.1f} GiB at its peak{per_rank} ({est.peak_phase}{sharded}) but "
            f"{device.type} has {available / 2**30:.1f} GiB available",
            hint=_suggestions(cfg, world, sharding) + ". `tunesmith advise` shows the breakdown.",
        )
    return Preflight(needed, available, table)
