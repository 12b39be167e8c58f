"""What the sections share: records, tokenizer, random-initialised checkpoints, the pre-flight plan, each model's
batch schedule, and the run configs they train with."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpucheck.device import GIB, Device
from gpucheck.runner import Runner
from gpucheck.shapes import EST_S, SHAPES, TINY_SHAPES, TINY_WORKLOADS, WORKLOADS, llama_config


class ModelStore:
    """Checkpoint folders (config, bf16 safetensors, tokenizer) of random-initialised models, written once on first
    use. Weights are initialised on the device (seconds, even for 8B) and loaded back by tunesmith's own loader,
    so every section goes through the same from_pretrained path (incl. 4-bit quantisation) a user's model does."""

    def __init__(self, root: Path, shapes: dict, tokenizer, device: Device):
        self.root, self.shapes, self.tokenizer, self.device = root, shapes, tokenizer, device
        self.dirs: dict[str, Path] = {}

    def built(self, key: str) -> bool:
        return key in self.dirs

    def config(self, key: str):
        return llama_config(self.shapes[key], self.tokenizer)

    def folder(self, key: str) -> Path:
        if key in self.dirs:
            return self.dirs[key]
        import torch
        from transformers import AutoModelForCausalLM

        t0 = time.monotonic()
        path = self.root / key
        torch.manual_seed(0)
        with torch.device(self.device.torch):
            model = AutoModelForCausalLM.from_config(self.config(key), dtype=torch.bfloat16)
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        n = sum(p.numel() for p in model.parameters())
        del model
        self.device.release()
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"  built {key}: {n / 1e6:,.1f}M parameters (random init, bf16), {size / GIB:.1f} GiB in {path} "
              f"({time.monotonic() - t0:.0f}s)", flush=True)
        self.dirs[key] = path
        return path


def default_model_root(need_bytes: int) -> Path:
    """/dev/shm when it has room (no disk I/O for 16 GiB of 8B weights), else the temp folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * need_bytes:
        return Path(tempfile.mkdtemp(prefix="tunesmith-gpu-check-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="tunesmith-gpu-check-"))


@dataclass
class Schedule:
    """What each optimizer step of tunesmith's run processes (same tokenizer, packing and seed as the run), to
    count non-pad tokens exactly as for TRL (train_metrics counts positions of packed rows, padding included)."""

    examples: list
    avg_example: float
    nonpad: list[int]
    positions: list[int]
    labels: list[int]

    def check(self, history: list[dict]) -> None:
        for rec in history:
            k = rec["step"] - 1
            if (rec["tokens"], rec["label_tokens"]) != (self.positions[k], self.labels[k]):
                raise AssertionError(f"step {rec['step']}: the run processed {rec['tokens']} positions / "
                                     f"{rec['label_tokens']} labels, the schedule says {self.positions[k]} / "
                                     f"{self.labels[k]}: token counts would be wrong")


class Context:
    """One run's shared state; ``prepare`` in gpu_check.py fills records, tokenizer, store and work folder."""

    def __init__(self, args, device: Device, runner: Runner):
        self.args, self.device, self.runner = args, device, runner
        self.cpu = args.cpu_dry_run
        self.shapes = TINY_SHAPES if self.cpu else SHAPES
        self.workloads = TINY_WORKLOADS if self.cpu else WORKLOADS
        self.models_run = [m for m in args.models.split(",") if m]
        self.work: Path | None = None  # run folders, next to the checkpoints (see prepare)
        self.records: list[dict] = []
        self.tokenizer = None
        self.store: ModelStore | None = None
        self.plan: dict[tuple[str, str], dict] = {}
        self.schedules: dict[str, Schedule] = {}
        self.peak_flops: float | None = None  # tunesmith's MFU denominator (datasheet bf16 peak on a GPU)
        self.measured_flops: float | None = None
        self.adapters: dict[str, Path] = {}
        self.env: dict = {}

    def est(self, name: str, *, model: str | None = None) -> float:
        """Seconds the time guard reserves for a section (plus building its model's checkpoint if not done)."""
        if self.cpu:
            return 0.0
        words = name.split()
        base = next((EST_S[k] for k in (name, " ".join(words[:2]), words[0]) if k in EST_S), 30)
        if model and self.store and not self.store.built(model):
            base += EST_S[f"model {model}"]
        return base

    def model_config(self, key: str):
        from tunesmith.models.config import ModelConfig

        return ModelConfig(name_or_path=str(self.store.folder(key)), dtype="bfloat16",
                           device="cpu" if self.cpu else "cuda", attn_implementation="sdpa")

    def run_config(self, key: str, method: str):
        from tunesmith.config import build_config

        wl = self.workloads[key]
        train = {"method": method, "max_steps": wl.total_steps, "batch_size": wl.batch_size,
                 "grad_accum": wl.grad_accum, "max_seq_length": wl.seq_len, "packing": True,
                 "completion_only_loss": True, "lr": wl.lr(method), "scheduler": "constant", "warmup_ratio": 0.0,
                 "save_every_epoch": False, "load_best_at_end": False, "logging_steps": 1, "preflight": True}
        cfg = build_config({"name": f"{key}-{method}", "output_dir": str(self.work), "seed": 0,
                            "model": self.model_config(key).model_dump(), "train": train})
        cfg.run_dir.mkdir(parents=True, exist_ok=True)  # as pipeline.py does before any stage
        return cfg

    def schedule(self, key: str) -> Schedule:
        if key in self.schedules:
            return self.schedules[key]
        from tunesmith.train.batching import epoch_batches
        from tunesmith.train.tokenize import tokenize_records

        wl = self.workloads[key]
        examples, report = tokenize_records(self.tokenizer, self.records, max_seq_length=wl.seq_len)
        if report.rejected:  # prepare keeps only examples that fit
            raise AssertionError(f"{len(report.rejected)} records longer than {wl.seq_len} tokens")
        probe = epoch_batches(examples, batch_size=wl.batch_size, packing=True, row_length=wl.seq_len, pad_id=-1,
                              seed=0, epoch=0)
        g, n = wl.grad_accum, wl.total_steps
        if len(probe) < n * g:
            raise RuntimeError(f"{len(probe)} micro-batches of data, {n * g} needed: make more records")
        steps = [probe[k * g:(k + 1) * g] for k in range(n)]
        sched = Schedule(
            examples=examples, avg_example=sum(len(e.input_ids) for e in examples) / len(examples),
            nonpad=[sum(int((b.input_ids != -1).sum()) for b in s) for s in steps],
            positions=[sum(b.input_ids.numel() for b in s) for s in steps],
            labels=[sum(b.n_label_tokens for b in s) for s in steps])
        self.schedules[key] = sched
        return sched
