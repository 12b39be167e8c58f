"""The ``serve:`` section of the run config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tunesmith.schema import Section

ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ServeConfig(Section):
    """How `tunesmith serve` runs: adapters, keys, limits, batching."""

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8000, ge=0, le=65535)
    base_name: str = Field("base", pattern=ADAPTER_NAME_PATTERN, description="Model name of the plain base model.")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Model name -> adapter folder, loaded at start. Default: the run's adapter as <run name>.",
    )
    adapter_dir: str | None = Field(
        None,
        description="Folder whose sub-folders may be loaded at run time by naming them in a request's `model` "
        "(nothing outside it is ever read). Unset: no run-time loading.",
    )
    max_adapters: int = Field(16, gt=0, description="Most adapters held in memory at once.")
    api_keys_file: str | None = Field(
        None,
        description="File with one sha256 hex digest of an API key per line (`tunesmith serve --new-key` makes one).",
    )
    api_key_hashes: list[str] = Field(default_factory=list, description="sha256 hex digests of accepted API keys.")
    auth: bool = Field(True, description="Require an API key. Turning this off is only allowed on 127.0.0.1.")
    max_request_bytes: int = Field(1_000_000, gt=0, description="Larger request bodies get 413.")
    max_total_tokens: int = Field(2048, gt=8, description="Prompt + completion tokens per request.")
    default_max_tokens: int = Field(256, gt=0, description="Completion tokens when a request does not say.")
    max_concurrent_per_key: int = Field(8, gt=0, description="Requests in flight per API key; more get 429.")
    max_queue: int = Field(256, gt=0, description="Requests waiting for the model; more get 429.")
    request_timeout_s: float = Field(120.0, gt=0, description="A generation running longer is cancelled (504).")
    max_batch_size: int = Field(16, gt=0, description="Requests decoded together in one forward pass.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long the batcher waits to fill a batch.")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads (default: torch's choice). On a busy shared CPU, 1 thread was "
        "several times faster than 2 here (no spinning threads waiting on each other).",
    )
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers = this server (CPU/GPU); vllm = print/launch `vllm serve`."
    )

    @field_validator("adapters")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for name in v:
            if not re.match(ADAPTER_NAME_PATTERN, name):
                raise ValueError(f"adapter name '{name}' must match {ADAPTER_NAME_PATTERN}")
        return v

    @field_validator("api_key_hashes")
    @classmethod
    def _hashes(cls, v: list[str]) -> list[str]:
        import re

        for h in v:
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError("api_key_hashes entries must be sha256 hex digests (64 lowercase hex characters)")
        return v
