"""Build the model to train for each method: full, lora, dora, qlora (4-bit NF4 base + LoRA)."""

from __future__ import annotations

import torch

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError
from tunesmith.models.loading import load_model, resolve_device, resolve_dtype
from tunesmith.models.quantization import bnb_nf4_config


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    lc = cfg.train.lora
    extra = {}
    if cfg.model.add_special_tokens:
        from tunesmith.models.loading import added_token_ids, load_tokenizer

        # only the new tokens' embedding rows train (and save with the adapter), not the whole matrix
        extra["trainable_token_indices"] = added_token_ids(cfg.model, load_tokenizer(cfg.model))
    return LoraConfig(
        **extra,
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=lc.target_modules,
        bias=lc.bias,
        use_dora=cfg.train.method == "dora",
        task_type="CAUSAL_LM",
    )


def bnb_4bit_config(compute_dtype: torch.dtype):
    """The QLoRA quantisation (models/quantization.py), with a config error when bitsandbytes is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "train.method qlora needs the bitsandbytes package", hint="pip install 'bitsandbytes>=0.50'"
        ) from None
    return bnb_nf4_config(compute_dtype)


def uses_deepspeed(cfg: RunConfig) -> bool:
    from tunesmith.train.parallel import launched_world_size

    return cfg.train.distributed == "deepspeed" and launched_world_size() > 1


def compute_dtypes(cfg: RunConfig, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(dtype the weights are loaded in, autocast dtype or None).

    Adapters train in fp32 on a base stored in the compute dtype. Full fine-tuning in bf16 keeps
    fp32 master weights and runs forward/backward under bf16 autocast (pure-bf16 AdamW loses small
    updates); under DeepSpeed its bf16 mode keeps the fp32 master copy instead.
    """
    dtype = resolve_dtype(cfg.model.dtype, device)
    if cfg.train.method == "full" and dtype != torch.float32 and not uses_deepspeed(cfg):
        return torch.float32, dtype
    return dtype, None


def build_trainable_model(cfg: RunConfig):
    """Load the base model and wrap it for the configured method. Returns (model, device)."""
    from tunesmith.train.parallel import local_device

    device = local_device(resolve_device(cfg.model.device))
    dtype, _ = compute_dtypes(cfg, device)
    method = cfg.train.method
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = load_model(
            cfg.model,
            device=device,
            dtype=dtype,
            quantization_config=bnb_4bit_config(dtype),
            device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"},
        )
        # Embeddings, LM head and norms stay in the compute dtype, as with lora and as the pre-flight estimate
        # counts them: peft's preparation upcasts them to fp32, which (with no autocast here) runs every
        # activation, attention and the LM head in fp32. Only fp16 needs that upcast (its norms overflow).
        if dtype == torch.float16:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = load_model(cfg.model, device=device, dtype=dtype)
    model.config.use_cache = False

    if cfg.train.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: checkpointed layers still need input grads

    torch.manual_seed(cfg.seed)  # adapter initialisation is part of the run's seed
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, device
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(cfg))
    return model, device


def count_parameters(model) -> tuple[int, int]:
    from tunesmith.train.telemetry import parameter_count

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    return trainable, total
