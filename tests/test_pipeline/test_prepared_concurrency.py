"""Several processes that need the same run's prepared data at once (the ranks torchrun starts) take
turns: one prepares, the others load its result; none crashes on the other's half-written folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml

from support.train_runs import ENV, resume_run_config

# Each process waits for the same instant, then prepares; the write of the prepared folder is held open
# for a second so that, without turn-taking, the processes' writes overlap every time.
SCRIPT = """
import contextlib, sys, time
import tunesmith.data.prepare as prepare
from tunesmith.config import load_config
from tunesmith.pipeline import _prepared

real_atomic_dir = prepare.atomic_dir

@contextlib.contextmanager
def slow_atomic_dir(path):
    with real_atomic_dir(path) as tmp:
        yield tmp
        time.sleep(1.0)

prepare.atomic_dir = slow_atomic_dir
cfg = load_config(sys.argv[1], [])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(len(_prepared(cfg).train))
"""


def test_processes_preparing_the_same_run_at_once_all_get_the_same_data(tmp_path):
    cfg_path = resume_run_config(tmp_path, tmp_path / "no-model-needed")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"]["check_length"] = False
    cfg_path.write_text(yaml.safe_dump(cfg))
    start = time.time() + 10
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg_path), str(start)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    run = tmp_path / "runs" / "run"
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["status"] == "ok"
    assert {out.strip().splitlines()[-1] for out, _ in results} == {str(stats["train_examples"])}
    assert not list(run.glob(".data.*.tmp")) and not (run / ".data.old").exists()
