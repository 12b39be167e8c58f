"""Small training runs through the CLI in a subprocess (resume, distributed, checkpoint and run tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def urgency_conversation(i: int) -> dict:
    """A prepared record for in-process training: ticket ``i`` and its urgency (Low / High alternating)."""
    return {"id": f"r:{i}", "messages": [{"role": "user", "content": f"Ticket {i}: printer {'on fire' * (i % 3)}"},
                                         {"role": "assistant", "content": f"Urgency: {['Low', 'High'][i % 2]}"}]}


def _data(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        rows.append({"instruction": f"Ticket {i}: {'printer broke' if i % 3 else 'how do I export?'} (#{i * 7})",
                     "output": f"Urgency: {['Low', 'High', 'Medium'][i % 3]}\nCategory: {['Billing', 'Technical'][i % 2]}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def resume_run_config(tmp_path: Path, model_dir: Path, **train) -> Path:
    """config.yaml in ``tmp_path``: LoRA on ``model_dir``, 8 steps, a checkpoint every 2; ``train`` overrides train keys.
    The forgetting guard is off (these runs test resume and parallel mechanics; the guard has its own tests, and
    under fsdp / ZeRO-3 its default is off, which would make those runs differ from one process)."""
    cfg = {
        "name": "run", "output_dir": str(tmp_path / "runs"), "seed": 5,
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_file": str(_data(tmp_path / "d.jsonl")), "validation_fraction": 0.1, "test_fraction": 0.1},
        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.1}, "batch_size": 2, "grad_accum": 2, "lr": 1e-3,
                  "max_steps": 8, "save_steps": 2, "max_seq_length": 128, "logging_steps": 100,
                  "forgetting_guard": "off", **train},
    }
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run_cli(*args, env=None):
    """``python -m tunesmith.cli *args`` in a subprocess (offline, one OpenMP thread unless ``env`` says otherwise)."""
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True, env=env or ENV)
