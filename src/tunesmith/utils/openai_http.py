"""Calls to an OpenAI-compatible ``/chat/completions`` endpoint: the one home of the retry policy and of the request
key that caches answers, shared by evaluation's endpoint baseline (evaluate/endpoint.py) and `tunesmith data capture`
(data/capture.py).

* 429, 5xx and connection errors / timeouts are retried with exponential backoff (``Retry-After`` wins when
  larger); other 4xx fail at once (retrying a client error pays again for the same refusal).
* :func:`request_key`: a hash of the URL and the request body, so equal requests are recognised across runs.

Standard library only (urllib): no HTTP client dependency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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

    def post(self, body: dict[str, Any]) -> Reply:
        """The response body of ``body``, retried on 429 / 5xx / connection errors and timeouts."""
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            try:
                status, payload, retry_after = self._post_once(body)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as e:
                status, payload, retry_after = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}", None
            if status == 200 and isinstance(payload, dict):
                return Reply(payload, attempts=attempt + 1, latency_s=time.perf_counter() - t0)
            error = f"HTTP {status}: {payload}" if status else str(payload)
            if status is not None and status not in RETRYABLE:
                return Reply(None, error, attempts=attempt + 1)
            if attempt < self.max_retries:
                wait = min(MAX_BACKOFF_S, max(self.backoff_s * 2**attempt, retry_after or 0.0))
                log.info("%s: %s; retrying in %.1fs", self.name, error[:80], wait)
                self.sleep(wait)
        return Reply(None, f"{error} (after {self.max_retries + 1} attempts)", attempts=self.max_retries + 1)
