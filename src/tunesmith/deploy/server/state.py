"""What one running server holds: config, model registry, tokenizer, engine, keys, limits, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import ConcurrencyLimiter, KeyChecker
from tunesmith.deploy.server.continuous_batching import BatchEngine
from tunesmith.deploy.server.metrics import ServerMetrics
from tunesmith.deploy.server.registry import AdapterRegistry


@dataclass
class ServerState:
    cfg: ServeConfig
    registry: AdapterRegistry
    tokenizer: object
    engine: BatchEngine
    keys: KeyChecker | None  # None: auth is off (loopback only)
    limiter: ConcurrencyLimiter
    metrics: ServerMetrics
