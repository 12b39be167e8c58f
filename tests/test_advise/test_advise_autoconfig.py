"""The config advise writes runs as-is: paths work from where the user stands and are written relative to
the config; the evaluation follows the data; the user's own settings win and the run says which values
advise chose and why; `tunesmith run --data FILE` needs no config and leaves one in the run folder."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import tunesmith.pipeline as pipeline
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, (SystemExit, TunesmithError)):
        raise result.exception
    return result


def write_emails(path: Path, n: int, seed: int = 0) -> Path:
    """The issue's task: customer email -> JSON with five fields; ~12 % of the emails give no phone."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = f"{rng.choice(['Ana', 'Ben', 'Chloe', 'Dev', 'Emma'])} {rng.choice(['Smith', 'Okafor', 'Garcia', 'Chen'])}"
        order, prio = f"ORD-{rng.randint(10000, 99999)}", rng.choice(["low", "normal", "urgent"])
        product = rng.choice(["kettle", "toaster", "lamp", "monitor"])
        phone = None if rng.random() < 0.12 else f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
        body = (f"Hello, I am {name}. My {product} from order {order} arrived broken. "
                + ("Please hurry. " if prio == "urgent" else "") + (f"Call me on {phone}." if phone else ""))
        answer = {"customer": name, "order_id": order, "product": product, "priority": prio, "phone": phone}
        rows.append({"instruction": "Extract the fields of this email as JSON.", "input": body, "output": json.dumps(answer)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with data/emails.jsonl, as the working directory."""
    root = tmp_path / "project"
    write_emails(root / "data" / "emails.jsonl", 120)
    monkeypatch.chdir(root)
    return root


def test_relative_data_path_from_where_you_stand_and_written_relative_to_the_config(project, monkeypatch):
    r = invoke("advise", "--data", "data/emails.jsonl", "--model", "smollm2-135m", "--output", "configs/run.yaml",
               "--no-interactive", "--no-this-machine")
    assert r.exit_code == 0, r.output
    assert "100% json" in r.output and "Run config (what advise chose, and why)" in r.output
    written = yaml.safe_load((project / "configs" / "run.yaml").read_text())
    assert written["data"]["train_file"] == "../data/emails.jsonl" and written["output_dir"] == "runs"
    monkeypatch.chdir(project.parent)  # read from elsewhere: the paths still point at the project's files
    cfg = load_config(project / "configs" / "run.yaml")
    assert cfg.resolve_path(cfg.data.train_file) == project / "data" / "emails.jsonl"
    assert cfg.run_dir == project / "configs" / "runs" / "run"
    assert cfg.eval.resolved_scorer() == "json_fields" and cfg.eval.format_json is True
    assert cfg.eval.json_schema["properties"]["phone"]["type"] == ["string", "null"]
    why = {c.key: c.reason for c in cfg.advise.choices}
    assert "are JSON" in why["eval.scorer"] and "nullable: phone" in why["eval.json_schema"]
    assert cfg.train.lr == 2e-3 and "measured here" in why["train.lr"]


def test_a_budget_given_to_advise_is_written_and_the_recipe_plans_the_most_epochs_for_it_to_cut(project):
    r = invoke("advise", "--data", "data/emails.jsonl", "--model", "smollm2-135m", "--output", "run.yaml", "--budget", "10m",
               "--no-interactive", "--no-this-machine")
    assert r.exit_code == 0, r.output
    cfg = load_config(project / "run.yaml")
    assert cfg.train.time_budget == 600 and cfg.train.epochs == 3.0
    assert "time budget plans" in {c.key: c.reason for c in cfg.advise.choices}["train.epochs"]
    r = invoke("advise", "--data", "data/emails.jsonl", "--model", "smollm2-135m", "--output", "plain.yaml",
               "--no-interactive", "--no-this-machine")
    plain = load_config(project / "plain.yaml")
    assert plain.train.time_budget is None  # without a budget: epochs from the data size (3 here too: 96 examples)
    assert "enough to see" in {c.key: c.reason for c in plain.advise.choices}["train.epochs"]


def test_advise_shows_the_time_on_this_machine(project):
    r = invoke("advise", "--data", "data/emails.jsonl", "--model", "smollm2-135m", "--json", "--no-interactive")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    m = d["this_machine"]
    assert m["device"] in ("cpu", "cuda") and m["seconds"] > 0 and m["peak_flops"] > 0 and m["method"] == "lora"
    assert any(x.startswith("On this machine (") for x in d["reasons"])
    assert any(o["gpu"] for o in d["options"])  # the catalogue's GPUs are still there beside it


def test_your_settings_win_and_the_run_says_which_values_advise_chose(project, capsys):
    (project / "base.yaml").write_text(yaml.safe_dump({"train": {"lr": 1e-4}, "eval": {"scorer": "exact"}}))
    r = invoke("advise", "-c", "base.yaml", "--data", "data/emails.jsonl", "--model", "smollm2-135m", "-o", "run.yaml",
               "--no-interactive", "--no-this-machine")
    assert r.exit_code == 0, r.output
    assert "eval.scorer (yours kept)" in r.output and "train.lr (yours kept)" in r.output
    cfg = load_config(project / "run.yaml")
    assert cfg.train.lr == 1e-4 and cfg.eval.scorer == "exact"
    assert cfg.eval.format_json is True  # what the base config did not set still follows the data
    keys = {c.key for c in cfg.advise.choices}
    assert "eval.scorer" not in keys and "train.lr" not in keys and "eval.json_schema" in keys
    capsys.readouterr()
    pipeline.print_choices(load_config(project / "run.yaml", ["eval.format_json=false"]), "eval.")
    out = capsys.readouterr().out
    assert "eval.format_json = False (yours; advise chose True: format compliance" in out
    assert "eval.max_new_tokens = " in out and "train." not in out


def test_zero_config_run_writes_the_config_it_used_into_the_run_folder(project, monkeypatch, tiny_model_dir):
    ran = []
    monkeypatch.setattr(pipeline, "run_all", ran.append)
    r = invoke("run", "--data", "data/emails.jsonl", "--model", str(tiny_model_dir), "train.max_steps=3")
    assert r.exit_code == 0, r.output
    run_dir = project / "runs" / "emails"
    assert "run config written to" in r.output and "(verdict: " in r.output
    (cfg,) = ran
    assert cfg.run_dir == run_dir and Path(cfg.base_dir) == run_dir  # the pipeline runs the file's config
    again = load_config(run_dir / "config.yaml")  # reproducible: the file alone gives the same run
    assert again.run_dir == run_dir and again.resolve_path(again.data.train_file) == project / "data" / "emails.jsonl"
    assert again.train.max_steps == 3  # an override on the command line wins
    assert again.eval.resolved_scorer() == "json_fields" and again.model.name_or_path == str(tiny_model_dir)
    assert {c.key for c in again.advise.choices} >= {"train.lr", "train.max_seq_length", "eval.json_schema"}


def test_run_needs_a_config_or_data_not_both(project):
    r = invoke("run")
    assert isinstance(r.exception, TunesmithError) and "--data FILE" in str(r.exception)
    (project / "c.yaml").write_text("name: x\n")
    r = invoke("run", "c.yaml", "--data", "data/emails.jsonl")
    assert isinstance(r.exception, TunesmithError) and "not both" in str(r.exception)
    r = invoke("run", "--data", "data/missing.jsonl")
    assert isinstance(r.exception, TunesmithError) and "does not exist" in str(r.exception)
    r = invoke("run", "--data", "data/emails.jsonl", "--recipe", "fast")
    assert isinstance(r.exception, TunesmithError) and "unknown recipe" in str(r.exception)


def test_the_run_folder_config_has_paths_relative_to_the_run_folder(tmp_path):
    (tmp_path / "cfgs").mkdir()
    write_emails(tmp_path / "d" / "e.jsonl", 5)
    (tmp_path / "cfgs" / "c.yaml").write_text("name: r\noutput_dir: ../out\ndata: {train_file: ../d/e.jsonl}\n")
    cfg = load_config(tmp_path / "cfgs" / "c.yaml")
    pipeline._start(cfg)
    again = load_config(tmp_path / "out" / "r" / "config.yaml")
    assert again.run_dir == cfg.run_dir and again.resolve_path(again.data.train_file) == tmp_path / "d" / "e.jsonl"


def test_a_written_config_runs_end_to_end(tmp_path, tiny_model_dir):
    """advise -> run.yaml -> `tunesmith run run.yaml` on the tiny model, each from another working directory."""
    project = tmp_path / "project"
    write_emails(project / "data" / "emails.jsonl", 60)
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def cli(*args, cwd):
        return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True, env=env,
                              cwd=cwd)

    r = cli("advise", "--data", "data/emails.jsonl", "--model", str(tiny_model_dir), "-o", "run.yaml",
            "--no-interactive", "--no-this-machine", cwd=project)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("run", "project/run.yaml", "train.max_steps=2", "eval.max_examples=4", "eval.models=[base,tuned]",
            "eval.adversarial.max_prompts=2", "eval.regression.max_prompts=2", "eval.regression.max_text_chars=400",
            "eval.regression.instruction_prompts=2",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chosen by tunesmith advise" in r.stdout and "eval.scorer = json_fields" in r.stdout
    run_dir = project / "runs" / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scorer"] == "json_fields" and "format_compliance" in metrics["tuned"]
    assert "field_f1" in metrics["tuned"]
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
