"""The 4-bit quantisation QLoRA trains on, in one place: training loads the base with it, the merge
re-quantises the base with it (so the merged model is the one that was evaluated), and the memory
estimator counts its block constants. Importing this module loads no torch or transformers."""

from __future__ import annotations

from typing import Any

NF4_QUANT_TYPE = "nf4"
NF4_DOUBLE_QUANT = True  # the block constants are quantised too (estimate.memory counts them so)


def bnb_nf4_config(compute_dtype: Any):
    """transformers' BitsAndBytesConfig for the QLoRA base: NF4 weights, double quantisation,
    matmuls in ``compute_dtype`` (a ``torch.dtype``)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=NF4_QUANT_TYPE,
        bnb_4bit_use_double_quant=NF4_DOUBLE_QUANT,
        bnb_4bit_compute_dtype=compute_dtype,
    )
