"""`tunesmith advise` end to end without a terminal: flags, config section, --output, --json."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

from support.tickets import write_tickets

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, ["advise", *args])
    if result.exception and not isinstance(result.exception, (SystemExit, TunesmithError)):
        raise result.exception
    return result


def test_support_tickets_from_flags_writes_a_loadable_run_config(tmp_path):
    data = write_tickets(tmp_path / "tickets.jsonl", 1200, duplicates=12)
    out = tmp_path / "run.yaml"
    flags = ["--data", str(data), "--model", "llama-3.1-8b", "--prompt-engineering-tried", "--narrow",
             "--monthly-tokens", "20000000", "--api-price", "30", "--ft-price", "0.1", "--gpu", "A10G",
             "--stratify-field", "category", "-o", str(out), "--no-interactive", "--no-this-machine"]
    r = invoke(*flags, "--recipe", "seed")
    assert r.exit_code == 0, r.output
    # the seed recipe: tickets are short (rows of 128 tokens): the bf16 8B base (15 GiB) + LoRA fits 22.5 GiB
    assert "Fine-tune with LORA on A10G" in r.output
    assert "Memory: lora on llama-3.1-8b, batch 4 x 128" in r.output and "peak total" in r.output
    assert "pays for itself in" in r.output and "MFU" in r.output
    cfg = load_config(out)
    assert cfg.train.method == "lora" and cfg.train.max_seq_length == 128
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.lr) == (3, 4, 4, 2e-4)
    assert cfg.model.name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    # the data file is written relative to the config's folder
    assert cfg.data.train_file == "tickets.jsonl" and cfg.resolve_path(cfg.data.train_file) == data.resolve()
    assert cfg.data.stratify_field == "category"
    assert cfg.advise.examples is None and cfg.advise.narrow_task is True and cfg.advise.gpu == "A10G"
    assert cfg.advise.recipe == "seed"
    # the default recipe packs ~4 tickets a row (57 tokens on average, 86 at most, +25 % as the count is
    # approximate) and takes the 8B LoRA rate; 960 train tickets -> one epoch
    r = invoke(*flags)
    assert r.exit_code == 0, r.output
    assert "Memory: lora on llama-3.1-8b, batch 4 x 320" in r.output
    cfg = load_config(out)
    assert (cfg.train.max_seq_length, cfg.train.batch_size, cfg.train.grad_accum) == (320, 4, 1)
    assert (cfg.train.epochs, cfg.train.lr) == (1.0, 3e-4)
    why = {c.key: c.reason for c in cfg.advise.choices}
    assert "Tinker cookbook" in why["train.lr"] and "packed rows of 320 tokens" in why["train.max_seq_length"]
    # on a 15 GiB T4 only the 4-bit base fits
    r = invoke("--data", str(data), "--model", "llama-3.1-8b", "--prompt-engineering-tried", "--narrow", "--gpu", "T4",
               "-o", str(out))
    assert "Fine-tune with QLORA on T4" in r.output
    assert load_config(out).train.method == "qlora"


def test_config_advise_section_and_json_output(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"name_or_path": "embedded:smollm2-135m-instruct"},
        "advise": {"knowledge_changes_often": True, "prompt_engineering_tried": True, "examples": 100},
    }))
    r = invoke("-c", str(cfg_path), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["verdict"] == "rag" and d["examples"] == 100
    assert d["model"]["params"] == 134_515_008
    # a flag overrides the config's answer
    r2 = invoke("-c", str(cfg_path), "--json", "--examples", "900", "--narrow", "--consistent-format")
    d2 = json.loads(r2.output)
    assert d2["verdict"] == "both" and d2["plan"]["method"] in ("lora", "qlora", "full")


def test_300_examples_says_not_yet_and_full_method_config_loads(tmp_path):
    r = invoke("--model", "smollm2-135m", "--examples", "300", "--narrow", "--no-interactive")
    assert r.exit_code == 0
    assert "Not yet: collect data and prompt-engineer first" in r.output
    out = tmp_path / "full.yaml"
    r = invoke("--model", "smollm2-360m", "--examples", "20000", "--kind", "domain", "--narrow", "-o", str(out))
    assert r.exit_code == 0, r.output
    cfg = load_config(out)
    assert cfg.train.method == "full" and cfg.train.completion_only_loss is False


def test_user_errors_have_messages_not_tracebacks():
    r = invoke("--model", "llama-3.1-8b", "--gpu", "A100")
    assert isinstance(r.exception, TunesmithError) and "unknown GPU 'A100'" in str(r.exception)
    r = invoke("--model", "gpt-5")
    assert isinstance(r.exception, TunesmithError) and "unknown model architecture" in str(r.exception)
    r = invoke("--model", "llama-3.1-8b", "--mfu", "1.5")
    assert isinstance(r.exception, TunesmithError) and "advise answers" in str(r.exception) and "mfu" in str(r.exception)


@pytest.mark.parametrize("flag,needle", [("--list-models", "llama-3.1-70b"), ("--list-gpus", "H100-80GB")])
def test_lists(flag, needle):
    r = invoke(flag)
    assert r.exit_code == 0 and needle in r.output


def test_interactive_prompts_fill_the_missing_answers():
    answers = "y\n1200\ntask\ny\nn\nn\nn\n0\n"  # tried PE, 1200 examples, task, narrow, no RAG signals, volume unknown
    r = runner.invoke(app, ["advise", "--model", "smollm2-135m", "--interactive"], input=answers)
    assert r.exit_code == 0, r.output
    assert "How many high-quality examples" in r.output
    assert "(verdict: fine-tune)" in r.output and "1,200 examples meet the 500 minimum" in r.output


def test_misspelt_advise_key_is_named_with_a_suggestion(tmp_path):
    from tunesmith.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("advise:\n  examplez: 3\n")
    with pytest.raises(ConfigError, match=r"advise.examplez: unknown key \(did you mean 'examples'\?\)"):
        load_config(bad)


def test_unknown_config_model_still_advises_without_estimates(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"model": {"name_or_path": "some-org/unknown-model"}}))
    r = invoke("-c", str(cfg_path), "--examples", "300", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["verdict"] == "not-yet" and d["options"] == [] and "plan" not in d
    assert any("not estimated: unknown model architecture 'some-org/unknown-model'" in x for x in d["reasons"])
