"""Training metrics beyond the loss: model FLOPs, MFU, peak memory, trackers, the loss-curve plot."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch


def flops_per_token(model, *, method: str, seq_len: int) -> float:
    """Training FLOPs per token: 6N for full fine-tuning (forward 2N, backward 4N), 4N with a frozen
    base (no weight gradients for the base), plus attention scores (12·layers·hidden·seq per token
    for full training, scaled the same way). N counts matmul weights: embeddings are a lookup,
    except the LM head, which multiplies."""
    cfg = getattr(model, "config", None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = base.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in base.parameters()) - emb
    if getattr(cfg, "tie_word_embeddings", False):
        n += emb  # the tied LM head is a matmul
    layers = getattr(cfg, "num_hidden_layers", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    attn = 12 * layers * hidden * seq_len
    factor = 6 if method == "full" else 4
    return factor * n + attn * factor / 6


def measure_matmul_peak(seconds: float = 0.5, n: int = 1024) -> float:
    """fp32 matmul FLOP/s of this CPU at the current thread count (the MFU denominator on CPU)."""
    g = torch.Generator().manual_seed(0)  # own generator: must not disturb the training RNG stream
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# bf16 dense peak FLOP/s of common GPUs (vendor datasheets, dense, no sparsity)
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12, "4090": 165e12}


def device_peak_flops(device: torch.device) -> float | None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    if device.type == "cpu":
        return measure_matmul_peak()
    return None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class Trackers:
    """Optional TensorBoard / MLflow (file store in the run folder) sinks for step metrics."""

    def __init__(self, names: list[str], run_dir: Path, params: dict):
        self.tb = None
        self.mlflow = None
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from tunesmith.errors import ConfigError

                raise ConfigError("train.report_to has tensorboard but it is not installed", hint="pip install tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "mlflow" in names:
            try:
                import mlflow
            except ImportError:
                from tunesmith.errors import ConfigError

                raise ConfigError("train.report_to has mlflow but it is not installed", hint="pip install mlflow") from None
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
            mlflow.start_run(run_name=run_dir.name)
            mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
            self.mlflow = mlflow

    def log(self, record: dict) -> None:
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, record["step"])
        if self.mlflow:
            self.mlflow.log_metrics(scalars, step=record["step"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.mlflow:
            self.mlflow.end_run()


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
