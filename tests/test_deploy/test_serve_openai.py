"""The server driven by the official openai client: chat, streaming, completions, models, adapters, keys."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import openai
import pytest
import torch

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import hash_key
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

KEY, OTHER_KEY = "tsk-test-key-1", "tsk-test-key-2"
MSGS = [{"role": "user", "content": "Summarise ticket 42: the printer is on fire."}]


def _adapter_for_other_base(tokenizer, base_dir, out):
    from tunesmith.models.tiny import save_tiny_llama

    return make_adapter(save_tiny_llama(base_dir, tokenizer, hidden_size=32, num_heads=2, num_kv_heads=1), out)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    allowed = root / "allowed"
    return {
        "support-tickets": make_adapter(tiny_model_dir, root / "support", seed=1, scale=2.0),
        "legal": make_adapter(tiny_model_dir, root / "legal", seed=2, scale=2.0),
        "late-dora": make_adapter(tiny_model_dir, allowed / "late-dora", seed=3, scale=2.0, method="dora"),
        "late-lora": make_adapter(tiny_model_dir, allowed / "late-lora", seed=4, scale=2.0),
        "outside": make_adapter(tiny_model_dir, root / "outside", seed=5, scale=2.0),
        "wrong-base": _adapter_for_other_base(tokenizer, root / "other-base", allowed / "wrong-base"),
        "allowed": allowed,
    }


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapters):
    cfg = ServeConfig(
        adapters={"support-tickets": str(adapters["support-tickets"]), "legal": str(adapters["legal"])},
        adapter_dir=str(adapters["allowed"]),
        api_key_hashes=[hash_key(KEY), hash_key(OTHER_KEY)],
        max_total_tokens=256,
        max_request_bytes=20_000,
        max_concurrent_per_key=64,
        batch_wait_ms=20,
    )
    state = build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def reference_answer(tiny_model_dir, tokenizer, adapter_dir, messages=MSGS, max_new_tokens=8) -> str:
    """Greedy answer of base (+ adapter) through plain transformers/PEFT generate, one request alone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def chat(client, model, messages=MSGS, **kw):
    kw = {"max_tokens": 8, "temperature": 0, **kw}
    return client.chat.completions.create(model=model, messages=messages, **kw)


