"""Build a server from config, and run it with uvicorn (in the foreground, or in a thread for tests)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Self

import torch

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.app import create_app
from tunesmith.deploy.server.auth import ConcurrencyLimiter, KeyChecker, load_key_hashes
from tunesmith.deploy.server.continuous_batching import BatchEngine
from tunesmith.deploy.server.metrics import ServerMetrics
from tunesmith.deploy.server.registry import AdapterRegistry
from tunesmith.deploy.server.state import ServerState
from tunesmith.errors import ConfigError
from tunesmith.models.config import ModelConfig
from tunesmith.models.loading import load_model, load_tokenizer

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_state(cfg: ServeConfig, model_cfg: ModelConfig, *, base_dir: str | Path = ".", method: str = "lora",
                adapters: dict[str, Path] | None = None) -> ServerState:
    """Load the base model, the adapters (``cfg.adapters`` or ``adapters``) and the keys; start the batcher.

    For a qlora run the base is the de-quantised NF4 base the adapter was trained on (see deploy.merge).
    """

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (Path(base_dir) / path).resolve()

    digests = load_key_hashes(cfg.api_key_hashes, resolve(cfg.api_keys_file) if cfg.api_keys_file else None)
    if cfg.auth and not digests:
        raise ConfigError(
            "serve.auth is on but no API key is configured",
            hint="run `tunesmith serve --new-key`, put the digest in serve.api_key_hashes or serve.api_keys_file "
            "(or set serve.auth: false on 127.0.0.1 for local testing)",
        )
    if not cfg.auth and not _is_loopback(cfg.host):
        raise ConfigError(f"serve.auth: false is only allowed on a loopback host, not {cfg.host}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = load_tokenizer(model_cfg)
    if method == "qlora":
        from tunesmith.deploy.merge import load_base

        model = load_base(model_cfg, "qlora", torch.float32).eval()
    else:
        model = load_model(model_cfg).eval()
    registry = AdapterRegistry(
        model, base_name=cfg.base_name, adapter_dir=resolve(cfg.adapter_dir) if cfg.adapter_dir else None,
        max_adapters=cfg.max_adapters,
    )
    for name, path in (adapters if adapters is not None else cfg.adapters).items():
        registry.add(name, resolve(str(path)))
    metrics = ServerMetrics()
    engine = BatchEngine(registry, tokenizer, max_batch_size=cfg.max_batch_size, batch_wait_ms=cfg.batch_wait_ms,
                         max_queue=cfg.max_queue, observe_batch=metrics.batch_size.observe)
    engine.start()
    return ServerState(cfg=cfg, registry=registry, tokenizer=tokenizer, engine=engine,
                       keys=KeyChecker(digests) if cfg.auth else None,
                       limiter=ConcurrencyLimiter(cfg.max_concurrent_per_key), metrics=metrics)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``state`` on 127.0.0.1 in a background thread (tests, benchmarks)."""

    def __init__(self, state: ServerState, port: int | None = None):
        import uvicorn

        self.state = state
        self.port = port or free_port()
        config = uvicorn.Config(create_app(state), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.state.engine.stop()


def run_server(state: ServerState) -> None:
    import uvicorn

    cfg = state.cfg
    try:
        uvicorn.run(create_app(state), host=cfg.host, port=cfg.port, log_level="info", timeout_keep_alive=30)
    finally:
        state.engine.stop()
