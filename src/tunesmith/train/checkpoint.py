"""Checkpoints that make a killed run resumable to the same final weights.

A checkpoint folder holds everything the next step depends on: the trainable weights, the
optimizer and scheduler states, each rank's RNG states (torch, python, numpy) and the position
in the seeded data order (epoch, next micro-batch). Sharded strategies write their own formats
(:mod:`tunesmith.train.parallel`). Folders are named ``step-000123`` and appear only once every
rank has written its part; a folder without ``state.json`` was never completed and is ignored.

Resume never unpickles code: the files tunesmith writes itself (RNG states, scheduler, and in
single-process/DDP runs the optimizer) hold only tensors and plain values and are read with
``torch.load(weights_only=True)``; a file holding anything else is refused with a
:class:`CheckpointError`. FSDP's ``dcp/.metadata`` and DeepSpeed's files are read by those
libraries, which unpickle them: resume sharded runs only from folders you wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
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
    best_val_loss: float | None = None  # of the best checkpoint (by train.select_by)
    best_task_score: float | None = None  # of the best checkpoint, when selecting by task score
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)
    budget: dict | None = None  # train.time_budget's plan, re-fits and cut (budget.BudgetPacer.state_dict)


class CheckpointError(TunesmithError):
    """A checkpoint file that ``--resume`` refuses to load."""


def rng_state() -> dict:
    """Every random stream the next step draws from, as tensors and plain numbers only, so that
    ``torch.load(weights_only=True)`` can read it back (numpy's and python's states are tuples
    holding an ndarray / a long tuple: stored here as int64 tensors)."""
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"name": np_name, "key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))


@contextlib.contextmanager
def refuse_pickled_code(path: Path):
    """Turn ``torch.load(weights_only=True)``'s refusal of a file that holds more than tensors and
    plain values (a pickle that could run code, or a checkpoint from elsewhere) into a clear error."""
    try:
        yield
    except pickle.UnpicklingError as e:
        boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
        why = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(boilerplate)]
        raise CheckpointError(
            f"--resume refused {path}: it holds objects other than tensors and plain values, which could run "
            f"code when loaded" + (f" ({why[0][:200]})" if why else ""),
            hint="resume only from checkpoints tunesmith wrote; delete that checkpoint folder, or run without --resume",
        ) from None


def load_tensors(path: Path):
    """``torch.load`` of a file tunesmith wrote: tensors and plain containers only, never code."""
    with refuse_pickled_code(path):
        return torch.load(path, weights_only=True)


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
    with refuse_pickled_code(path):  # optimizer.pt (single process, DDP) is read with weights_only=True
        load_model_and_optimizer(path, model, optimizer, dist)
    scheduler.load_state_dict(load_tensors(path / "scheduler.pt"))
    set_rng_state(load_tensors(path / f"rng-rank{dist.rank}.pt"))
    return TrainState(**meta)


def save_best(folder: Path, model, dist: Distributed | None = None) -> None:
    """Keep the trainable weights of the best validation so far (a collective when sharded)."""
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
