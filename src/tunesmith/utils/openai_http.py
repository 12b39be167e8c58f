"""Calls to an OpenAI-compatible ``/chat/completions`` endpoint: the one home of the retry policy and of the request
key that caches answers, shared by evaluation's endpoint baseline (evaluate/endpoint.py) and `tunesmith data capture`
(data/capture.py).

* 429, 5xx and connection errors / timeouts are retried with exponential backoff (``Retry-After`` wins when
  larger); other 4xx fail at once (retrying a client error pays again for the same refusal).
* :class:`InFlightLimit`: attempts in flight at once, halved on a 429 and raised again after successes (AIMD), so
  a provider's per-key concurrency limit slows a capture down instead of failing it.
* :func:`request_key`: a hash of the URL and the request body, so equal requests are recognised across runs.

Standard library only (urllib): no HTTP client dependency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


def request_key(url: str, body: dict[str, Any]) -> str:
    """sha256 of the URL and the request body (keys sorted): the cache key of one request."""
    return hashlib.sha256(json.dumps({"url": url, "body": body}, sort_keys=True).encode()).hexdigest()


def api_key_from_env(env: str | None, who: str) -> str | None:
    """The API key in ``$env`` (None when ``env`` is None: no Authorization header); a clear error when unset."""
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ConfigError(f"{who} reads its API key from ${env}, which is not set",
                          hint=f"export {env}=... (or set api_key_env: null for an endpoint without a key)")
    return key


@dataclass
class Reply:
    """One request's outcome after retries: the response body (status 200), or an error."""

    payload: dict[str, Any] | None
    error: str | None = None
    attempts: int = 0
    latency_s: float | None = None  # the successful attempt's wall time
    throttled: int = 0  # attempts answered 429 (too many requests): the caller may be asking too much at once


class InFlightLimit:
    """How many attempts may be in flight at once (shared by the threads asking one endpoint): halved (down to 1)
    when the server answers 429, raised by one after as many successes in a row as the limit is, never above the
    ``ceiling`` asked for (additive increase, multiplicative decrease, as TCP's congestion control). Every attempt,
    a retry too, waits for a slot, so requests backing off do not crowd back in at the old rate."""

    def __init__(self, ceiling: int):
        self.ceiling = self.limit = self.lowest = max(1, ceiling)
        self.in_flight = 0
        self._clean = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def record(self, throttled: bool) -> None:
        with self._cond:
            if throttled:
                self.limit, self._clean = max(1, self.limit // 2), 0
                self.lowest = min(self.lowest, self.limit)
            else:
                self._clean += 1
                if self._clean >= self.limit and self.limit < self.ceiling:
                    self.limit, self._clean = self.limit + 1, 0
            self._cond.notify_all()


@dataclass
class ChatEndpoint:
    """POSTs chat-completion bodies to ``base_url``/chat/completions with the retry policy above."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    name: str = "endpoint"

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _post_once(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str, float | None]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, json.loads(resp.read().decode("utf-8")), None
        except urllib.error.HTTPError as e:
            retry_after = None
            ra = e.headers.get("Retry-After") if e.headers else None
            if ra:
                try:
                    retry_after = float(ra)
                except ValueError:
                    pass
            detail = e.read().decode("utf-8", "replace")[:300]
            return e.code, detail, retry_after

    def post(self, body: dict[str, Any], *, limit: InFlightLimit | None = None) -> Reply:
        """The response body of ``body``, retried on 429 / 5xx / connection errors and timeouts; with ``limit``, each
        attempt waits for one of its slots and tells it whether the server answered 429."""
        error, throttled = "no attempt", 0
        for attempt in range(self.max_retries + 1):
            with limit.slot() if limit is not None else nullcontext():
                t0 = time.perf_counter()
                try:
                    status, payload, retry_after = self._post_once(body)
                except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as e:
                    status, payload, retry_after = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}", None
                if limit is not None and status in (200, 429):
                    limit.record(status == 429)
            if status == 200 and isinstance(payload, dict):
                return Reply(payload, attempts=attempt + 1, latency_s=time.perf_counter() - t0, throttled=throttled)
            throttled += status == 429
            error = f"HTTP {status}: {payload}" if status else str(payload)
            if status is not None and status not in RETRYABLE:
                return Reply(None, error, attempts=attempt + 1, throttled=throttled)
            if attempt < self.max_retries:
                wait = min(MAX_BACKOFF_S, max(self.backoff_s * 2**attempt, retry_after or 0.0))
                log.info("%s: %s; retrying in %.1fs", self.name, error[:80], wait)
                self.sleep(wait)
        return Reply(None, f"{error} (after {self.max_retries + 1} attempts)", attempts=self.max_retries + 1,
                     throttled=throttled)
