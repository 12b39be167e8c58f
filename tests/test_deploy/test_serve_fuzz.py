"""Fuzz the server's OpenAPI schema with schemathesis: whatever arrives, no 5xx (and the server keeps working)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import hash_key
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig

KEY = "tsk-fuzz"


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir, tmp_path_factory):
    adapter = make_adapter(tiny_model_dir, tmp_path_factory.mktemp("fuzz") / "a", seed=1)
    cfg = ServeConfig(adapters={"a": str(adapter)}, api_key_hashes=[hash_key(KEY)], max_total_tokens=64,
                      default_max_tokens=4, max_request_bytes=50_000, request_timeout_s=30)
    state = build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def _operations(api_schema):
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in ops} >= {
        "POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "GET /health"}
    return ops


# schemathesis' pytest plugin (lazy fixtures) does not load under this pytest, so the test drives its
# hypothesis strategies directly: per operation, schema-valid and schema-violating cases, with and without a key.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(api_schema, fuzz_server, mode):
    from hypothesis import given
    from schemathesis.generation.modes import GenerationMode

    seen = {}
    for op in _operations(api_schema):
        if mode == "negative" and op.method.upper() == "GET":
            continue  # GET routes take no input to violate

        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None, phases=[Phase.explicit, Phase.generate])  # no shrinking: bounded time
        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        def run(case):
            for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
                response = case.call(base_url=fuzz_server.url, headers=headers, timeout=60)
                assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                if response.status_code >= 400:
                    assert "error" in response.json()
            if mode == "positive" and isinstance(case.body, dict) and "model" in case.body:
                case.body = {**case.body, "model": "a"}  # random names 404; also fuzz the generation path
                response = case.call(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
                assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
                seen[response.status_code] = seen.get(response.status_code, 0) + 1

        run()
    assert sum(seen.values()) >= 20 and any(s >= 400 for s in seen)
    if mode == "positive":
        assert seen.get(200, 0) >= 10, seen


def test_server_still_answers_after_fuzzing(fuzz_server):
    req = urllib.request.Request(
        fuzz_server.url + "/v1/chat/completions", method="POST",
        data=json.dumps({"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and json.loads(r.read())["usage"]["completion_tokens"] <= 3
