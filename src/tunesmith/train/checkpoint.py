"""Checkpoints that make a killed run resumable to the same final weights.

A checkpoint folder holds everything the next step depends on: the trainable weights, the
optimizer and scheduler states, each rank's RNG states (torch, python, numpy) and the position
in the seeded data order (epoch, next micro-batch). Sharded strategies write their own formats
(:mod:`tunesmith.train.parallel`). Folders are named ``step-000123`` and appear only once every
rank has written its part; a folder without ``state.json`` was never completed and is ignored.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import TunesmithError
from tunesmith.train.parallel import (
    Distributed,
    gather_trainable,
    load_model_and_optimizer,
    load_trainable,
    save_model_and_optimizer,
)
from tunesmith.utils.io import atomic_dir


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the next micro-batch
    next_batch: int = 0  # index of the next micro-batch within that epoch
    best_val_loss: float | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState, dist: Distributed | None = None,
                    keep: int = 2) -> Path:
    """Write ``step-N`` (a collective in multi-process runs: every rank calls it).

    Every rank writes into ``.step-N.partial``; after a barrier rank 0 adds ``state.json`` and
    renames the folder, so a kill at any moment leaves either the complete folder or none.
    """
    dist = dist or Distributed()
    target = folder / f"step-{state.step:06d}"
    partial = folder / f".{target.name}.partial"
    if dist.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    dist.barrier()
    save_model_and_optimizer(partial, model, optimizer, dist)
    torch.save(rng_state(), partial / f"rng-rank{dist.rank}.pt")  # each rank's own dropout/sampling stream
    dist.barrier()
    if dist.rank == 0:
        torch.save(scheduler.state_dict(), partial / "scheduler.pt")
        meta = {**asdict(state), "world_size": dist.world_size, "strategy": dist.strategy}
        (partial / "state.json").write_text(json.dumps(meta))  # written last: marks the folder complete
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())


def load_checkpoint(path: Path, model, optimizer, scheduler, dist: Distributed | None = None) -> TrainState:
    dist = dist or Distributed()
    meta = json.loads((path / "state.json").read_text())
    saved_world, saved_strategy = meta.pop("world_size", 1), meta.pop("strategy", "none")
    if (saved_world, saved_strategy) != (dist.world_size, dist.strategy):
        raise TunesmithError(
            f"{path} was written by {saved_world} process(es) with strategy {saved_strategy!r}; this run has "
            f"{dist.world_size} with {dist.strategy!r}",
            hint="resume with the same --nproc/--nnodes and train.distributed (the data order per rank depends on them)",
        )
    load_model_and_optimizer(path, model, optimizer, dist)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / f"rng-rank{dist.rank}.pt", weights_only=False))
    return TrainState(**meta)


def save_best(folder: Path, model, dist: Distributed | None = None) -> None:
    """Keep the trainable weights with the best validation loss (a collective when sharded)."""
    dist = dist or Distributed()
    tensors = gather_trainable(model, dist)
    if dist.rank == 0:
        with atomic_dir(folder / "best") as tmp:
            save_file(tensors, str(tmp / "trainable.safetensors"))
    dist.barrier()


def load_best(folder: Path, model, dist: Distributed | None = None) -> bool:
    dist = dist or Distributed()
    path = folder / "best" / "trainable.safetensors"
    if not path.is_file():
        return False
    load_trainable(model, load_file(str(path)), dist)
    return True
