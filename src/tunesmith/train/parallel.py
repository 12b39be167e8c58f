"""Data-parallel training on several processes, through the libraries made for it.

``train.distributed`` picks one of:

* ``ddp``: PyTorch DistributedDataParallel; every rank holds the whole model.
* ``fsdp``: PyTorch FSDP2 (``fully_shard`` on every decoder layer, then the root); parameters,
  gradients and optimizer states are sharded. Checkpoints go through torch.distributed.checkpoint.
* ``deepspeed``: DeepSpeed ZeRO stage 2 (gradients + optimizer states sharded) or 3 (parameters
  too), configured by the ``deepspeed_config.json`` tunesmith writes into the run folder.

Launch is torchrun's (``tunesmith train --nproc N``); this module only sets each strategy up and
moves its state: gathered weights for saving, and sharded checkpoints for exact resume.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.train.loss import CausalLMLoss


@dataclass
class Distributed:
    """Data-parallel context (world_size 1 = single process)."""

    rank: int = 0
    world_size: int = 1
    strategy: str = "none"  # none | ddp | fsdp | deepspeed
    loss_module: torch.nn.Module | None = None  # wrapped loss module; None = the loop uses a plain CausalLMLoss
    engine: object | None = None  # the DeepSpeed engine (it owns backward, clipping and the optimizer step)
    zero_stage: int = 0

    @property
    def sharded(self) -> bool:
        """Parameters live in shards: FSDP, or ZeRO-3."""
        return sharding_of(self.strategy, self.zero_stage) == "full"

    def global_sum(self, x: float) -> float:
        """Sum of ``x`` over all ranks (``x`` itself in a single process). The tensor lives where the
        backend communicates: NCCL has no CPU tensors, so under NCCL it goes to this rank's GPU."""
        if self.world_size == 1:
            return x
        nccl = torch.distributed.get_backend() == "nccl"
        t = torch.tensor([x], dtype=torch.float64, device=torch.cuda.current_device() if nccl else "cpu")
        torch.distributed.all_reduce(t)
        return type(x)(t.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def no_sync(self, last: bool):
        """DDP: skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.strategy != "ddp" or last:
            return contextlib.nullcontext()
        return self.loss_module.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:  # the caller already normalised over the whole accumulated step
            self.engine.backward(loss, scale_wrt_gas=False)
        else:
            loss.backward()

    def optimizer_step(self, optimizer, params, max_grad_norm: float | None) -> float:
        """Clip, step, zero the gradients; returns the gradient norm before clipping."""
        if self.engine is not None:  # clipping is in the DeepSpeed config (gradient_clipping)
            self.engine.step()
            return float(self.engine.get_global_grad_norm() or 0.0)
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm


def sharding_of(strategy: str, zero_stage: int) -> str:
    """What a data-parallel strategy splits across ranks, in the memory estimator's terms: "full"
    (parameters too: FSDP, ZeRO-3), "optimizer" (gradients and optimizer states: ZeRO-2), "none" (DDP)."""
    if strategy == "fsdp" or (strategy == "deepspeed" and zero_stage == 3):
        return "full"
    return "optimizer" if strategy == "deepspeed" else "none"


def launched_world_size() -> int:
    """How many processes torchrun started for this run (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each rank drives the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device, strategy: str, zero_stage: int) -> Distributed:
    if launched_world_size() == 1:
        return Distributed()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                       strategy=strategy, zero_stage=zero_stage if strategy == "deepspeed" else 0)


