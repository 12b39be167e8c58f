"""Merge a PEFT adapter (LoRA, DoRA or QLoRA) into its base model and save a standalone checkpoint.

A QLoRA adapter was trained against the NF4-quantised base, so the model it is "right" for is
``dequant(nf4(W)) + BA``, not ``W + BA``. We therefore load the base the way training saw it
(bitsandbytes 4-bit), de-quantise it to the chosen dtype and merge there: the merged model then
reproduces what was evaluated, instead of silently shifting every output by the quantisation error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.deploy.adapter_config import CONFIG_FILE, WEIGHT_FILES, parse_adapter_config
from tunesmith.deploy.model_card import write_model_card
from tunesmith.errors import ModelError, TunesmithError
from tunesmith.models.config import ModelConfig
from tunesmith.models.loading import DTYPES, load_model, load_tokenizer
from tunesmith.models.quantization import bnb_nf4_config  # the one training used
from tunesmith.utils.io import atomic_dir

log = logging.getLogger(__name__)

METHODS = ("lora", "dora", "qlora")


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    config: dict
    base: str | None
    rank: int
    use_dora: bool


def read_adapter(path: str | Path) -> AdapterInfo:
    """Read and check ``adapter_config.json`` of a PEFT adapter folder (the same strict check the server makes)."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise TunesmithError(
            f"{path} is not a PEFT adapter folder (no {CONFIG_FILE})",
            hint="point at <run_dir>/adapter, written by `tunesmith train` with a lora/dora/qlora method",
        )
    meta = parse_adapter_config(cfg_file.read_bytes(), str(path))
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise TunesmithError(f"{path} has no adapter weights (adapter_model.safetensors)")
    return AdapterInfo(path, meta.config, meta.base, meta.rank, meta.use_dora)


def load_base(base: ModelConfig, method: str, dtype: torch.dtype):
    """The base model in ``dtype`` exactly as the adapter saw it in training (de-quantised NF4 for qlora)."""
    if method != "qlora":
        return load_model(base, device=torch.device("cpu"), dtype=dtype)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(
            "merging a qlora adapter needs bitsandbytes (the base is re-quantised exactly as in training)",
            hint="pip install 'tunesmith[gpu]'",
        ) from None
    model = load_model(base, dtype=torch.float32, quantization_config=bnb_nf4_config(torch.float32))
    model = model.dequantize()
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.hf_quantizer = None
    return model.to(dtype)


def attach_adapter(model, adapter_dir: str | Path, adapter_name: str = "default"):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name, is_trainable=False)


def merge_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base: ModelConfig | None = None,
    method: str | None = None,
    dtype: str = "float32",
    run_dir: str | Path | None = None,
) -> Path:
    """Merge ``adapter_dir`` into its base and write safetensors, tokenizer, generation config and a model card."""
    info = read_adapter(adapter_dir)
    if base is None:
        if not info.base:
            raise TunesmithError(f"{adapter_dir}: adapter_config.json names no base model", hint="pass --base")
        base = ModelConfig(name_or_path=info.base)
    method = method or ("dora" if info.use_dora else "lora")
    if method not in METHODS:
        raise TunesmithError(f"cannot merge an adapter of method '{method}'", hint=f"one of {', '.join(METHODS)}")
    if dtype not in DTYPES:
        raise TunesmithError(f"unknown dtype '{dtype}'", hint=f"one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]

    model = load_base(base, method, torch.float32)  # merge in fp32, cast once at the end
    tokenizer = load_tokenizer(base)
    peft_model = attach_adapter(model, info.path)
    merged = peft_model.merge_and_unload(safe_merge=True)
    merged = merged.to(torch_dtype)
    merged.config.dtype = torch_dtype
    merged.config._name_or_path = str(out_dir)
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        merged.generation_config.save_pretrained(tmp)
        write_model_card(tmp, base=base.name_or_path, adapter=info, method=method, dtype=dtype, run_dir=run_dir)
    log.info("merged %s into %s -> %s", info.path, base.name_or_path, out)
    return out
