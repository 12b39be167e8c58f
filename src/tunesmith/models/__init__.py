"""Model loading: hub ids, local folders, and the embedded default (SmolLM2-135M-Instruct)."""

from tunesmith.models.config import EMBEDDED_DEFAULT, ModelConfig
from tunesmith.models.loading import load_model, load_tokenizer, resolve_device, resolve_dtype

__all__ = ["EMBEDDED_DEFAULT", "ModelConfig", "load_model", "load_tokenizer", "resolve_device", "resolve_dtype"]
