"""An OpenAI-compatible chat-completions endpoint as a model under evaluation (the "GPT-4o baseline").

* Requests are deterministic (temperature 0) and cached on disk by a hash of the URL and the
  request body, so a re-run costs nothing. Only successful responses are cached.
* 429, 5xx and connection errors are retried with exponential backoff (``Retry-After`` wins when
  larger); other 4xx fail at once (the policy lives in utils/openai_http.py, shared with `tunesmith data capture`).
* A request that still fails comes back as an :class:`Answer` with ``error`` set: the report lists
  it and it is left out of the scores, never scored as a wrong answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tunesmith.evaluate.config import EndpointConfig
from tunesmith.utils.io import write_json
from tunesmith.utils.openai_http import ChatEndpoint, api_key_from_env, request_key


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
        self.cache_dir = Path(cache_dir)
        self.max_tokens = cfg.max_tokens or max_tokens
        self.workers = workers
        self.api_key = api_key_from_env(cfg.api_key_env, f"endpoint '{cfg.name}'")
        self.endpoint = ChatEndpoint(cfg.base_url, self.api_key, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                                     backoff_s=cfg.backoff_s, sleep=sleep, name=f"endpoint {cfg.name}")
        self.url = self.endpoint.url

    def body(self, messages: list[dict]) -> dict:
        return {"model": self.cfg.model, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "temperature": 0, "max_tokens": self.max_tokens}

    def cache_path(self, body: dict) -> Path:
        h = request_key(self.url, body)
        return self.cache_dir / h[:2] / f"{h}.json"

    def complete(self, messages: list[dict]) -> Answer:
        body = self.body(messages)
        path = self.cache_path(body)
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                return Answer(stored["text"], cached=True, **_usage(stored.get("response")))
            except (ValueError, KeyError, AttributeError):
                path.unlink(missing_ok=True)
        reply = self.endpoint.post(body)
        if reply.payload is None:
            return Answer(None, reply.error, attempts=reply.attempts)
        try:
            text = reply.payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return Answer(None, f"malformed response: {str(reply.payload)[:200]}", attempts=reply.attempts)
        write_json(path, {"text": text, "model": self.cfg.model, "response": reply.payload})
        return Answer(text.strip(), attempts=reply.attempts, latency_s=reply.latency_s, **_usage(reply.payload))

    def complete_many(self, conversations: list[list[dict]], on_done: Callable[[int], None] | None = None) -> list[Answer]:
        def one(msgs: list[dict]) -> Answer:
            a = self.complete(msgs)
            if on_done:
                on_done(1)
            return a

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, conversations))
