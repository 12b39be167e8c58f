"""Shared fixtures: the real SmolLM2 tokenizer (from the embedded package) and tiny random models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_model_dir():
    """Folder of the materialised embedded SmolLM2-135M-Instruct (created once per cache)."""
    from tunesmith.models.embedded import materialise

    return materialise()


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    """The real SmolLM2 tokenizer with its chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny random-weight Llama (2 layers, hidden 64) with the real tokenizer."""
    from tunesmith.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture
def tiny_model(tokenizer):
    from tunesmith.models.tiny import build_tiny_llama

    return build_tiny_llama(tokenizer)
