"""`tunesmith import-job`: an OpenAI fine-tuning job's JSON (hand-written from the API's documented job object) and the
local copies of its files become a run config that validates, and a mapping table line per job setting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import ConfigError, DataError
from tunesmith.migrate.openai_job import import_job, step_shape

JOBS = Path(__file__).resolve().parents[1] / "fixtures" / "openai_job"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id: the importer reads no weights


def _chat(i: int) -> dict:
    return {"messages": [{"role": "system", "content": "Route the ticket."},
                         {"role": "user", "content": f"Ticket {i}: the invoice {i} shows a charge I do not recognise"},
                         {"role": "assistant", "content": ["billing", "refund", "fraud"][i % 3]}]}


def _files(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "file-Tra1ning0042.jsonl").write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(40)))
    (folder / "file-Va1idati0n77.jsonl").write_text("".join(json.dumps(_chat(100 + i)) + "\n" for i in range(5)))
    return folder


def test_a_supervised_job_becomes_a_config_that_validates_with_a_mapping_table(tmp_path):
    folder = _files(tmp_path)
    out = tmp_path / "cfg" / "config.yaml"
    result = CliRunner().invoke(app, ["import-job", str(JOBS / "job_supervised.json"), "--files-dir", str(folder),
                                      "--output", str(out), "--model", MODEL])
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert cfg.name == "tickets" and cfg.seed == 1234 and cfg.model.name_or_path == MODEL
    assert cfg.train.epochs == 2.0
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.packing) == (3, 2, False)  # 6 examples per step
    assert cfg.resolve_path(cfg.data.train_file) == (folder / "file-Tra1ning0042.jsonl").resolve()
    assert cfg.resolve_path(cfg.data.validation_file) == (folder / "file-Va1idati0n77.jsonl").resolve()
    lines = result.output.splitlines()
    table = {line.split(" = ")[0]: line for line in lines if " -> " in line}
    assert "train.epochs = 2.0" in table["method.supervised.hyperparameters.n_epochs"]
    assert "train.batch_size x train.grad_accum = 3 x 2" in table["method.supervised.hyperparameters.batch_size"]
    lr = table["method.supervised.hyperparameters.learning_rate_multiplier"]
    assert f"train.lr = {cfg.train.lr}" in lr and "no meaning outside OpenAI" in lr and "recipe" in lr
    ft = "ft:gpt-4o-mini-2024-07-18:acme::tickets:B9xQ2mLa"
    assert "eval.parity.reference = ft-model" in table["fine_tuned_model"] and "tunesmith data capture" in table["fine_tuned_model"]
    assert [(e.name, e.model, e.base_url, e.api_key_env) for e in cfg.eval.endpoints] == [
        ("ft-model", ft, "https://api.openai.com/v1", "OPENAI_API_KEY")]
    assert "ft-model" in cfg.eval.models and "tuned" in cfg.eval.models
    assert (cfg.eval.parity.reference, cfg.eval.parity.candidate) == ("ft-model", "tuned")
    assert "model.name_or_path" in table["model"] and "data.validation_file" in table["validation_file"]


def test_no_reference_leaves_the_ft_model_out_of_the_evaluation(tmp_path):
    folder = _files(tmp_path)
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(app, ["import-job", str(JOBS / "job_supervised.json"), "--files-dir", str(folder),
                                      "--output", str(out), "--model", MODEL, "--no-reference"])
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert cfg.eval.endpoints == [] and cfg.eval.parity is None
    table = {line.split(" = ")[0]: line for line in result.output.splitlines() if " -> " in line}
    assert "not mapped" in table["fine_tuned_model"] and "--no-reference" in table["fine_tuned_model"]


def test_the_reference_can_answer_elsewhere_than_openai(tmp_path):
    folder = _files(tmp_path)
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(app, ["import-job", str(JOBS / "job_supervised.json"), "--files-dir", str(folder),
                                      "--output", str(out), "--model", MODEL,
                                      "--reference-base-url", "http://127.0.0.1:8765/v1",
                                      "--reference-model", "acme-tickets-ft", "--reference-key-env", "",
                                      "--price-input", "0.3", "--price-output", "1.2"])
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert [(e.name, e.model, e.base_url, e.api_key_env) for e in cfg.eval.endpoints] == [
        ("ft-model", "acme-tickets-ft", "http://127.0.0.1:8765/v1", None)]  # None: no Authorization header
    ep = cfg.eval.endpoints[0]
    assert (ep.usd_per_million_input_tokens, ep.usd_per_million_output_tokens) == (0.3, 1.2)
    line = next(v for v in result.output.splitlines() if v.startswith("fine_tuned_model = "))
    assert "http://127.0.0.1:8765/v1, no key" in line and "as model acme-tickets-ft" in line
    assert "--base-url http://127.0.0.1:8765/v1 --model acme-tickets-ft" in line


def test_auto_values_of_a_legacy_job_take_the_recipe_and_say_so(tmp_path):
    folder = _files(tmp_path)
    cfg, rows = import_job(JOBS / "job_legacy_auto.json", tmp_path / "c.yaml", files={}, files_dir=folder, model=MODEL)
    by_key = {r.job_key: r for r in rows}
    epochs = by_key["hyperparameters.n_epochs"]
    assert epochs.job_value == "auto" and epochs.value == cfg.train.epochs and epochs.note.startswith("auto: the recipe's")
    assert cfg.train.packing is True  # no explicit batch: the recipe's packed rows
    assert by_key["validation_file"].tunesmith_key == "data.validation_fraction"
    assert "did not succeed" in by_key["status"].note
    assert cfg.name == "ftjob-LegacyAuto01" and cfg.data.validation_file is None


def test_files_can_be_given_one_by_one_and_a_missing_file_is_a_clear_error(tmp_path):
    folder = _files(tmp_path)
    train = shutil.copy(folder / "file-Tra1ning0042.jsonl", tmp_path / "train.jsonl")
    with pytest.raises(ConfigError, match="validation_file file-Va1idati0n77 has no local copy"):
        import_job(JOBS / "job_supervised.json", tmp_path / "c.yaml", files={"file-Tra1ning0042": Path(train)}, files_dir=None,
                   model=MODEL)
    cfg, _ = import_job(JOBS / "job_supervised.json", tmp_path / "c.yaml", model=MODEL, files_dir=None,
                        files={"file-Tra1ning0042": Path(train), "file-Va1idati0n77": folder / "file-Va1idati0n77.jsonl"})
    assert cfg.resolve_path(cfg.data.train_file) == Path(train).resolve()


def test_a_dpo_job_is_recognised_and_refused_as_not_yet_trainable(tmp_path):
    out = tmp_path / "c.yaml"
    with pytest.raises(ConfigError, match="dpo fine-tuning job"):  # refused before its files are even looked for
        import_job(JOBS / "job_dpo.json", out, files={}, files_dir=None, model=None)
    (tmp_path / "file-Pref3rences01.jsonl").write_text(json.dumps({
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "What."}]}) + "\n")
    result = CliRunner().invoke(app, ["import-job", str(JOBS / "job_dpo.json"), "--files-dir", str(tmp_path), "--output", str(out)])
    assert result.exit_code != 0 and not out.exists()
    assert isinstance(result.exception, ConfigError)
    assert "dpo fine-tuning job" in result.exception.message and "not yet trainable" in result.exception.message
    # a preference file behind a job that says supervised is not misread either
    job = json.loads((JOBS / "job_supervised.json").read_text())
    job.update(validation_file=None, training_file="file-Pref3rences01")
    (tmp_path / "sft.json").write_text(json.dumps(job))
    with pytest.raises(DataError, match="preference \\(DPO\\) rows"):
        import_job(tmp_path / "sft.json", out, files={}, files_dir=tmp_path, model=MODEL)
    assert not out.exists()


def test_not_a_job_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text('{"object": "list", "data": []}')
    with pytest.raises(ConfigError, match="not an OpenAI fine-tuning job"):
        import_job(tmp_path / "x.json", tmp_path / "c.yaml", files={}, files_dir=None, model=None)


@pytest.mark.parametrize(("n", "shape"), [(1, (1, 1)), (6, (3, 2)), (8, (4, 2)), (7, (1, 7)), (32, (4, 8))])
def test_batch_size_becomes_an_exact_step(n, shape):
    assert step_shape(n) == shape
