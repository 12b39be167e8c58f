"""FakeOpenAI: a fake OpenAI-compatible endpoint shared by the eval tests.

FakeOpenAI: a real OpenAI-compatible HTTP server on 127.0.0.1. Its behaviour is chosen by the
request's model name:
  echo   - answers from a table (prompt -> answer), else "unknown"
  flaky  - the first request for each prompt gets 429 (Retry-After: 0), the next succeeds
  broken - always 500
  denied - always 401 (not retryable)
  judge  - an LLM judge: PASS when the graded answer says "unknown", else FAIL
  tooler - with tools in the request: calls the first declared tool with {"q": <prompt>}
With ``max_in_flight=N`` (and ``answer_delay_s``), a request arriving while N are being answered gets 429 without
Retry-After, as a provider's per-key concurrency limit; ``throttled`` counts them. With ``hold_after=N``, requests after the N-th answered one are held (never answered) until the server stops:
a client killed then has answers in flight that it never received. ``answered`` counts the 200s per prompt.
Every answer reports its usage as words: prompt_tokens (of the last message) and completion_tokens.
A prompt in ``tool_calls`` (any model) is answered with those OpenAI ``tool_calls`` and null content.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """A small OpenAI-compatible /v1/chat/completions server on a free loopback port."""

    def __init__(self, answers: dict[str, str] | None = None, fail_prompts: set[str] | None = None,
                 hold_after: int | None = None, tool_calls: dict[str, list[dict]] | None = None,
                 max_in_flight: int | None = None, answer_delay_s: float = 0.0):
        self.answers = answers or {}
        self.max_in_flight, self.answer_delay_s = max_in_flight, answer_delay_s
        self.in_flight = self.throttled = 0
        self.tool_calls = tool_calls or {}  # prompt -> the tool_calls of the response message
        self.hold_after = hold_after
        self.answered: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.fail_prompts = fail_prompts or set()  # any model: 500 for these prompts
        self.requests: list[dict] = []
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, obj: dict, headers: dict | None = None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                prompt = body["messages"][-1]["content"]
                with outer.lock:
                    outer.requests.append({**body, "auth": self.headers.get("Authorization")})
                    first = prompt not in outer.seen
                    outer.seen.add(prompt)
                model = body["model"]
                if model == "broken" or prompt in outer.fail_prompts:
                    return self._send(500, {"error": {"message": "internal error"}})
                if model == "denied":
                    return self._send(401, {"error": {"message": "bad key"}})
                if model == "flaky" and first:
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                if outer.max_in_flight is not None:
                    with outer.lock:
                        busy = outer.in_flight >= outer.max_in_flight
                        outer.throttled += busy
                        outer.in_flight += not busy
                    if busy:
                        return self._send(429, {"error": {"message": "too many requests in flight for this key"}})
                    try:
                        threading.Event().wait(outer.answer_delay_s)
                        return self._answer(body, prompt, model)
                    finally:
                        with outer.lock:
                            outer.in_flight -= 1
                return self._answer(body, prompt, model)

            def _answer(self, body: dict, prompt: str, model: str):
                with outer.lock:
                    hold = outer.hold_after is not None and sum(outer.answered.values()) >= outer.hold_after
                    if not hold:
                        outer.answered[prompt] += 1
                if hold:
                    outer.stopping.wait()
                    return self._send(503, {"error": {"message": "held"}})
                text = outer.answers.get(prompt, "unknown")
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
                if model == "tooler" and body.get("tools"):
                    call = {"id": "call_1", "type": "function", "function": {
                        "name": body["tools"][0]["function"]["name"], "arguments": json.dumps({"q": prompt})}}
                    return self._send(200, {"id": "x", "object": "chat.completion", "model": model, "usage": usage,
                                            "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                         "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]})
                if model == "judge":
                    graded = prompt.split("[Assistant's answer]", 1)[-1]
                    text = "PASS" if "unknown" in graded.lower() else "FAIL"
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
                message = {"role": "assistant", "content": text}
                if prompt in outer.tool_calls:
                    message = {"role": "assistant", "content": None, "tool_calls": outer.tool_calls[prompt]}
                return self._send(200, {"id": "x", "object": "chat.completion", "model": model,
                                        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                                        "usage": usage})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
