"""Exact resume after SIGKILL, and DDP (gloo, 2 processes) against one process, through the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from support.train_runs import ENV, resume_run_config, run_cli


def test_resume_after_sigkill_gives_the_same_adapter(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir)
    r = run_cli("train", str(cfg), "name=straight")
    assert r.returncode == 0, r.stderr[-2000:]

    r = run_cli("train", str(cfg), "name=killed", env={**ENV, "TUNESMITH_FAULT_KILL_AFTER_STEP": "5"})
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])  # really killed mid-run
    run = tmp_path / "runs" / "killed"
    assert not (run / "adapter").exists()
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000002", "step-000004"]

    r = run_cli("train", str(cfg), "name=killed", "--resume")
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
    cfg = resume_run_config(tmp_path, tiny_model_dir)
    r = run_cli("train", str(cfg), "name=fresh", "--resume")
    assert r.returncode == 2 and "no complete checkpoint" in r.stderr and "Traceback" not in r.stderr


STRATEGIES = {
    "ddp": ["--distributed", "ddp"],
    "fsdp": ["--distributed", "fsdp"],
    "zero2": ["--distributed", "deepspeed", "--zero-stage", "2"],
    "zero3": ["--distributed", "deepspeed", "--zero-stage", "3"],
}
needs_torchrun = pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "train_metrics.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir):
    """The reference: 1 process x (batch 2, accumulation 2), no dropout."""
    tmp = tmp_path_factory.mktemp("dp")
    cfg = resume_run_config(tmp, tiny_model_dir, lora={"r": 4, "dropout": 0.0}, max_steps=6, save_steps=None)
    r = run_cli("train", str(cfg), "name=single", "train.grad_accum=2")
    assert r.returncode == 0, r.stderr[-2000:]
    return cfg, tmp / "runs"


@needs_torchrun
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_processes_match_one_process_with_the_same_global_batch(one_process, strategy):
    """2 ranks x (batch 2, accumulation 1) see the same micro-batches per step as 1 process x
    (batch 2, accumulation 2): loss curve and saved adapter must agree, for every strategy."""
    if strategy.startswith("zero"):
        pytest.importorskip("deepspeed")
    cfg, runs = one_process
    r = run_cli("train", str(cfg), f"name={strategy}", "train.grad_accum=1", "--nproc", "2", *STRATEGIES[strategy])
    assert r.returncode == 0, r.stderr[-3000:]
    run = runs / strategy
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2  # really two processes, not a silent single-process run
    assert summary["val_history"], "validation ran through the wrapped model"
    single, multi = _losses(runs / "single"), _losses(run)
    assert len(single) == len(multi) == 6
    assert all(abs(s - m) < 1e-4 for s, m in zip(single, multi)), (single, multi)
    assert multi[-1] < multi[0]
    a, b = _adapter(runs / "single"), _adapter(run)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:  # the saved adapter holds full (gathered) tensors, equal to the single-process result
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    if strategy.startswith("zero"):
        ds = json.loads((run / "deepspeed_config.json").read_text())
        assert ds["zero_optimization"]["stage"] == int(strategy[-1])
        assert "DeepSpeed ZeRO-" + strategy[-1] in r.stdout


@needs_torchrun
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero3"])
def test_two_process_resume_after_sigkill_gives_the_same_adapter(tmp_path, tiny_model_dir, strategy):
    """Dropout on, so every rank's RNG stream matters; ranks see batches of different shapes, so
    their streams differ and each rank must get its own back."""
    if strategy.startswith("zero"):
        pytest.importorskip("deepspeed")
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=7, save_steps=2)
    args = ["train.grad_accum=1", "--nproc", "2", *STRATEGIES[strategy]]
    r = run_cli("train", str(cfg), "name=straight", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("train", str(cfg), "name=killed", *args, env={**ENV, "TUNESMITH_FAULT_KILL_AFTER_STEP": "5"})
    run = tmp_path / "runs" / "killed"
    assert r.returncode != 0 and not (run / "adapter").exists()
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000002", "step-000004"]
    assert sorted(p.name for p in (run / "checkpoints" / "step-000004").glob("rng-rank*.pt")) == \
        ["rng-rank0.pt", "rng-rank1.pt"]
    r = run_cli("train", str(cfg), "name=killed", *args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step-000004" in r.stdout
    a, b = _adapter(tmp_path / "runs" / "straight"), _adapter(run)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(run) == _losses(tmp_path / "runs" / "straight")


def test_resume_with_another_world_size_is_refused(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=2, save_steps=2)
    r = run_cli("train", str(cfg), "name=one")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = tmp_path / "runs" / "one" / "checkpoints" / "step-000002" / "state.json"
    state = json.loads(meta.read_text())
    meta.write_text(json.dumps({**state, "world_size": 2, "strategy": "ddp"}))  # as if written by 2 ranks
    r = run_cli("train", str(cfg), "name=one", "--resume")
    assert r.returncode == 2 and "written by 2 process(es)" in r.stderr and "Traceback" not in r.stderr


@needs_torchrun
def test_deepspeed_zero3_full_fine_tuning_in_bf16_saves_the_whole_model(tmp_path, tiny_model_dir):
    """The GPU recipe on CPU: full fine-tuning, bf16 (DeepSpeed keeps the fp32 master weights), ZeRO-3 shards
    the parameters; the saved model is complete (gathered from the shards) and trained."""
    pytest.importorskip("deepspeed")
    cfg = yaml.safe_load(resume_run_config(tmp_path, tiny_model_dir, max_steps=4, save_steps=None).read_text())
    cfg["train"].pop("lora")
    cfg["train"]["method"] = "full"
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("train", str(tmp_path / "full.yaml"), "name=z3", "model.dtype=bfloat16", "train.grad_accum=1",
                "--nproc", "2", "--distributed", "deepspeed", "--zero-stage", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "z3"
    ds = json.loads((run / "deepspeed_config.json").read_text())
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["stage"] == 3
    losses = _losses(run)
    assert len(losses) == 4 and losses[-1] < losses[0]
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    tuned = load_file(str(run / "model" / "model.safetensors"))
    assert tuned.keys() == base.keys()
    for k in base:
        assert tuned[k].shape == base[k].shape and tuned[k].dtype == torch.bfloat16
        assert not torch.equal(tuned[k].float(), base[k].float()), k  # every tensor trained, none left empty


def test_deepspeed_without_the_package_is_one_clear_error(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir)
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "deepspeed.py").write_text("raise ImportError('deepspeed is not installed')\n")
    env = {**ENV, "PYTHONPATH": str(blocker) + os.pathsep + ENV.get("PYTHONPATH", "")}
    r = run_cli("train", str(cfg), "--nproc", "2", "--distributed", "deepspeed", env=env)
    assert r.returncode == 2 and "needs the deepspeed package" in r.stderr and "Traceback" not in r.stderr
    assert "torchrun" not in r.stdout  # refused before launching anything
