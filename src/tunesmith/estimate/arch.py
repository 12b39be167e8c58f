"""Model shapes for estimates: a catalogue of well-known architectures, a local config.json, or a
transformers config object.

    Architecture.resolve("llama-3.1-8b")            # catalogue name (see data/architectures.json)
    Architecture.resolve("path/to/model-folder")     # reads its config.json
    Architecture.resolve("embedded:smollm2-135m-instruct")
    Architecture.from_transformers_config(model.config)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError, catalog_entry

ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
# train.lora.target_modules' default (here, below the training config, so the estimator shares it): LoRA on every
# linear layer but the LM head. "LoRA Without Regret" (Thinking Machines 2025) and the QLoRA paper find
# attention-only LoRA short of full fine-tuning; measured here (docs/forgetting.md): one epoch of the demo, best
# validation loss 0.121 on q/k/v/o -> 0.069; with the forgetting guard on, q/k/v/o could not hold general perplexity
# and the task together, while all linear layers with kl_weight 2 gave +4.9% at the unguarded 160/160 tickets.
DEFAULT_LORA_TARGETS = "all-linear"
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama-style decoder (attention + gated MLP, RMSNorm): all an estimate needs."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    attention_bias: bool = False
    hf_id: str | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------ shapes
    @property
    def dim_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.dim_head

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.dim_head

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder block."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    # ------------------------------------------------------------------ parameter counts
    @property
    def linear_params_per_layer(self) -> int:
        n = sum(a * b for a, b in self.linear_shapes().values())
        if self.attention_bias:
            n += self.q_dim + 2 * self.kv_dim
        return n

    @property
    def layer_params(self) -> int:
        return self.linear_params_per_layer + 2 * self.hidden_size  # + two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        return self.num_layers * self.layer_params + self.embedding_params + self.lm_head_params + self.hidden_size

    @property
    def quantisable_params(self) -> int:
        """Weights bitsandbytes turns into 4-bit: every decoder linear (not embeddings, LM head, norms)."""
        return self.num_layers * sum(a * b for a, b in self.linear_shapes().values())

    def lora_targets(self, targets: list[str] | str) -> list[str]:
        if targets == "all-linear":
            return list(self.linear_shapes())
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise TunesmithError(
                f"LoRA target module(s) {', '.join(unknown)} are not linear layers of {self.name}",
                hint=f"use some of {', '.join(shapes)} or 'all-linear'",
            )
        return list(targets)

    def lora_params(self, r: int, targets: list[str] | str) -> int:
        """LoRA A (r x in) and B (out x r) for each target module in every layer."""
        shapes = self.linear_shapes()
        return self.num_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in self.lora_targets(targets))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_config_dict(cls, d: dict[str, Any], *, name: str | None = None, source: str | None = None) -> Architecture:
        """From a transformers ``config.json`` dict (Llama, Mistral, Qwen2, SmolLM, Gemma-style keys)."""
        if "text_config" in d and "hidden_size" not in d:
            d = {**d["text_config"], "tie_word_embeddings": d.get("tie_word_embeddings", d["text_config"].get("tie_word_embeddings"))}

        def get(*keys: str, default: Any = None) -> Any:
            for k in keys:
                if d.get(k) is not None:
                    return d[k]
            return default

        hidden = get("hidden_size", "n_embd", "d_model")
        layers = get("num_hidden_layers", "n_layer", "num_layers")
        heads = get("num_attention_heads", "n_head")
        inter = get("intermediate_size", "ffn_dim", "n_inner")
        vocab = get("vocab_size")
        missing = [k for k, v in {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                                  "intermediate_size": inter, "vocab_size": vocab}.items() if v is None]
        if missing:
            raise TunesmithError(
                f"model config {source or name or ''} lacks {', '.join(missing)}: cannot estimate its memory",
                hint="pass a catalogue architecture with --model (tunesmith advise --list-models) or a folder with a full config.json",
            )
        return cls(
            name=name or str(get("_name_or_path", "model_type", default="model")),
            num_layers=int(layers),
            hidden_size=int(hidden),
            num_heads=int(heads),
            num_kv_heads=int(get("num_key_value_heads", "num_kv_heads", default=heads)),
            intermediate_size=int(inter),
            vocab_size=int(vocab),
            tie_word_embeddings=bool(get("tie_word_embeddings", default=False)),
            head_dim=get("head_dim"),
            attention_bias=bool(get("attention_bias", default=d.get("model_type") == "qwen2")),
            source=source,
        )

    @classmethod
    def from_transformers_config(cls, config: Any, *, name: str | None = None) -> Architecture:
        """From a loaded ``PretrainedConfig`` (what the training pre-flight has in hand)."""
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        return cls.from_config_dict(d, name=name or getattr(config, "_name_or_path", None) or None, source="transformers config")

    @classmethod
    def from_folder(cls, folder: str | Path) -> Architecture:
        path = Path(folder)
        cfg = path / "config.json" if path.is_dir() else path
        if not cfg.is_file():
            raise TunesmithError(f"{path} has no config.json", hint="point --model at a model folder or a config.json file")
        try:
            d = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TunesmithError(f"{cfg} is not valid JSON: {e}") from None
        return cls.from_config_dict(d, name=path.name if path.is_dir() else path.parent.name, source=str(cfg))

    @classmethod
    def from_catalog(cls, name: str, catalog: dict[str, dict[str, Any]] | None = None) -> Architecture:
        catalog = catalog if catalog is not None else load_architecture_catalog()
        e = dict(catalog_entry(catalog, name, what="model architecture",
                               hint=f"known: {', '.join(catalog)}; or give a local model folder with a config.json"))
        return cls(
            name=name.lower(),
            num_layers=e["num_layers"],
            hidden_size=e["hidden_size"],
            num_heads=e["num_heads"],
            num_kv_heads=e.get("num_kv_heads", e["num_heads"]),
            intermediate_size=e["intermediate_size"],
            vocab_size=e["vocab_size"],
            tie_word_embeddings=e.get("tie_word_embeddings", False),
            head_dim=e.get("head_dim"),
            attention_bias=e.get("attention_bias", False),
            hf_id=e.get("hf_id"),
            source=e.get("source"),
        )

    @classmethod
    def resolve(cls, spec: str, catalog: dict[str, dict[str, Any]] | None = None) -> Architecture:
        """A catalogue name, a hub id that the catalogue knows, a local folder / config.json, or embedded:..."""
        from tunesmith.models.embedded import EMBEDDED_PREFIX

        catalog = catalog if catalog is not None else load_architecture_catalog()
        if spec.startswith(EMBEDDED_PREFIX):
            name = spec[len(EMBEDDED_PREFIX):]
            short = name.removesuffix("-instruct")
            if short in catalog:
                arch = cls.from_catalog(short, catalog)
                return replace(arch, hf_id=spec)
            from tunesmith.models.embedded import materialise

            return cls.from_folder(materialise(name))
        if spec.lower() in catalog:
            return cls.from_catalog(spec, catalog)
        by_hub = {e.get("hf_id", "").lower(): k for k, e in catalog.items()}
        if spec.lower() in by_hub:
            return cls.from_catalog(by_hub[spec.lower()], catalog)
        if Path(spec).expanduser().exists():
            return cls.from_folder(Path(spec).expanduser())
        return cls.from_catalog(spec, catalog)  # raises with a 'did you mean'


def _read_json_catalog(path: Path | None, package_file: str, key: str) -> dict[str, dict[str, Any]]:
    if path is None:
        text = resources.files("tunesmith.estimate").joinpath("data", package_file).read_text(encoding="utf-8")
        source = f"tunesmith/estimate/data/{package_file}"
    else:
        if not Path(path).is_file():
            raise TunesmithError(f"catalogue file {path} does not exist")
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TunesmithError(f"catalogue {source} is not valid JSON: {e}") from None
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise TunesmithError(f"catalogue {source} must be a JSON object with a '{key}' mapping")
    return {k.lower(): v for k, v in entries.items()}


@cache
def _builtin_architectures() -> dict[str, dict[str, Any]]:
    return _read_json_catalog(None, "architectures.json", "architectures")


def load_architecture_catalog(extra_file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The shipped catalogue, updated with the entries of ``extra_file`` (same JSON layout)."""
    catalog = dict(_builtin_architectures())
    if extra_file is not None:
        catalog.update(_read_json_catalog(Path(extra_file), "", "architectures"))
    return catalog
