"""Model loading: the embedded GGUF default and its materialised safetensors cache."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.models import ModelConfig, embedded
from tunesmith.models.loading import load_model, load_tokenizer


def test_materialised_checkpoint_matches_gguf_logits(embedded_model_dir):
    from transformers import AutoModelForCausalLM

    gguf = embedded.find_gguf()
    _, gguf_model = embedded.load_from_gguf(gguf)
    cached = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    assert "quantization_config" not in json.loads((embedded_model_dir / "config.json").read_text())
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 2]])
    with torch.no_grad():
        a = gguf_model(input_ids=ids).logits
        b = cached(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_embedded_default_loads_through_model_config(embedded_model_dir):
    cfg = ModelConfig()  # embedded:smollm2-135m-instruct
    tok = load_tokenizer(cfg)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    model = load_model(cfg)
    assert model.config.num_hidden_layers == 30 and next(model.parameters()).dtype == torch.float32


def test_half_written_cache_is_never_used(tmp_path, monkeypatch, tokenizer):
    """A crash while writing leaves no folder that looks complete; the next call writes it whole."""
    from tunesmith.models.tiny import build_tiny_llama

    monkeypatch.setattr(embedded, "find_gguf", lambda name="": tmp_path / "fake.gguf")
    monkeypatch.setattr(embedded, "load_from_gguf", lambda path, dtype=None: (tokenizer, build_tiny_llama(tokenizer)))

    def killed(*a, **k):
        raise RuntimeError("killed mid-write")

    real_write_json = embedded.write_json
    monkeypatch.setattr(embedded, "write_json", killed)  # the marker is the last file written
    with pytest.raises(RuntimeError):
        embedded.materialise(cache_dir=tmp_path)
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == []  # the temp folder is gone, no target folder exists

    monkeypatch.setattr(embedded, "write_json", real_write_json)
    target = embedded.materialise(cache_dir=tmp_path)
    assert (target / embedded.COMPLETE_MARKER).is_file() and (target / "model.safetensors").is_file()
    assert embedded.materialise(cache_dir=tmp_path) == target  # cached: no second write


def test_corrupt_gguf_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    monkeypatch.setattr(embedded, "_sha256", lambda p: "0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        embedded.find_gguf()


def test_unknown_embedded_name_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="unknown embedded model"):
        load_tokenizer(ModelConfig(name_or_path="embedded:gpt-17"))
    with pytest.raises(ModelError, match="cannot load a tokenizer"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path / "nope")))


def test_trust_remote_code_is_off_by_default():
    assert ModelConfig().trust_remote_code is False
