"""train.report_to: TensorBoard and MLflow get exactly the logged step metrics, read back with their own
readers (tensorboard's EventAccumulator, MlflowClient); a failed run is ended; missing packages say so."""

from __future__ import annotations

import builtins
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tunesmith.config import build_config
from tunesmith.errors import ConfigError
from tunesmith.train.telemetry import Trackers

from support.train_runs import urgency_conversation

RECORDS = [
    {"step": 1, "epoch": 0.25, "loss": 2.75, "lr": 1e-4, "tokens": 512, "mfu": None, "note": "warm-up"},
    {"step": 2, "epoch": 0.5, "loss": 2.5, "lr": 2e-4, "tokens": 480, "mfu": 0.125, "flag": True},
    {"step": 3, "epoch": 0.75, "loss": np.float64(2.3125), "lr": 2e-4, "tokens": 500, "mfu": None, "ids": [1, 2]},
    {"step": 3, "epoch": 0.75, "val_loss": 2.4},  # a validation record at the same step
]


def _tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow_run(run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').as_posix()}")
    runs = client.search_runs([client.get_experiment_by_name(Trackers.MLFLOW_EXPERIMENT).experiment_id],
                              order_by=["attributes.start_time ASC"])
    return client, runs


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _f32(x: float) -> float:  # TensorBoard scalars are float32
    return float(np.float32(x))


def test_both_trackers_hold_exactly_the_logged_numbers(tmp_path, monkeypatch):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # MLflow would raise on a long value, not cut it

    run_dir = tmp_path / "runs" / "exp-1"
    params = {"lr": 2e-4, "method": "lora", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
              "max_steps": None, "report_to": ["tensorboard", "mlflow"], "long": "x" * (MAX_PARAM_VAL_LENGTH + 50)}
    with Trackers(["tensorboard", "mlflow"], run_dir, params) as t:
        for r in RECORDS:
            t.log(r)

    tb = _tb_scalars(run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(tb) == ["epoch", "loss", "lr", "mfu", "tokens", "val_loss"]  # no None, bool, text or list
    assert tb["loss"] == [(1, 2.75), (2, 2.5), (3, 2.3125)]
    assert tb["mfu"] == [(2, 0.125)]
    assert tb["lr"] == [(1, _f32(1e-4)), (2, _f32(2e-4)), (3, _f32(2e-4))]
    assert tb["val_loss"] == [(3, _f32(2.4))]

    client, runs = _mlflow_run(run_dir)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.info.run_name == "exp-1"
    assert sorted(run.data.metrics) == ["epoch", "loss", "lr", "mfu", "tokens", "val_loss"]
    rid = run.info.run_id
    assert _history(client, rid, "loss") == [(1, 2.75), (2, 2.5), (3, 2.3125)]
    assert _history(client, rid, "lr") == [(1, 1e-4), (2, 2e-4), (3, 2e-4)]  # doubles: exact
    assert _history(client, rid, "tokens") == [(1, 512.0), (2, 480.0), (3, 500.0)]
    assert _history(client, rid, "mfu") == [(2, 0.125)]
    assert _history(client, rid, "val_loss") == [(3, 2.4)]
    p = run.data.params
    assert p["lr"] == "0.0002" and p["method"] == "lora" and p["max_steps"] == "None"
    assert p["lora.r"] == "8" and p["lora.target_modules"] == "['q_proj', 'v_proj']"  # nested: dotted keys
    assert p["long"] == "x" * MAX_PARAM_VAL_LENGTH  # cut to MLflow's limit, not rejected
    assert not (tmp_path / "mlruns").exists() and not Path("mlruns").exists()  # nothing outside the run folder


def test_training_that_raises_ends_the_run_as_failed_and_the_next_run_still_starts(tmp_path):
    run_dir = tmp_path / "r"
    with (pytest.raises(RuntimeError, match="out of memory"),
          Trackers(["tensorboard", "mlflow"], run_dir, {"lr": 1.0}) as t):
        t.log({"step": 1, "loss": 3.0})
        t.log({"step": 2, "loss": math.nan})  # a diverged step is still a point
        raise RuntimeError("out of memory")
    assert _tb_scalars(run_dir)["loss"][0] == (1, 3.0)  # events flushed although training failed
    client, runs = _mlflow_run(run_dir)
    assert [r.info.status for r in runs] == ["FAILED"] and runs[0].info.end_time is not None
    hist = _history(client, runs[0].info.run_id, "loss")
    assert hist[0] == (1, 3.0) and hist[1][0] == 2 and math.isnan(hist[1][1])

    t = Trackers(["mlflow"], run_dir, {"lr": 1.0})  # same process, same store: a new run, no stale state
    t.log({"step": 1, "loss": 1.5})
    t.close()
    t.close()  # idempotent
    client, runs = _mlflow_run(run_dir)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert _history(client, runs[1].info.run_id, "loss") == [(1, 1.5)]


def test_a_run_left_open_is_ended_when_the_process_exits(tmp_path):
    """The call site may not close (an exception escaping train_from_config in the CLI): exit ends the run."""
    run_dir = tmp_path / "crashed"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from tunesmith.train.telemetry import Trackers
        t = Trackers(["tensorboard", "mlflow"], Path({str(run_dir)!r}), {{}})
        t.log({{"step": 1, "loss": 4.0}})
        raise SystemExit("training crashed")
    """)
    r = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "training crashed" in r.stderr, r.stderr[-2000:]
    client, runs = _mlflow_run(run_dir)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert _history(client, runs[0].info.run_id, "loss") == [(1, 4.0)]
    assert _tb_scalars(run_dir)["loss"] == [(1, 4.0)]


def _block_imports(monkeypatch, *blocked: str) -> None:
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.mark.parametrize(("tracker", "blocked", "missing"), [
    ("tensorboard", ("torch.utils.tensorboard", "tensorboard"), None),
    ("mlflow", ("mlflow",), "mlflow"),
    ("mlflow", ("sqlalchemy",), "sqlalchemy"),  # mlflow-skinny alone cannot open the SQLite store
])
def test_missing_tracker_package_is_a_clear_config_error(tmp_path, monkeypatch, tracker, blocked, missing):
    _block_imports(monkeypatch, *blocked)
    with pytest.raises(ConfigError) as e:
        Trackers([tracker], tmp_path / "run", {"lr": 1.0})
    assert e.value.message.startswith(f"train.report_to has {tracker} but it is not installed")
    if missing:
        assert f"({missing} is missing)" in e.value.message
    assert "pip install 'tunesmith[tracking]'" in e.value.hint
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "mlflow.db").exists()


def test_unknown_tracker_name_is_rejected_by_the_config():
    with pytest.raises(ConfigError, match="report_to"):
        build_config({"train": {"report_to": ["wandb"]}})


def test_training_run_reports_every_optimizer_step_to_both(tmp_path, tiny_model_dir):
    from tunesmith.data.prepared import PreparedData
    from tunesmith.train.run import train_from_config

    cfg = build_config({
        "name": "tracked", "output_dir": str(tmp_path / "runs"), "seed": 3,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.0}, "max_steps": 4, "batch_size": 2, "grad_accum": 2,
                  "lr": 1e-3, "max_seq_length": 64, "eval_steps": 2, "save_every_epoch": False, "preflight": False,
                  "report_to": ["tensorboard", "mlflow"]},
    })
    out = train_from_config(cfg, PreparedData(train=[urgency_conversation(i) for i in range(12)],
                                              validation=[urgency_conversation(i) for i in (20, 21)]))
    assert out.steps == 4
    run_dir = cfg.run_dir
    lines = [json.loads(x) for x in (run_dir / "train_metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], r["loss"]) for r in lines]
    assert [s for s, _ in expected] == [1, 2, 3, 4]  # one point per optimizer step, not per micro-batch
    val = [(v["step"], v["val_loss"]) for v in json.loads((run_dir / "train_summary.json").read_text())["val_history"]]
    assert [s for s, _ in val] == [2, 4]

    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    tb = _tb_scalars(run_dir)
    assert tb["loss"] == [(s, _f32(v)) for s, v in expected]
    assert tb["val_loss"] == [(s, _f32(v)) for s, v in val]

    client, runs = _mlflow_run(run_dir)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_name == "tracked"
    rid = runs[0].info.run_id
    assert _history(client, rid, "loss") == expected
    assert _history(client, rid, "val_loss") == val
    assert _history(client, rid, "grad_norm") == [(r["step"], r["grad_norm"]) for r in lines]
    assert runs[0].data.params["lr"] == "0.001" and runs[0].data.params["lora.r"] == "4"
