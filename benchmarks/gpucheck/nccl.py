"""Section nccl: tunesmith's data-parallel path on a 1-rank NCCL group, in a subprocess (one group per process)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

from gpucheck.bootstrap import use_checkout_source
from gpucheck.context import Context
from gpucheck.data import build_tokenizer, make_records

SCRIPT = Path(__file__).resolve().parents[1] / "gpu_check.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_nccl(ctx: Context) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--nccl-worker"] + (["--cpu-dry-run"] if ctx.cpu else [])
    timeout = max(30.0, min(180.0, ctx.runner.left()))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("NCCL-WORKER ")]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise AssertionError(f"the NCCL worker exited with {proc.returncode}")
    m = json.loads(lines[-1].removeprefix("NCCL-WORKER "))
    print(f"  {m['backend']} group of 1 rank: Distributed.global_sum = {m['global_sum']}, barrier ok; DDP-wrapped "
          f"training through train_loop, losses {[round(x, 3) for x in m['losses']]}")
    return m


def nccl_worker(cpu: bool) -> None:
    """tunesmith's data-parallel path on a 1-rank group: the process group as init_distributed makes it under
    torchrun, DDP through setup_data_parallel, and train_loop. Distributed.world_size is set to 2 so the loop's
    own collectives (global_sum on every step, barrier) run instead of taking the 1-process shortcut; the
    1-rank group answers them."""
    import torch

    use_checkout_source()
    from tunesmith.models.loading import resolve_device
    from tunesmith.models.tiny import build_tiny_llama
    from tunesmith.train.batching import epoch_batches
    from tunesmith.train.loop import train_loop
    from tunesmith.train.parallel import Distributed, local_device, setup_data_parallel
    from tunesmith.train.tokenize import tokenize_records

    device = local_device(resolve_device("cpu" if cpu else "cuda"))
    backend = "gloo" if cpu else "nccl"
    torch.distributed.init_process_group(backend)
    try:
        dist = Distributed(rank=0, world_size=2, strategy="ddp")
        total = dist.global_sum(3)
        assert total == 3 and isinstance(total, int), total
        dist.barrier()
        records = make_records(32, scale=0.2)
        tokenizer = build_tokenizer(records, vocab_size=1024)
        examples, _ = tokenize_records(tokenizer, records, max_seq_length=256)
        model = build_tiny_llama(tokenizer).to(device)
        optimizer = setup_data_parallel(model, dist, device, lambda: torch.optim.AdamW(model.parameters(), lr=1e-3),
                                        None)
        state = train_loop(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                           epoch_batches=lambda e: epoch_batches(examples, batch_size=2, packing=True, row_length=256,
                                                                 pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
                           total_steps=3, grad_accum=1, device=device, dist=dist)
        losses = [r["loss"] for r in state.history]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
        print("NCCL-WORKER " + json.dumps({"backend": backend, "global_sum": total, "losses": losses}), flush=True)
    finally:
        torch.distributed.destroy_process_group()
