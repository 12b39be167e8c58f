"""Per-key concurrency (429), timeouts (504, generation cancelled) and a worker that survives both."""

from __future__ import annotations

import time

import openai
import pytest

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import hash_key
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig

from support.adapters import one_torch_thread  # noqa: F401  (autouse fixture)

K1, K2 = "tsk-limits-1", "tsk-limits-2"
MSGS = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    cfg = ServeConfig(api_key_hashes=[hash_key(K1), hash_key(K2)], max_concurrent_per_key=1, request_timeout_s=1.0,
                      max_total_tokens=4096)
    state = build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as s:
        yield s


def _client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_per_key_concurrency_limit(server):
    c1, c2 = _client(server, K1), _client(server, K2)
    stream = c1.chat.completions.create(model="base", messages=MSGS, max_tokens=3000, temperature=0, stream=True)
    next(iter(stream))  # the first request is now in flight and holds K1's only slot
    with pytest.raises(openai.RateLimitError) as e:
        c1.chat.completions.create(model="base", messages=MSGS, max_tokens=2, temperature=0)
    assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
    ok = c2.chat.completions.create(model="base", messages=MSGS, max_tokens=2, temperature=0)  # other key: fine
    assert ok.usage.completion_tokens == 2
    stream.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the slot is released once the server sees the client gone
        try:
            r = c1.chat.completions.create(model="base", messages=MSGS, max_tokens=2, temperature=0)
            break
        except openai.RateLimitError:
            time.sleep(0.1)
    assert r.usage.completion_tokens == 2


def test_timeout_is_504_and_generation_is_cancelled(server):
    c = _client(server, K1)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="base", messages=MSGS, max_tokens=4000, temperature=0)
    assert e.value.status_code == 504 and e.value.body["code"] == "timeout"
    assert time.monotonic() - t0 < 5
    # the cancelled row stops decoding: a short request right after is answered promptly
    t1 = time.monotonic()
    r = c.chat.completions.create(model="base", messages=MSGS, max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2 and time.monotonic() - t1 < 3
