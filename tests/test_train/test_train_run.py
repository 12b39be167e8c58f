"""`tunesmith train` end to end on the tiny model: the metrics log, the loss curve, early stopping and
best-checkpoint selection."""

from __future__ import annotations

import json
import re

import torch
from safetensors.torch import load_file

from support.train_runs import resume_run_config, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_step_logs_its_metrics_and_the_run_draws_a_loss_curve(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=5, save_steps=None, warmup_ratio=0.0,
                            scheduler="linear")
    r = run_cli("train", str(cfg), "name=m")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "runs" / "m"
    rows = _read_jsonl(run / "train_metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert row["loss"] > 0 and row["grad_norm"] > 0 and row["tokens_per_s"] > 0 and row["tokens"] > 0
        assert 0 < row["mfu"] and row["peak_memory_gb"] > 0 and row["label_tokens"] > 0
    # linear decay from lr 1e-3 over 5 steps, no warm-up: the logged lr is the one each step used
    assert [round(row["lr"], 9) for row in rows] == [round(1e-3 * (1 - i / 5), 9) for i in range(5)]
    png = (run / "loss_curve.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 5 and summary["first_loss"] == rows[0]["loss"]
    # MFU is honest: against a stated peak, never shown above 100%
    assert "measured on this CPU" in summary["mfu_peak"]["source"] and summary["mfu_peak"]["flops_per_s"] > 0
    assert "MFU against" in r.stdout
    shown = [int(m) for m in re.findall(r"MFU (\d+)%", r.stdout)]
    assert shown and all(0 <= m <= 100 for m in shown)
    assert all(row["mfu"] <= 1 for row in rows)
    # third-party noise a user cannot act on is not printed
    assert "is_gradient_checkpointing" not in r.stderr and "gemm_4bit_forward" not in r.stderr


def test_early_stopping_stops_at_patience_and_keeps_the_best_weights(tmp_path, tiny_model_dir):
    """A learning rate far too high soon makes validation loss worse: training
    stops `patience` evaluations after the best one, and the saved adapter holds the best weights."""
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=30, save_steps=None, lr=20.0, warmup_ratio=0.0,
                            scheduler="constant", eval_steps=1, early_stopping_patience=2, load_best_at_end=True)
    r = run_cli("train", str(cfg), "name=es")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "runs" / "es"
    summary = json.loads((run / "train_summary.json").read_text())
    vals = [v["val_loss"] for v in summary["val_history"]]
    best = vals.index(min(vals))
    assert summary["best_val_loss"] == min(vals)
    assert len(vals) - 1 - best == 2, vals  # stopped exactly `patience` evaluations after the best
    assert summary["steps"] == len(vals) < 30
    assert summary["used_best_checkpoint"] and best < len(vals) - 1  # the last weights were not the best
    kept = load_file(str(run / "checkpoints" / "best" / "trainable.safetensors"))
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert len(adapter) == len(kept) > 0
    for name, t in kept.items():  # PEFT drops the adapter name ("default") from saved keys
        torch.testing.assert_close(adapter[name.replace(".default", "")], t, rtol=0, atol=0)
