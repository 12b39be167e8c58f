"""Exact resume after SIGKILL, and DDP (gloo, 2 processes) against one process, through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _data(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        rows.append({"instruction": f"Ticket {i}: {'printer broke' if i % 3 else 'how do I export?'} (#{i * 7})",
                     "output": f"Urgency: {['Low', 'High', 'Medium'][i % 3]}\nCategory: {['Billing', 'Technical'][i % 2]}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, model_dir: Path, **train) -> Path:
    cfg = {
        "name": "run", "output_dir": str(tmp_path / "runs"), "seed": 5,
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_file": str(_data(tmp_path / "d.jsonl")), "validation_fraction": 0.1, "test_fraction": 0.1},
        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.1}, "batch_size": 2, "grad_accum": 2, "lr": 1e-3,
                  "max_steps": 8, "save_steps": 2, "max_seq_length": 128, "logging_steps": 100, **train},
    }
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True, env=env or ENV)


def test_resume_after_sigkill_gives_the_same_adapter(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir)
    r = _cli("train", str(cfg), "name=straight")
    assert r.returncode == 0, r.stderr[-2000:]

    r = _cli("train", str(cfg), "name=killed", env={**ENV, "TUNESMITH_FAULT_KILL_AFTER_STEP": "5"})
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])  # really killed mid-run
    run = tmp_path / "runs" / "killed"
    assert not (run / "adapter").exists()
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000002", "step-000004"]

    r = _cli("train", str(cfg), "name=killed", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from step-000004" in r.stdout
    a = load_file(str(tmp_path / "runs" / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (run / "train_metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # the resumed log has each step exactly once


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir)
    r = _cli("train", str(cfg), "name=fresh", "--resume")
    assert r.returncode == 2 and "no complete checkpoint" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_matches_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir):
    """2 ranks x (batch 2, accumulation 1) see the same micro-batches per step as 1 process x
    (batch 2, accumulation 2): the loss curves must agree."""
    cfg = _config(tmp_path, tiny_model_dir, lora={"r": 4, "dropout": 0.0}, max_steps=4, save_steps=None)
    r = _cli("train", str(cfg), "name=single", "train.grad_accum=2")
    assert r.returncode == 0, r.stderr[-2000:]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "tunesmith.cli", "train", str(cfg),
                        "name=ddp", "train.grad_accum=1"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2  # really two processes, not a silent single-process run
    single = [json.loads(x)["loss"] for x in (tmp_path / "runs" / "single" / "train_metrics.jsonl").read_text().splitlines()]
    ddp = [json.loads(x)["loss"] for x in (tmp_path / "runs" / "ddp" / "train_metrics.jsonl").read_text().splitlines()]
    assert len(single) == len(ddp) == 4
    for s, d in zip(single, ddp):
        assert abs(s - d) < 1e-4, (single, ddp)
    assert ddp[-1] < ddp[0]


@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_fsdp2_two_processes_matches_one_process(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, lora={"r": 4, "dropout": 0.0}, max_steps=6, save_steps=None,
                  save_every_epoch=False, load_best_at_end=False)
    r = _cli("train", str(cfg), "name=single", "train.grad_accum=2")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("train", str(cfg), "name=fsdp", "train.grad_accum=1", "train.distributed=fsdp", "--nproc", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "fsdp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["val_history"], "validation ran through the sharded model"
    single = [json.loads(x)["loss"] for x in (tmp_path / "runs" / "single" / "train_metrics.jsonl").read_text().splitlines()]
    fsdp = [json.loads(x)["loss"] for x in (tmp_path / "runs" / "fsdp" / "train_metrics.jsonl").read_text().splitlines()]
    assert len(fsdp) == 6 and all(abs(s - f) < 1e-4 for s, f in zip(single, fsdp)), (single, fsdp)
    a = load_file(str(tmp_path / "runs" / "single" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "runs" / "fsdp" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # the saved adapter holds full (gathered) tensors, equal to the single-process result
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
