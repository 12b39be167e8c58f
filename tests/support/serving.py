"""A ``tunesmith serve`` in a thread for the tool-calling and structured-output tests, and raw JSON posts."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig


@contextlib.contextmanager
def local_server(model_dir, **cfg) -> Iterator[tuple[ServerThread, openai.OpenAI]]:
    """A server of ``model_dir`` on 127.0.0.1 without auth, and an official client of it."""
    cfg = {"auth": False, "max_total_tokens": 2048, "max_concurrent_per_key": 64, **cfg}
    state = build_state(ServeConfig(**cfg), ModelConfig(name_or_path=str(model_dir), device="cpu"))
    with ServerThread(state) as server:
        yield server, openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def post_chat(server: ServerThread, body: dict) -> tuple[int, dict]:
    """POST ``body`` to /v1/chat/completions as it is: (status, JSON answer)."""
    req = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
