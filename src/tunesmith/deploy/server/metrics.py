"""Prometheus metrics of one server (own registry, so several servers in one process do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunesmith_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("tunesmith_request_seconds", "Request latency", ["route"], registry=r,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.prompt_tokens = Counter("tunesmith_prompt_tokens_total", "Prompt tokens", ["model"], registry=r)
        self.completion_tokens = Counter("tunesmith_completion_tokens_total", "Generated tokens", ["model"],
                                         registry=r)
        self.batch_size = Histogram("tunesmith_batch_size", "Rows per forward pass (prefill or decode step)", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue_depth = Gauge("tunesmith_queue_depth", "Requests waiting for the model", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
