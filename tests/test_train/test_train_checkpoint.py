"""Checkpoints never run code on --resume: every file tunesmith reads back holds only tensors and plain values."""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import torch

from tunesmith.train.checkpoint import rng_state, set_rng_state

from support.train_runs import resume_run_config, run_cli


def _draws() -> tuple:
    return (torch.rand(3).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1),
            np.random.rand(3).tolist(), np.random.standard_normal())


def test_rng_state_survives_a_weights_only_load(tmp_path):
    random.gauss(0, 1)  # leaves python's cached second gaussian in the state
    np.random.standard_normal()  # numpy's too
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    _draws()  # move every stream on
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


class _WritesMarker:
    """Unpickling this object opens (creates) the marker file: the payload a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = resume_run_config(tmp, tiny_model_dir, max_steps=2, save_steps=2)
    r = run_cli("train", str(cfg), "name=good")
    assert r.returncode == 0, r.stderr[-2000:]
    return cfg, tmp / "runs"


@pytest.mark.parametrize("poisoned", ["rng-rank0.pt", "scheduler.pt", "optimizer.pt"])
def test_resume_refuses_a_checkpoint_file_holding_a_pickle_payload(checkpointed_run, tmp_path, poisoned):
    cfg, runs = checkpointed_run
    name = f"poisoned-{poisoned.split('.')[0]}"
    shutil.copytree(runs / "good", runs / name)
    shutil.rmtree(runs / name / "adapter")  # the finished run's result: a resumed run would write it again
    step = runs / name / "checkpoints" / "step-000002"
    marker = tmp_path / "payload-ran"
    torch.save({"torch": _WritesMarker(marker), "state": {}, "param_groups": []}, step / poisoned)

    r = run_cli("train", str(cfg), f"name={name}", "--resume")

    assert not marker.exists(), "the checkpoint's pickle payload ran"
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert "--resume refused" in r.stderr and "could run code" in r.stderr
    assert str(step) in r.stderr.replace("\n", "")  # names the folder (or the file in it)
    assert not (runs / name / "adapter").exists()


def test_a_marker_payload_really_runs_under_a_plain_pickle_load(tmp_path):
    """The payload above is live: a plain (weights_only=False) load creates the marker."""
    marker = tmp_path / "payload-ran"
    torch.save({"torch": _WritesMarker(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
    os.remove(marker)
