"""Load a causal LM and its tokenizer from a hub id, a local folder or the embedded default."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tunesmith.errors import ModelError
from tunesmith.models.config import ModelConfig
from tunesmith.models.embedded import EMBEDDED_PREFIX, materialise

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA GPU is visible", hint="set model.device: cpu (or auto)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs with bf16 support, else fp32 (CPU bf16 has no fast units: ~16x slower here)."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_model_path(cfg: ModelConfig) -> str:
    """The folder or hub id transformers should load; materialises the embedded model when asked for."""
    name = cfg.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        return str(materialise(name[len(EMBEDDED_PREFIX) :], cache_dir=cfg.cache_dir))
    return name


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as e:
        raise ModelError(
            f"cannot load a tokenizer from '{cfg.name_or_path}': {e}",
            hint="check model.name_or_path (a local folder, a hub id with network access, or the embedded default)",
        ) from None
    if cfg.add_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(cfg.add_special_tokens)},
                                     replace_extra_special_tokens=False)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked by the attention mask and labels; the pad id itself never
        # decides what is masked, so reusing EOS here does not hide the real EOS from the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, *, device: torch.device | None = None, dtype: torch.dtype | None = None, **kwargs):
    from transformers import AutoModelForCausalLM

    device = device or resolve_device(cfg.device)
    dtype = dtype or resolve_dtype(cfg.dtype, device)
    path = resolve_model_path(cfg)
    extra = {}
    if cfg.attn_implementation:
        extra["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            dtype=dtype,
            **extra,
            **kwargs,
        )
    except OSError as e:
        raise ModelError(
            f"cannot load a model from '{cfg.name_or_path}': {e}",
            hint="check model.name_or_path (a local folder, a hub id with network access, or the embedded default)",
        ) from None
    if cfg.add_special_tokens:
        # every stage loads the base the same way, so an adapter trained with new tokens fits it
        n = len(load_tokenizer(cfg))
        if model.get_input_embeddings().weight.shape[0] < n:
            model.resize_token_embeddings(n, mean_resizing=True)
    if "quantization_config" not in kwargs:
        model.to(device)
    return model


def added_token_ids(cfg: ModelConfig, tokenizer) -> list[int]:
    """Ids of the tokens ``model.add_special_tokens`` added (the embedding rows that must train)."""
    return [int(i) for i in tokenizer.convert_tokens_to_ids(list(cfg.add_special_tokens))]


def model_dir_or_id(cfg: ModelConfig) -> str:
    """What to write into adapter_config.json as the base model: the resolved folder or hub id."""
    path = resolve_model_path(cfg)
    return str(Path(path).resolve()) if Path(path).exists() else path
