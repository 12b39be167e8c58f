from __future__ import annotations

import pytest
import yaml

from tunesmith.config import apply_overrides, build_config, load_config
from tunesmith.errors import ConfigError


def test_defaults_are_the_seed_recipe():
    cfg = build_config({})
    assert cfg.train.method == "lora"
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.lr) == (3, 4, 4, 2e-4)
    assert cfg.model.trust_remote_code is False


def test_unknown_nested_key_names_its_path_and_suggests(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"train": {"lora": {"rank": 8}}}))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.lora.rank: unknown key" in msg
    assert str(p) in msg
    assert "r, alpha" in msg


def test_misspelt_section_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        build_config({"trian": {"epochs": 1}})


def test_wrong_type_names_path_and_value():
    with pytest.raises(ConfigError, match=r"train.epochs: .*'many'"):
        build_config({"train": {"epochs": "many"}})


@pytest.mark.parametrize(
    "data, why",
    [
        ({"data": {"validation_fraction": 0.5, "test_fraction": 0.5}}, "nothing is left to train on"),
        ({"train": {"method": "full", "lora": {"r": 8}}}, "trains no adapters"),
        ({"model": {"dtype": "float16"}, "train": {"method": "full"}}, "underflow without loss scaling"),
        ({"train": {"zero_stage": 3}}, "zero_stage is a DeepSpeed setting"),
        ({"train": {"method": "qlora", "distributed": "fsdp"}}, "4-bit base weights cannot be sharded"),
        ({"train": {"method": "qlora", "distributed": "deepspeed"}}, "4-bit base weights cannot be sharded"),
        ({"eval": {"label_pattern": "(unclosed"}}, "not a valid regular expression"),
    ],
)
def test_impossible_combinations_are_rejected_with_a_reason(data, why):
    with pytest.raises(ConfigError, match=why):
        build_config(data)


def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  epochs: 3\n")
    cfg = load_config(p, ["train.epochs=1", "train.lora.target_modules=[q_proj,v_proj]", "train.packing=false", "name=x1"])
    assert cfg.train.epochs == 1
    assert cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.train.packing is False
    assert cfg.run_dir == (tmp_path / "runs" / "x1").resolve()


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["train.epochs"])


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config({"train": {"lr": 1e-3}}, base_dir=tmp_path)
    again = build_config(yaml.safe_load(cfg.to_yaml()), base_dir=tmp_path)
    assert again.model_dump() == cfg.model_dump()


def test_cli_reports_bad_key_without_traceback(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "run.yaml"
    p.write_text("train:\n  lora:\n    rnak: 4\n")
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.lora.rnak: unknown key" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_shipped_presets_and_example_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "configs" / "presets").glob("*.yaml")) + sorted((root / "examples").glob("*/config.yaml"))
    assert len(files) >= 5
    methods = {load_config(f).train.method for f in files}
    assert methods >= {"lora", "qlora", "dora", "full"}
