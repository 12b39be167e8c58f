"""Training metrics beyond the loss: model FLOPs, MFU against an honest peak, peak memory, the step line,
trackers, the loss-curve plot."""

from __future__ import annotations

import atexit
import json
import numbers
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch

from tunesmith.errors import ConfigError
from tunesmith.utils.quiet import quiet_loggers


def parameter_count(p) -> int:
    """Elements of a parameter as the model uses it: a bitsandbytes 4-bit weight stores two per byte
    (its ``numel`` is half), its ``quant_state`` keeps the real shape."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


@dataclass(frozen=True)
class TrainingFlops:
    """Training FLOPs of one step, counted where they are done: the decoder on every encoded token, the LM head
    only on label positions (the loss projects those alone, :mod:`tunesmith.train.loss`)."""

    per_token: float  # decoder: matmul weights and attention scores
    per_label_token: float  # the LM head

    def per_second(self, tokens_per_s: float, label_tokens_per_s: float) -> float:
        return self.per_token * tokens_per_s + self.per_label_token * label_tokens_per_s


def training_flops(model, *, method: str, seq_len: int) -> TrainingFlops:
    """6N for full fine-tuning (forward 2N, backward 4N), 4N with a frozen base (no weight gradients for the
    base), plus attention scores (12·layers·hidden·seq per token for full training, scaled the same way). N
    counts matmul weights: the input embeddings are a lookup; the LM head multiplies, at label positions only."""
    cfg = getattr(model, "config", None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = base.get_input_embeddings().weight.numel()
    head = base.get_output_embeddings()
    head_n = head.weight.numel() if head is not None else 0
    n = sum(parameter_count(p) for p in base.parameters()) - emb
    if not getattr(cfg, "tie_word_embeddings", False):
        n -= head_n  # an untied head is a parameter of its own, counted per label token below
    layers = getattr(cfg, "num_hidden_layers", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    attn = 12 * layers * hidden * seq_len
    factor = 6 if method == "full" else 4
    return TrainingFlops(per_token=factor * n + attn * factor / 6, per_label_token=factor * head_n)


def flops_per_token(model, *, method: str, seq_len: int) -> float:
    """Training FLOPs per token with the LM head on every token: how the benchmarks count, alike for tunesmith
    and TRL (which projects every position); training's own MFU uses :func:`training_flops`."""
    flops = training_flops(model, method=method, seq_len=seq_len)
    return flops.per_token + flops.per_label_token