def test_models_lists_base_and_adapters(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["base", "support-tickets", "legal"]


def test_each_adapter_gives_its_own_answer(client, tiny_model_dir, tokenizer, adapters):
    got = {name: chat(client, name).choices[0].message.content for name in ("base", "support-tickets", "legal")}
    want = {
        "base": reference_answer(tiny_model_dir, tokenizer, None),
        "support-tickets": reference_answer(tiny_model_dir, tokenizer, adapters["support-tickets"]),
        "legal": reference_answer(tiny_model_dir, tokenizer, adapters["legal"]),
    }
    assert got == want
    assert len(set(got.values())) == 3, f"adapters did not change answers: {got}"


def test_chat_response_shape_and_usage(client, tokenizer):
    r = chat(client, "support-tickets", seed=7)
    prompt_len = len(tokenizer.apply_chat_template(MSGS, add_generation_prompt=True, return_dict=False))
    assert r.object == "chat.completion" and r.model == "support-tickets"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == prompt_len
    assert r.usage.completion_tokens <= 8 and r.usage.total_tokens == prompt_len + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")


def test_streaming_matches_non_streaming(client):
    full = chat(client, "legal").choices[0].message.content
    chunks = list(chat(client, "legal", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full and finishes == ["length"] and len(chunks) >= 8
    assert chunks[-1].usage.completion_tokens == 8


def test_completions_and_stop(client):
    r = client.completions.create(model="base", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length"
    text = r.choices[0].text
    stop = text.strip()[:2]
    r2 = client.completions.create(model="base", prompt="Once upon a time", max_tokens=6, temperature=0, stop=[stop])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].text == text[: text.find(stop)]
    streamed = client.completions.create(model="base", prompt="Once upon a time", max_tokens=6, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text


def test_seeded_sampling_is_reproducible(client):
    a = [chat(client, "base", temperature=1.0, seed=s, max_tokens=8).choices[0].message.content for s in (1, 1, 2)]
    assert a[0] == a[1] and a[0] != a[2]


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="tsk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="base", messages=MSGS, max_tokens=2)
    req = urllib.request.Request(server.url + "/v1/models")
    with pytest.raises(urllib.error.HTTPError) as e2:
        urllib.request.urlopen(req)
    assert e2.value.code == 401


def test_runtime_adapters_only_from_the_allowed_folder(client, server, tiny_model_dir, tokenizer, adapters):
    # a DoRA adapter (PEFT cannot mix DoRA rows, so it runs as its own group) and a LoRA one, loaded on first use
    dora = chat(client, "late-dora").choices[0].message.content
    assert dora == reference_answer(tiny_model_dir, tokenizer, adapters["late-dora"])
    assert chat(client, "late-lora").choices[0].message.content == reference_answer(
        tiny_model_dir, tokenizer, adapters["late-lora"])
    (adapters["allowed"] / "sneaky").symlink_to(adapters["outside"], target_is_directory=True)
    for name in ("outside", "../outside", "..", "a/b", "/etc", "support-tickets/../legal", "x" * 200, "sneaky"):
        with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
            chat(client, name)
    assert "outside" not in server.state.registry.adapters
    with pytest.raises(openai.BadRequestError, match="cannot be loaded onto this base model"):
        chat(client, "wrong-base")  # an adapter trained on another base: 400, nothing half-loaded
    assert "wrong-base" not in server.state.registry.adapters
    assert chat(client, "late-lora").choices[0].message.content == reference_answer(
        tiny_model_dir, tokenizer, adapters["late-lora"])


def test_concurrent_mixed_adapters_are_batched_and_correct(client, server):
    """10 concurrent requests over base, 2 listed LoRA adapters, a run-time LoRA and a DoRA adapter give the
    same greedy answers as when sent alone, while forward passes carry several rows at once."""
    names = ["base", "support-tickets", "legal", "late-dora", "late-lora"] * 2
    solo = {n: chat(client, n, max_tokens=12).choices[0].message.content for n in set(names)}
    before = _batch_hist(server)
    results: dict[int, str] = {}

    def run(i, name):
        results[i] = chat(client, name, max_tokens=12 - i % 3 * 4).choices[0].message.content

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, n in enumerate(names):  # shorter budgets must be prefixes of the solo answer
        assert solo[n].startswith(results[i]) and len(results[i]) > 0, (n, results[i], solo[n])
    after = _batch_hist(server)
    passes = after["count"] - before["count"]
    single = after["le1"] - before["le1"]
    assert passes - single > 0, "no forward pass carried more than one row"
    assert after["sum"] - before["sum"] > passes, "rows per pass never exceeded one"


def _batch_hist(server) -> dict[str, float]:
    text = server.state.metrics.render().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tunesmith_batch_size_count"):
            out["count"] = float(line.split()[-1])
        elif line.startswith("tunesmith_batch_size_sum"):
            out["sum"] = float(line.split()[-1])
        elif line.startswith('tunesmith_batch_size_bucket{le="1.0"}'):
            out["le1"] = float(line.split()[-1])
    return out


def _post(server, path, body, key=KEY, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"model": "base", "messages": MSGS, "n": 2}, 400, None),
        ({"model": "base", "messages": []}, 400, None),
        ({"model": "base", "messages": MSGS, "temperature": 7}, 400, None),
        ({"model": "base", "messages": MSGS, "max_tokens": 10_000}, 400, "context_length_exceeded"),
        ({"model": "base", "messages": [{"role": "user", "content": "word " * 300}]}, 400, "context_length_exceeded"),
        ({"model": "base", "messages": MSGS, "response_format": {"type": "json_object"}}, 400, None),
        ({"model": "base", "messages": MSGS, "response_format": {"type": "xml"}}, 400, None),
        ({"model": "nope", "messages": MSGS}, 404, "model_not_found"),
        ({"model": "base", "prompt": []}, 400, None),  # a list of prompts is fine (issue 18), an empty one is not
    ],
)
def test_bad_requests_get_openai_errors(server, body, status, code):
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    got, payload = _post(server, path, body)
    assert got == status, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["message"]
    if code:
        assert payload["error"]["code"] == code


def test_json_object_with_json_in_prompt_is_accepted(client):
    r = chat(client, "base", messages=[{"role": "user", "content": "Answer in JSON."}],
             response_format={"type": "json_object"})
    assert r.choices[0].message.content is not None


def test_malformed_and_oversized_bodies(server):
    assert _post(server, "/v1/chat/completions", None, raw=b"{not json")[0] == 400
    status, payload = _post(server, "/v1/chat/completions", {"model": "base", "messages": [
        {"role": "user", "content": "x" * 30_000}]})
    assert status == 413 and payload["error"]["code"] == "request_too_large"
    status, _ = _post(server, "/v1/chat/completions", {"model": "base", "messages": MSGS, "max_tokens": 2})
    assert status == 200  # the server still works afterwards


def test_health_and_metrics(server):
    auth = {"Authorization": f"Bearer {KEY}"}  # without a key, /health says only "ok" and /metrics is 401
    with urllib.request.urlopen(urllib.request.Request(server.url + "/health", headers=auth)) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and "support-tickets" in health["models"]
    with urllib.request.urlopen(urllib.request.Request(server.url + "/metrics", headers=auth)) as r:
        text = r.read().decode()
    assert 'tunesmith_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "tunesmith_completion_tokens_total" in text


@pytest.mark.parametrize("temperature,top_p", [(1e-300, 1.0), (1.0, 1e-300), (2.0, 1e-6), (1e-4, 0.5), (2.0, 1.0)])
def test_sampling_extremes_never_fail(temperature, top_p):
    """Found by the fuzz run: tiny temperature / top_p overflowed to inf / rounded to 0 in fp32."""
    from tunesmith.deploy.server.continuous_batching import BatchEngine, GenRequest

    logits = torch.randn(2, 100) * 30
    reqs = [GenRequest([1], "x", 1, temperature=temperature, top_p=top_p, seed=s) for s in (0, 1)]
    out = BatchEngine._sample(logits, reqs, [torch.Generator().manual_seed(s) for s in (0, 1)])
    assert all(0 <= t < 100 for t in out)
    if temperature < 1e-3 or top_p < 1e-3:
        assert out == logits.argmax(-1).tolist()


@pytest.mark.slow
def test_real_embedded_model_answers_through_the_server(embedded_model_dir):
    """The one test on the real SmolLM2-135M-Instruct: its chat template and EOS handling give a real answer."""
    cfg = ServeConfig(api_key_hashes=[hash_key(KEY)], max_total_tokens=512)
    state = build_state(cfg, ModelConfig(name_or_path=str(embedded_model_dir), device="cpu"))
    with ServerThread(state) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
        r = c.chat.completions.create(model="base", max_tokens=24, temperature=0,
                                      messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.choices[0].message.content
    assert "<|im_end|>" not in r.choices[0].message.content
