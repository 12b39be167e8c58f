"""The strictly checked ``adapter_config.json`` of a PEFT adapter, for everything that reads one (the server,
``export merge``, ``serve --engine vllm``): malformed content is an :class:`AdapterFileError` naming the adapter,
never a crash and never a server path."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import TunesmithError

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's order of preference


class AdapterFileError(TunesmithError):
    """An adapter folder that exists but cannot be used (malformed config, missing weights, a link)."""


@dataclass(frozen=True)
class AdapterMeta:
    rank: int  # the largest rank (r and every rank_pattern value)
    use_dora: bool
    base: str | None  # base_model_name_or_path as PEFT wrote it
    config: dict[str, Any] = field(default_factory=dict, compare=False)  # the whole parsed file


def _positive_int(value, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterFileError(f"adapter '{name}': {CONFIG_FILE} {what} must be a positive integer, not {value!r:.40}")
    return value


def parse_adapter_config(raw: bytes, name: str) -> AdapterMeta:
    """Rank and DoRA flag from the bytes of ``adapter_config.json``; any malformed content is an AdapterFileError."""
    where = f"adapter '{name}': {CONFIG_FILE}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AdapterFileError(f"{where} is not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{where} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(cfg, dict):
        raise AdapterFileError(f"{where} must hold a JSON object, not a JSON {type(cfg).__name__}")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterFileError(
            f"{where}: only LoRA-family adapters are supported (peft_type={cfg.get('peft_type')!r:.40})")
    rank_pattern = cfg.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict):
        raise AdapterFileError(f"{where} rank_pattern must be a JSON object")
    ranks = [_positive_int(cfg.get("r", 8), "r", name)]
    ranks += [_positive_int(v, f"rank_pattern[{k!r:.40}]", name) for k, v in rank_pattern.items()]
    use_dora = cfg.get("use_dora", False)
    if use_dora is not None and not isinstance(use_dora, bool):
        raise AdapterFileError(f"{where} use_dora must be true or false")
    base = cfg.get("base_model_name_or_path")
    return AdapterMeta(max(ranks), bool(use_dora), base if isinstance(base, str) else None, cfg)
