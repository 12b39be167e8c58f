"""An OpenAI-compatible chat-completions endpoint as a model under evaluation (the "GPT-4o baseline").

* Requests are deterministic (temperature 0) and cached on disk by a hash of the URL and the
  request body, so a re-run costs nothing. Only successful responses are cached.
* 429, 5xx and connection errors are retried with exponential backoff (``Retry-After`` wins when
  larger); other 4xx fail at once (the policy lives in utils/openai_http.py, shared with `tunesmith data capture`).
* A request that still fails comes back as an :class:`Answer` with ``error`` set: the report lists
  it and it is left out of the scores, never scored as a wrong answer.
* Tool calling: a conversation's declared functions are sent as ``tools`` (earlier calls and tool results
  as OpenAI messages), and the response's ``message.tool_calls`` are read back and written after its text
  in the ``<tool_call>`` format of :mod:`tunesmith.tool_calls`, so an API's calls are scored exactly as a
  local model's. A call whose ``arguments`` are not JSON stays a block that does not parse (not compliant).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tunesmith.evaluate.config import EndpointConfig
from tunesmith.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCall
from tunesmith.utils.io import write_json
from tunesmith.utils.openai_http import ChatEndpoint, api_key_from_env, request_key


@dataclass
class Answer:
    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    latency_s: float | None = None  # the successful request's wall time (a cached answer: as measured when it was made)
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

    def body(self, messages: list[dict], tools: list[dict] | None = None) -> dict:
        body = {"model": self.cfg.model, "messages": [_api_message(m) for m in messages],
                "temperature": 0, "max_tokens": self.max_tokens}
        if tools:
            body["tools"] = tools
        return body

    def cache_path(self, body: dict) -> Path:
        h = request_key(self.url, body)
        return self.cache_dir / h[:2] / f"{h}.json"

    def complete(self, messages: list[dict], tools: list[dict] | None = None) -> Answer:
        body = self.body(messages, tools)
        path = self.cache_path(body)
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                latency = stored.get("latency_s")  # measured when the request was made (older caches lack it)
                return Answer(stored["text"], cached=True, **_usage(stored.get("response")),
                              latency_s=float(latency) if isinstance(latency, int | float) else None)
            except (ValueError, KeyError, AttributeError):
                path.unlink(missing_ok=True)
        reply = self.endpoint.post(body)
        if reply.payload is None:
            return Answer(None, reply.error, attempts=reply.attempts)
        try:
            text = response_text(reply.payload["choices"][0]["message"])
        except (KeyError, IndexError, TypeError, AttributeError):
            return Answer(None, f"malformed response: {str(reply.payload)[:200]}", attempts=reply.attempts)
        write_json(path, {"text": text, "model": self.cfg.model, "response": reply.payload, "latency_s": reply.latency_s})
        return Answer(text.strip(), attempts=reply.attempts, latency_s=reply.latency_s, **_usage(reply.payload))

    def complete_many(self, conversations: list[list[dict]], on_done: Callable[[int], None] | None = None,
                      tools: list[list[dict] | None] | None = None) -> list[Answer]:
        """Every conversation (with its declared functions, ``tools[i]``, if given), in order."""
        def one(i: int) -> Answer:
            a = self.complete(conversations[i], tools[i] if tools else None)
            if on_done:
                on_done(1)
            return a

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, range(len(conversations))))


API_MESSAGE_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")


def _api_message(m: dict) -> dict:
    """A canonical message as the chat-completions API takes it (calls and tool results included)."""
    return {k: m[k] for k in API_MESSAGE_FIELDS if k in m and (k != "tool_calls" or m[k])}


def response_text(message: dict) -> str:
    """A response message as one text: its content, then each of its ``tool_calls`` as a ``<tool_call>`` block."""
    content = message.get("content") or ""
    blocks = []
    for call in message.get("tool_calls") or ():
        try:
            blocks.append(ToolCall.from_openai(call).block())
        except (ValueError, KeyError, TypeError):  # arguments that are not JSON: kept as they came, unparseable
            fn = call.get("function") or {}
            body = json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")}, ensure_ascii=False)
            blocks.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    return "\n".join([content.strip()] * bool(content.strip()) + blocks)