def deepspeed_config(*, batch_size: int, grad_accum: int, world_size: int, zero_stage: int,
                     max_grad_norm: float | None, dtype: torch.dtype) -> dict:
    """The DeepSpeed config tunesmith runs with (written to the run folder as deepspeed_config.json).

    Gradient accumulation is tunesmith's (token-normalised over the whole step): DeepSpeed runs
    unmanaged, every ``engine.step()`` ends one accumulated step and no loss is rescaled.
    """
    zero: dict = {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # tunesmith gathers what it saves
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": batch_size * grad_accum * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": max_grad_norm or 0.0,
        "zero_optimization": zero,
        # bf16 keeps fp32 master weights in DeepSpeed's optimizer; fp32 models train in fp32
        "bf16": {"enabled": dtype == torch.bfloat16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,  # torch's AdamW, tunesmith's scheduler
    }


def require_deepspeed():
    """The deepspeed module, or a clear error saying how to install it."""
    try:
        import deepspeed
    except ImportError:
        from tunesmith.errors import ConfigError

        raise ConfigError("train.distributed deepspeed needs the deepspeed package",
                          hint="pip install 'tunesmith[deepspeed]' (or pip install deepspeed)") from None
    return deepspeed


def setup_data_parallel(model, dist: Distributed, device: torch.device, make_optimizer, ds_config: dict | None,
                        kl_weight: float = 0.0, shared_prefix: bool = False, kl_on: str = "answers"):
    """Wrap ``model`` for ``dist.strategy`` and build the optimizer over the parameters that the
    strategy trains (FSDP2's are sharded DTensors, so the optimizer comes after the wrap).
    A single process is left as it is. ``kl_weight``, ``kl_on``: the loss module's forgetting-guard KL term;
    ``shared_prefix``: its shared-prefix encoding (train.shared_prefix resolved)."""
    if dist.strategy == "none":
        return make_optimizer()
    loss_module = CausalLMLoss(model, kl_weight, shared_prefix, kl_on)
    if dist.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in base.get_decoder().layers:
            fully_shard(layer)
        dist.loss_module = fully_shard(loss_module)
        return make_optimizer()
    if dist.strategy == "deepspeed":
        deepspeed = require_deepspeed()
        optimizer = make_optimizer()
        engine, _, _, _ = deepspeed.initialize(model=loss_module, optimizer=optimizer, config=ds_config,
                                               dist_init_required=False)
        dist.engine = dist.loss_module = engine
        return optimizer  # the scheduler drives this optimizer's learning rate; DeepSpeed wraps it
    from torch.nn.parallel import DistributedDataParallel

    dist.loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    return make_optimizer()


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@contextlib.contextmanager
def _zero3_gathered(params, dist: Distributed, modifier_rank: int | None = None):
    if dist.strategy == "deepspeed" and dist.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def gather_trainable(model, dist: Distributed) -> dict[str, torch.Tensor]:
    """Full (unsharded) copies of the trainable parameters on the CPU. A collective under FSDP and
    ZeRO-3: every rank must call it."""
    named = _trainable(model)
    out = {}
    with _zero3_gathered([p for _, p in named], dist):
        for n, p in named:
            t = p.detach()
            if hasattr(t, "full_tensor"):  # FSDP2 DTensor
                t = t.full_tensor()
            out[n] = t.to("cpu").contiguous().clone()
    return out


def load_trainable(model, tensors: dict[str, torch.Tensor], dist: Distributed) -> None:
    """Copy full tensors (as from :func:`gather_trainable`) into the (possibly sharded) parameters."""
    named = _trainable(model)
    missing = [n for n, _ in named if n not in tensors]
    if missing:
        raise RuntimeError(f"checkpoint lacks trainable parameters {missing[:3]}")
    with _zero3_gathered([p for _, p in named], dist, modifier_rank=0), torch.no_grad():
        for n, p in named:
            t = tensors[n].to(p.device, p.dtype)
            if hasattr(p, "device_mesh"):  # FSDP2 DTensor: keep only this rank's shard
                from torch.distributed.tensor import distribute_tensor

                t = distribute_tensor(t, p.device_mesh, p.placements)
            p.copy_(t)


# --- sharded checkpoints: what each strategy writes besides tunesmith's own state -----------------

def save_model_and_optimizer(folder: Path, model, optimizer, dist: Distributed) -> None:
    """Write trainable weights + optimizer state into ``folder`` (a collective when sharded)."""
    if dist.strategy == "deepspeed":
        dist.engine.save_checkpoint(str(folder / "deepspeed"), tag="state", save_latest=False,
                                    exclude_frozen_parameters=True)
    elif dist.strategy == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
        )

        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
        dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(folder / "dcp"))
    elif dist.rank == 0:  # single process or DDP: every rank holds the same state
        from safetensors.torch import save_file

        save_file(gather_trainable(model, dist), str(folder / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")


def load_model_and_optimizer(folder: Path, model, optimizer, dist: Distributed) -> None:
    if dist.strategy == "deepspeed":
        path, _ = dist.engine.load_checkpoint(str(folder / "deepspeed"), tag="state", load_module_strict=False,
                                              load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {folder / 'deepspeed'}")
    elif dist.strategy == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
            set_state_dict,
        )

        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
        state = {"model": msd, "optimizer": osd}
        dcp.load(state, checkpoint_id=str(folder / "dcp"))
        # not strict: the frozen base is not in the checkpoint (it comes from the base model)
        result = set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                                options=StateDictOptions(ignore_frozen_params=True, strict=False))
        trainable = {n for n, _ in _trainable(model)}
        missing = [k for k in result.missing_keys if k in trainable]
        if missing:
            raise RuntimeError(f"checkpoint {folder} lacks trainable parameters {missing[:3]}")
    else:
        from safetensors.torch import load_file

        load_trainable(model, load_file(str(folder / "trainable.safetensors")), dist)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
