"""Checkpoints that make a killed run resumable to the same final weights.

A checkpoint folder holds everything the next step depends on: the trainable weights, the
optimizer and scheduler states, every RNG state (torch, python, numpy) and the position in the
seeded data order (epoch, next micro-batch). Folders are written atomically and named
``step-000123``; a folder without ``state.json`` was never completed and is ignored.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor: FSDP2-sharded parameters (DTensors) are gathered (a collective on all ranks)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    return {n: _full(p.detach()).to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing:
        raise RuntimeError(f"checkpoint lacks trainable parameters {missing[:3]}")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


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


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState, keep: int = 2) -> Path:
    target = folder / f"step-{state.step:06d}"
    with atomic_dir(target) as tmp:
        save_file(trainable_state_dict(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
                   tmp / "training_state.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))  # written last: marks the folder complete
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    blob = torch.load(path / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return TrainState(**json.loads((path / "state.json").read_text()))


def save_best(folder: Path, model) -> None:
    with atomic_dir(folder / "best") as tmp:
        save_file(trainable_state_dict(model), str(tmp / "trainable.safetensors"))


def load_best(folder: Path, model) -> bool:
    path = folder / "best" / "trainable.safetensors"
    if not path.is_file():
        return False
    load_trainable_state(model, load_file(str(path)))
    return True
