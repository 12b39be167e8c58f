"""The endpoint baseline against a real OpenAI-compatible HTTP server on 127.0.0.1 (started here).

The server's behaviour is chosen by the request's model name:
  echo   - answers from a table (prompt -> answer), else "unknown"
  flaky  - the first request for each prompt gets 429 (Retry-After: 0), the next succeeds
  broken - always 500
  denied - always 401 (not retryable)
  judge  - an LLM judge: PASS when the graded answer says "unknown", else FAIL
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunesmith.errors import ConfigError
from tunesmith.evaluate.config import EndpointConfig
from tunesmith.evaluate.endpoint import EndpointClient


class FakeOpenAI:
    """A small OpenAI-compatible /v1/chat/completions server on a free loopback port."""

    def __init__(self, answers: dict[str, str] | None = None, fail_prompts: set[str] | None = None):
        self.answers = answers or {}
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
                text = outer.answers.get(prompt, "unknown")
                if model == "judge":
                    graded = prompt.split("[Assistant's answer]", 1)[-1]
                    text = "PASS" if "unknown" in graded.lower() else "FAIL"
                return self._send(200, {"id": "x", "object": "chat.completion", "model": model,
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    with FakeOpenAI({"What is 2+2?": "4"}) as s:
        yield s


def _client(server, model, tmp_path, **kw):
    cfg = EndpointConfig(name="api", base_url=server.base_url, model=model, api_key_env=None, backoff_s=0, **kw)
    return EndpointClient(cfg, cache_dir=tmp_path / "cache", max_tokens=16, sleep=lambda s: None)


def test_answers_are_cached_by_request_hash(server, tmp_path):
    c = _client(server, "echo", tmp_path)
    a = c.complete([{"role": "user", "content": "What is 2+2?"}])
    assert (a.text, a.error, a.cached, a.attempts) == ("4", None, False, 1)
    assert server.requests[0]["temperature"] == 0 and server.requests[0]["max_tokens"] == 16
    again = c.complete([{"role": "user", "content": "What is 2+2?"}])
    assert (again.text, again.cached) == ("4", True)
    assert len(server.requests) == 1  # the re-run cost nothing
    other = c.complete([{"role": "user", "content": "What is 3+3?"}])
    assert other.text == "unknown" and len(server.requests) == 2


def test_429_is_retried_then_succeeds(server, tmp_path):
    waits = []
    cfg = EndpointConfig(name="api", base_url=server.base_url, model="flaky", api_key_env=None, backoff_s=0.25)
    c = EndpointClient(cfg, cache_dir=tmp_path / "cache", max_tokens=16, sleep=waits.append)
    a = c.complete([{"role": "user", "content": "What is 2+2?"}])
    assert (a.text, a.error, a.attempts) == ("4", None, 2)
    assert len(server.requests) == 2 and waits == [0.25]  # backoff; Retry-After 0 is smaller


def test_500_is_reported_not_scored(server, tmp_path):
    c = _client(server, "broken", tmp_path, max_retries=2)
    a = c.complete([{"role": "user", "content": "What is 2+2?"}])
    assert a.text is None and "HTTP 500" in a.error and "after 3 attempts" in a.error
    assert len(server.requests) == 3
    assert not any((tmp_path / "cache").rglob("*.json"))  # failures are never cached


def test_401_is_not_retried_and_key_comes_from_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TS_TEST_KEY", "sk-test")
    cfg = EndpointConfig(name="api", base_url=server.base_url, model="denied", api_key_env="TS_TEST_KEY", backoff_s=0)
    a = EndpointClient(cfg, cache_dir=tmp_path / "c", max_tokens=8, sleep=lambda s: None).complete(
        [{"role": "user", "content": "hi"}])
    assert "HTTP 401" in a.error and a.attempts == 1
    assert server.requests[0]["auth"] == "Bearer sk-test"
    monkeypatch.delenv("TS_TEST_KEY")
    with pytest.raises(ConfigError, match=r"\$TS_TEST_KEY"):
        EndpointClient(cfg, cache_dir=tmp_path / "c", max_tokens=8)


def test_connection_refused_is_reported(tmp_path):
    with FakeOpenAI() as s:
        url = s.base_url
    cfg = EndpointConfig(name="api", base_url=url, model="echo", api_key_env=None, max_retries=1, backoff_s=0,
                         timeout_s=2)
    a = EndpointClient(cfg, cache_dir=tmp_path / "c", max_tokens=8, sleep=lambda s: None).complete(
        [{"role": "user", "content": "hi"}])
    assert a.text is None and a.error and a.attempts == 2


def test_complete_many_keeps_order(server, tmp_path):
    server.answers.update({f"q{i}": f"a{i}" for i in range(12)})
    c = _client(server, "flaky", tmp_path)
    got = c.complete_many([[{"role": "user", "content": f"q{i}"}] for i in range(12)])
    assert [a.text for a in got] == [f"a{i}" for i in range(12)]
    assert len(server.requests) == 24  # every prompt: one 429, one success
