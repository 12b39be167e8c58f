"""The prepared data is reused only while everything it was made from is unchanged: the data:
section, the input files, and the settings outside data: that shape it (seed, token limit and
truncation, the model whose tokenizer counts tokens)."""

from __future__ import annotations

import json

import pytest

import tunesmith.pipeline as pipeline
from tunesmith.config import load_config


@pytest.fixture
def prepared_run(tmp_path):
    rows = [{"instruction": "Classify.", "input": f"ticket {i} about billing", "output": "billing"} for i in range(30)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text("name: t\ndata:\n  train_file: t.jsonl\n  check_length: false\n")
    pipeline.run_data(load_config(tmp_path / "c.yaml"))
    return tmp_path / "c.yaml"


def _prepares_again(config, overrides, monkeypatch) -> bool:
    calls = []
    monkeypatch.setattr(pipeline, "run_data", lambda cfg: calls.append(cfg))
    pipeline._prepared(load_config(config, overrides))
    return bool(calls)


def test_unchanged_settings_reuse_the_prepared_data(prepared_run, monkeypatch):
    assert not _prepares_again(prepared_run, [], monkeypatch)


@pytest.mark.parametrize("override", [
    "seed=8", "train.max_seq_length=256", "train.truncation=truncate", "model.name_or_path=some/other-model",
    "model.revision=v2", "data.test_fraction=0.2",
])
def test_a_changed_setting_prepares_the_data_again(prepared_run, monkeypatch, override):
    assert _prepares_again(prepared_run, [override], monkeypatch)
