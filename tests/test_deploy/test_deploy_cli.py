"""The export/serve commands on a run folder: merge, gguf, vllm command, key generation, config errors."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.deploy.server.auth import KeyChecker, hash_key, load_key_hashes
from tunesmith.errors import ConfigError, TunesmithError

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

runner = CliRunner()


@pytest.fixture
def run_config(tiny_model_dir, tmp_path):
    cfg = {"name": "tickets", "output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(tiny_model_dir)},
           "train": {"method": "lora", "lora": {"r": 4}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    make_adapter(tiny_model_dir, tmp_path / "runs" / "tickets" / "adapter", r=4)
    return path


def test_export_merge_and_vllm_commands(run_config, tmp_path):
    r = runner.invoke(app, ["export", "merge", str(run_config)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    merged = tmp_path / "runs" / "tickets" / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "README.md").is_file()

    r = runner.invoke(app, ["export", "gguf", str(run_config), "--type", "q8_0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    gguf_file = tmp_path / "runs" / "tickets" / "gguf" / "tickets-q8_0.gguf"
    assert gguf_file.read_bytes()[:4] == b"GGUF" and gguf_file.stat().st_size > 1_000_000  # vocab + tensors
    assert f"FROM ./{gguf_file.name}" in (gguf_file.parent / "Modelfile").read_text()

    r = runner.invoke(app, ["serve", str(run_config), "--engine", "vllm"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cmd = r.output.strip().splitlines()[-1]
    assert cmd.startswith("vllm serve ") and "--enable-lora" in cmd and "--max-lora-rank 8" in cmd
    assert f"tickets={tmp_path / 'runs' / 'tickets' / 'adapter'}" in cmd


def test_serve_without_keys_is_a_config_error(run_config):
    with pytest.raises(ConfigError, match="no API key"):
        runner.invoke(app, ["serve", str(run_config)], catch_exceptions=False)
    with pytest.raises(ConfigError, match="only allowed on a loopback"):
        runner.invoke(app, ["serve", str(run_config), "serve.auth=false", "serve.host=0.0.0.0"],
                      catch_exceptions=False)


def test_unknown_serve_key_is_rejected(run_config):
    with pytest.raises(ConfigError, match="did you mean 'max_batch_size'"):
        runner.invoke(app, ["serve", str(run_config), "serve.max_batchsize=4"], catch_exceptions=False)


def test_new_key_and_key_file(tmp_path):
    r = runner.invoke(app, ["serve", "--new-key"], catch_exceptions=False)
    key = re.search(r"(tsk-\S+)", r.output).group(1)
    digest = re.search(r"\b([0-9a-f]{64})\b", r.output).group(1)
    assert hash_key(key) == digest
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# ops team\n{digest}\n")
    checker = KeyChecker(load_key_hashes([], keys))
    assert checker.check(f"Bearer {key}") == digest
    assert checker.check(f"Bearer {key}x") is None and checker.check(key) is None and checker.check(None) is None
    keys.write_text(key + "\n")  # a plaintext key in the file is refused: only digests are stored
    with pytest.raises(TunesmithError, match="not a sha256 hex digest"):
        load_key_hashes([], keys)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe{}", b'{"r": "four"}'],
                         ids=["invalid-json", "json-list", "invalid-utf8", "rank-not-int"])
def test_export_and_vllm_refuse_a_malformed_adapter_config_cleanly(run_config, tmp_path, content):
    (tmp_path / "runs" / "tickets" / "adapter" / "adapter_config.json").write_bytes(content)
    for argv in (["export", "merge", str(run_config)], ["serve", str(run_config), "--engine", "vllm"]):
        r = runner.invoke(app, argv)  # the CLI's main() prints a TunesmithError without a traceback, exit 2
        assert isinstance(r.exception, TunesmithError), (argv, r.exception)
        assert "adapter_config.json" in str(r.exception), str(r.exception)
