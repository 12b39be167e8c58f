"""The endpoint baseline against a real OpenAI-compatible HTTP server on 127.0.0.1 (support.fake_openai.FakeOpenAI)."""

from __future__ import annotations

import pytest

from tunesmith.errors import ConfigError
from tunesmith.evaluate.config import EndpointConfig
from tunesmith.evaluate.endpoint import EndpointClient

from support.fake_openai import FakeOpenAI


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
    assert a.latency_s is not None and again.latency_s == a.latency_s  # the latency measured when it was asked
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