def measure_matmul_peak(seconds: float = 0.5, n: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """Matmul FLOP/s of this CPU at the current thread count (the MFU denominator on CPU)."""
    g = torch.Generator().manual_seed(0)  # own generator: must not disturb the training RNG stream
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


@dataclass
class PeakFlops:
    """The MFU denominator: the FLOP/s one device can do at most, and where that number comes from.

    On a GPU it is the device's nominal dense peak for the compute dtype (the GPU catalogue of
    ``tunesmith advise``); on a CPU a measured matmul rate, which a busy machine under-measures.
    A step faster than the peak proves the peak wrong: a measured peak is then re-measured (the
    higher value is kept); if the step is still faster, or the peak is nominal, that step gets no
    MFU rather than one above 100% (counted in ``steps_over_peak``).
    """

    flops_per_s: float | None  # None: no honest peak known, no MFU
    source: str
    measure: Callable[[], float] | None = None  # re-measures a measured peak
    remeasures_left: int = 3
    remeasured: int = 0
    steps_over_peak: int = 0

    def mfu(self, achieved_flops_per_s: float) -> float | None:
        """Achieved / peak FLOP/s of one device, never above 1; None when no peak is known or it is exceeded."""
        if self.flops_per_s is None:
            return None
        if achieved_flops_per_s > self.flops_per_s and self.measure and self.remeasures_left > 0:
            self.remeasures_left -= 1
            self.remeasured += 1
            self.flops_per_s = max(self.flops_per_s, self.measure())
        if achieved_flops_per_s > self.flops_per_s:
            self.steps_over_peak += 1
            return None
        return achieved_flops_per_s / self.flops_per_s

    def describe(self) -> str:
        if self.flops_per_s is None:
            return self.source
        return f"{self.flops_per_s / 1e12:.3g} TFLOP/s, {self.source}"

    def summary(self) -> dict:
        return {"flops_per_s": self.flops_per_s, "source": self.source, "remeasured": self.remeasured,
                "steps_over_peak": self.steps_over_peak}


def _name_words(name: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", name.lower())
    return set(words) | {a + b for a, b in zip(words, words[1:], strict=False)}  # "RTX 4090" -> rtx4090


def catalogue_gpu(device_name: str, catalog: dict | None = None):
    """The GPU catalogue entry of a CUDA device name (``torch.cuda.get_device_name``), or None.
    "NVIDIA A100-SXM4-80GB" -> A100-80GB; "NVIDIA L40S" is not the L4."""
    from tunesmith.estimate.hardware import load_gpu_catalog

    catalog = catalog if catalog is not None else load_gpu_catalog()
    words = _name_words(device_name)
    found = [(all(part in words for part in key.split("-")), gpu) for key, gpu in catalog.items()
             if key.split("-")[0] in words]
    return max(found, key=lambda f: f[0])[1] if found else None


def device_peak(device: torch.device, compute_dtype: torch.dtype, device_name: str | None = None) -> PeakFlops:
    """The honest MFU denominator for ``device`` computing in ``compute_dtype`` (see :class:`PeakFlops`)."""
    dtype = str(compute_dtype).removeprefix("torch.")
    if device.type == "cuda":
        name = device_name or torch.cuda.get_device_name(device)
        gpu = catalogue_gpu(name)
        if gpu is None:
            return PeakFlops(None, f"{name} is not in the GPU catalogue (tunesmith/estimate/data/gpus.json): no MFU")
        if compute_dtype not in (torch.bfloat16, torch.float16):
            return PeakFlops(None, f"the GPU catalogue holds {gpu.name}'s bf16/fp16 peak only; no MFU in {dtype}")
        return PeakFlops(gpu.bf16_tflops * 1e12, f"nominal dense {dtype} peak of {gpu.name} from the GPU catalogue "
                                                 f"({gpu.source.split(';')[0]})")
    if device.type == "cpu":
        def measure() -> float:
            return measure_matmul_peak(dtype=compute_dtype)

        return PeakFlops(measure(), f"{dtype} matmul rate measured on this CPU ({torch.get_num_threads()} threads), "
                                    "re-measured when a step exceeds it", measure)
    return PeakFlops(None, f"no known peak for {device.type} devices: no MFU")


def step_line(record: dict, total_steps: int) -> str:
    """The per-step console line; MFU only when it is a real fraction of the peak (never above 100%)."""
    mfu = record.get("mfu")
    return (f"step {record['step']}/{total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
            f"grad_norm {record['grad_norm']:.3f} {record['tokens_per_s']:.0f} tok/s"
            + (f" MFU {100 * mfu:.0f}%" if mfu is not None and 0 < mfu <= 1 else ""))


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


TRACKING_HINT = "pip install 'tunesmith[tracking]'"


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested config sections as dotted keys (``lora.r``), every value as text."""
    out: dict[str, str] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _scalars(record: dict) -> dict[str, float]:
    """The record's numbers (not the step): None, text, lists and booleans are not metrics."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class Trackers:
    """Optional step-metric sinks in the run folder: TensorBoard event files in ``run_dir/tensorboard``
    and an MLflow run in the SQLite store ``run_dir/mlflow.db`` (MLflow 3 refuses the old ``mlruns``
    file store by default). Use as a context manager, or call :meth:`close`; a run still open when
    the process exits is ended as FAILED and its TensorBoard events are flushed."""

    MLFLOW_EXPERIMENT = "tunesmith"

    def __init__(self, names: list[str], run_dir: Path, params: dict):
        self.tb = None
        self.mlflow = None  # MlflowClient (no global "active run": a failed run cannot block the next)
        self.mlflow_run_id: str | None = None
        self.closed = False
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.report_to has tensorboard but it is not installed",
                                  hint=f"{TRACKING_HINT} (or pip install tensorboard)") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "mlflow" in names:
            try:
                import alembic  # noqa: F401  (the SQLite store needs both; mlflow-skinny has neither)
                import sqlalchemy  # noqa: F401
                from mlflow.entities import Param
                from mlflow.tracking import MlflowClient
                from mlflow.utils.validation import (
                    MAX_PARAM_VAL_LENGTH,
                    MAX_PARAMS_TAGS_PER_BATCH,
                )
            except ImportError as e:
                if self.tb:
                    self.tb.close()
                raise ConfigError(f"train.report_to has mlflow but it is not installed ({e.name or e} is missing)",
                                  hint=f"{TRACKING_HINT} (or pip install mlflow)") from None
            run_dir.mkdir(parents=True, exist_ok=True)
            with quiet_loggers("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
                client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve().as_posix()}")
                exp = client.get_experiment_by_name(self.MLFLOW_EXPERIMENT)
                exp_id = exp.experiment_id if exp else client.create_experiment(
                    self.MLFLOW_EXPERIMENT, artifact_location=(run_dir / "mlflow-artifacts").resolve().as_uri())
            run = client.create_run(exp_id, run_name=run_dir.name)
            self.mlflow, self.mlflow_run_id = client, run.info.run_id
            flat = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in _flat_params(params).items()]
            for i in range(0, len(flat), MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(self.mlflow_run_id, params=flat[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        if self.tb or self.mlflow:
            atexit.register(self._abort)

    def log(self, record: dict) -> None:
        scalars = _scalars(record)
        step = int(record["step"])
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.mlflow and scalars:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.mlflow_run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def close(self, failed: bool = False) -> None:
        """Flush TensorBoard and end the MLflow run (FINISHED, or FAILED); a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self._abort)
        if self.tb:
            self.tb.close()
        if self.mlflow:
            self.mlflow.set_terminated(self.mlflow_run_id, status="FAILED" if failed else "FINISHED")

    def _abort(self) -> None:
        self.close(failed=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


def plot_loss_curve(metrics_path: Path, val_history: list[dict], out: Path) -> Path | None:
    if not metrics_path.is_file():
        return None
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss", lw=1)
    if val_history:
        ax.plot([v["step"] for v in val_history], [v["val_loss"] for v in val_history], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
