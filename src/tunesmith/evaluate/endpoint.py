"""An OpenAI-compatible chat-completions endpoint as a model under evaluation (the "GPT-4o baseline").

* Requests are deterministic (temperature 0) and cached on disk by a hash of the URL and the
  request body, so a re-run costs nothing. Only successful responses are cached.
* 429, 5xx and connection errors are retried with exponential backoff (``Retry-After`` wins when
  larger); other 4xx fail at once.
* A request that still fails comes back as an :class:`Answer` with ``error`` set: the report lists
  it and it is left out of the scores, never scored as a wrong answer.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.evaluate.config import EndpointConfig
from tunesmith.utils.io import write_json

log = logging.getLogger(__name__)
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


@dataclass
class Answer:
    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    latency_s: float | None = None  # the successful request's wall time (None for a cached answer)
    prompt_tokens: int | None = None  # as the endpoint reported them (``usage``), for the parity certificate's cost
    completion_tokens: int | None = None


def _usage(payload: dict) -> dict[str, int | None]:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return {k: usage.get(k) if isinstance(usage.get(k), int) else None for k in ("prompt_tokens", "completion_tokens")}


class EndpointClient:
    def __init__(self, cfg: EndpointConfig, *, cache_dir: Path, max_tokens: int, workers: int = 4,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.cache_dir = Path(cache_dir)
        self.max_tokens = cfg.max_tokens or max_tokens
        self.workers = workers
        self.sleep = sleep
        self.api_key = None
        if cfg.api_key_env:
            self.api_key = os.environ.get(cfg.api_key_env)
            if not self.api_key:
                raise ConfigError(
                    f"endpoint '{cfg.name}' reads its API key from ${cfg.api_key_env}, which is not set",
                    hint=f"export {cfg.api_key_env}=... (or set api_key_env: null for an endpoint without a key)",
                )

    def body(self, messages: list[dict]) -> dict:
        return {"model": self.cfg.model, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "temperature": 0, "max_tokens": self.max_tokens}

    def cache_path(self, body: dict) -> Path:
        h = hashlib.sha256(json.dumps({"url": self.url, "body": body}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / h[:2] / f"{h}.json"

    def _post(self, body: dict) -> tuple[int, dict | str, float | None]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
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

    def complete(self, messages: list[dict]) -> Answer:
        body = self.body(messages)
        path = self.cache_path(body)
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                return Answer(stored["text"], cached=True, **_usage(stored.get("response")))
            except (ValueError, KeyError, AttributeError):
                path.unlink(missing_ok=True)
        error = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            t0 = time.perf_counter()
            try:
                status, payload, retry_after = self._post(body)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                status, payload, retry_after = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}", None
            if status == 200 and isinstance(payload, dict):
                try:
                    text = payload["choices"][0]["message"]["content"] or ""
                except (KeyError, IndexError, TypeError):
                    return Answer(None, f"malformed response: {str(payload)[:200]}", attempts=attempt + 1)
                write_json(path, {"text": text, "model": self.cfg.model, "response": payload})
                return Answer(text.strip(), attempts=attempt + 1, latency_s=time.perf_counter() - t0,
                              **_usage(payload))
            error = f"HTTP {status}: {payload}" if status else str(payload)
            if status is not None and status not in RETRYABLE:
                return Answer(None, error, attempts=attempt + 1)
            if attempt < self.cfg.max_retries:
                wait = min(MAX_BACKOFF_S, max(self.cfg.backoff_s * 2**attempt, retry_after or 0.0))
                log.info("endpoint %s: %s; retrying in %.1fs", self.cfg.name, error[:80], wait)
                self.sleep(wait)
        return Answer(None, f"{error} (after {self.cfg.max_retries + 1} attempts)", attempts=self.cfg.max_retries + 1)

    def complete_many(self, conversations: list[list[dict]], on_done: Callable[[int], None] | None = None) -> list[Answer]:
        def one(msgs: list[dict]) -> Answer:
            a = self.complete(msgs)
            if on_done:
                on_done(1)
            return a

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, conversations))
