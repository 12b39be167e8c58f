"""Logprobs, echo scoring, lists of prompts, token-id prompts and vLLM's tokenizer routes (issue 18).

Every number is checked against the served weights loaded apart (plain transformers / PEFT, fp32, one
unpadded forward); the shapes are OpenAI's (legacy completions logprobs, chat logprobs).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest
import torch

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import hash_key
from tunesmith.deploy.server.continuous_batching import SCORING_TOKENS_PER_FORWARD, GenRequest, prefill_groups
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

KEY = "tsk-logprobs"
ADAPTER = "support-tickets"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
PROMPTS = ["The printer on floor 3 is on fire \u2713", "Refund", "Customer says the invoice shows the wrong VAT number"]
MSGS = [{"role": "user", "content": "Summarise ticket 42: the printer is on fire."}]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("logprobs-adapter") / ADAPTER, seed=1, scale=2.0)


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter):
    cfg = ServeConfig(adapters={ADAPTER: str(adapter)}, api_key_hashes=[hash_key(KEY)], max_total_tokens=256,
                      batch_wait_ms=50, max_concurrent_per_key=16)
    state = build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as s:
        yield s


@pytest.fixture(scope="module")
def reference_models(tiny_model_dir, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()

    return {"base": load(), ADAPTER: PeftModel.from_pretrained(load(), str(adapter)).eval()}


def _request(server, path, body=None, *, key=KEY):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(server.url + path, data=data, method="POST" if data else "GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _complete(server, **body):
    status, payload = _request(server, COMPLETIONS, {"model": "base", "temperature": 0, **body})
    assert status == 200, payload
    return payload


def _greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def _log_softmax(model, ids: list[int]) -> torch.Tensor:
    """[len(ids), vocab]: row j is the distribution of the token after ids[j]."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def _forwards(server) -> tuple[float, float]:
    """(forward passes, rows summed over them) so far, from /metrics."""
    text = server.state.metrics.render().decode()
    values = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(("tunesmith_batch_size_count", "tunesmith_batch_size_sum"))}
    return values["tunesmith_batch_size_count"], values["tunesmith_batch_size_sum"]


# -- /v1/completions: echo + logprobs ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["base", ADAPTER])
def test_echo_logprobs_are_the_models_own_in_openai_format(server, reference_models, tokenizer, model):
    prompt = PROMPTS[0]  # ends with a character split over several byte-level tokens
    r = _complete(server, model=model, prompt=prompt, echo=True, logprobs=3, max_tokens=2)
    ids = tokenizer(prompt)["input_ids"]
    generated = _greedy(reference_models[model], ids, 2)
    lp = _log_softmax(reference_models[model], ids + generated)
    texts = server.state.token_texts
    choice = r["choices"][0]
    lps = choice["logprobs"]
    every = ids + generated
    assert lps["tokens"] == [texts.text_of(t) for t in every]
    assert any(t.startswith("bytes:\\x") for t in lps["tokens"]), "the test prompt should split a character"
    assert lps["token_logprobs"][0] is None and lps["top_logprobs"][0] is None  # nothing predicts the first token
    for j in range(1, len(every)):
        assert lps["token_logprobs"][j] == pytest.approx(lp[j - 1, every[j]].item(), abs=1e-4)
        top = lps["top_logprobs"][j]
        assert lps["tokens"][j] in top and top[lps["tokens"][j]] == lps["token_logprobs"][j]
        assert 3 <= len(top) <= 4  # the 3 most likely and the token itself
        assert max(top.values()) == pytest.approx(lp[j - 1].max().item(), abs=1e-4)
    text = choice["text"]
    assert text == prompt + tokenizer.decode(generated, skip_special_tokens=True)
    offsets = lps["text_offset"]
    assert len(offsets) == len(every) and offsets == sorted(offsets) and offsets[0] == 0
    for tok, off in zip(lps["tokens"], offsets, strict=True):
        if not tok.startswith("bytes:"):
            assert text[off:off + len(tok)] == tok
    assert offsets[len(ids)] == len(prompt)  # the completion starts where the prompt ends
    assert r["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 2, "total_tokens": len(ids) + 2}
    assert choice["finish_reason"] == "length"


def test_logprobs_without_echo_cover_the_completion_only(server, reference_models, tokenizer):
    prompt = PROMPTS[2]
    r = _complete(server, prompt=prompt, logprobs=0, max_tokens=3)
    ids = tokenizer(prompt)["input_ids"]
    generated = _greedy(reference_models["base"], ids, 3)
    lp = _log_softmax(reference_models["base"], ids + generated)
    lps = r["choices"][0]["logprobs"]
    assert len(lps["tokens"]) == 3 and lps["text_offset"][0] == 0
    for j, t in enumerate(generated):
        assert lps["token_logprobs"][j] == pytest.approx(lp[len(ids) + j - 1, t].item(), abs=1e-4)
        assert list(lps["top_logprobs"][j]) == [lps["tokens"][j]]  # logprobs 0: the token alone
    assert _complete(server, prompt=prompt, max_tokens=3)["choices"][0]["logprobs"] is None


def test_max_tokens_zero_scores_the_prompt_without_generating(server, tokenizer):
    """echo + max_tokens 0: the prompt's logprobs from one forward and nothing else; without logprobs, no forward."""
    ids = tokenizer(PROMPTS[2])["input_ids"]
    before = _forwards(server)
    r = _complete(server, prompt=PROMPTS[2], echo=True, logprobs=1, max_tokens=0)
    assert _forwards(server)[0] - before[0] == 1, "scoring a prompt took more than its one forward pass"
    choice = r["choices"][0]
    assert choice["text"] == PROMPTS[2] and len(choice["logprobs"]["tokens"]) == len(ids)
    assert r["usage"]["completion_tokens"] == 0 and choice["finish_reason"] == "length"
    longer = _complete(server, prompt=PROMPTS[2], echo=True, logprobs=1, max_tokens=1)["choices"][0]["logprobs"]
    assert choice["logprobs"]["token_logprobs"] == longer["token_logprobs"][:-1]
    before = _forwards(server)
    r = _complete(server, prompt=PROMPTS[2], echo=True, max_tokens=0)
    assert r["choices"][0]["text"] == PROMPTS[2] and r["choices"][0]["logprobs"] is None
    assert _forwards(server) == before, "an echo with nothing to score ran the model"


def test_end_token_is_in_the_logprobs_but_not_the_text(server, reference_models, tokenizer, monkeypatch):
    """lm-eval drops the last token of echo + max_tokens 1 as the generated one: when the model ends the
    sequence at once, that token (the end-of-sequence) must still be there."""
    ids = tokenizer(PROMPTS[1])["input_ids"]
    greedy = _greedy(reference_models["base"], ids, 1)[0]
    monkeypatch.setattr(server.state.engine, "eos_ids", {greedy})  # the model's next token now ends the sequence
    r = _complete(server, prompt=PROMPTS[1], echo=True, logprobs=1, max_tokens=1)
    choice = r["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == PROMPTS[1]
    assert choice["logprobs"]["tokens"][-1] == server.state.token_texts.text_of(greedy)
    assert len(choice["logprobs"]["tokens"]) == len(ids) + 1 and r["usage"]["completion_tokens"] == 0


# -- lists of prompts, token-id prompts -----------------------------------------------------------------


@pytest.mark.parametrize("echo_logprobs", [True, False], ids=["echo-logprobs", "generate"])
def test_list_and_token_id_prompts_answer_like_one_at_a_time(server, tokenizer, echo_logprobs):
    kw = {"model": ADAPTER, "max_tokens": 3, **({"echo": True, "logprobs": 2} if echo_logprobs else {})}
    solo = [_complete(server, prompt=p, **kw)["choices"][0] for p in PROMPTS]
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    before = _forwards(server)
    as_list = _complete(server, prompt=PROMPTS, **kw)
    count, rows = (a - b for a, b in zip(_forwards(server), before, strict=True))
    assert rows > count, "the prompts of one request were not batched"
    as_ids = _complete(server, prompt=ids, **kw)
    single_ids = [_complete(server, prompt=i, **kw)["choices"][0] for i in ids]
    assert as_list["usage"] == as_ids["usage"]
    assert as_list["usage"]["prompt_tokens"] == sum(len(i) for i in ids)
    for form in (as_list["choices"], as_ids["choices"], single_ids):
        assert [c["index"] for c in form] == [0, 1, 2] or form is single_ids
        for got, want in zip(form, solo, strict=True):
            assert got["text"] == want["text"] and got["finish_reason"] == want["finish_reason"]
            if echo_logprobs:
                assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
                assert got["logprobs"]["text_offset"] == want["logprobs"]["text_offset"]
                assert got["logprobs"]["token_logprobs"][1:] == pytest.approx(want["logprobs"]["token_logprobs"][1:],
                                                                              abs=1e-5)


def test_scoring_prefills_stay_within_the_token_budget():
    def row(n, new=1, score=True):
        return GenRequest([1] * n, "x", new, prompt_top_logprobs=0 if score else None)

    half = SCORING_TOKENS_PER_FORWARD // 2
    plain = [row(10, score=False), row(20, score=False)]
    scoring = [row(half), row(half), row(10), row(5)]
    only = [row(8, new=0), row(8, new=0)]
    groups = prefill_groups([*plain, *scoring, *only])
    assert groups == [(plain, False),  # plain rows: one forward, last-position logits only
                      (scoring[:2], True), (scoring[2:], True),  # 2 x half fill the budget; a third row would not fit
                      (only, True)]  # rows that generate nothing need no KV cache: never mixed with the others
    long, short = row(SCORING_TOKENS_PER_FORWARD * 2), row(1)
    assert prefill_groups([long, short]) == [([long], True), ([short], True)]  # a longer prompt runs alone


# -- /v1/chat/completions: logprobs ---------------------------------------------------------------------


def test_chat_logprobs_are_the_models_own_in_openai_format(server, reference_models, tokenizer):
    r = _request(server, CHAT, {"model": ADAPTER, "messages": MSGS, "max_tokens": 4, "temperature": 0,
                                "logprobs": True, "top_logprobs": 3})[1]
    prompt = list(tokenizer.apply_chat_template(MSGS, add_generation_prompt=True, return_dict=False))
    generated = _greedy(reference_models[ADAPTER], prompt, 4)
    lp = _log_softmax(reference_models[ADAPTER], prompt + generated)
    choice = r["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None and len(content) == r["usage"]["completion_tokens"] == 4
    for j, (entry, t) in enumerate(zip(content, generated, strict=True)):
        row = lp[len(prompt) + j - 1]
        assert entry["bytes"] == list(server.state.token_texts.bytes_of(t))
        assert entry["logprob"] == pytest.approx(row[t].item(), abs=1e-4)
        alts = entry["top_logprobs"]
        assert len(alts) == 3 and [a["logprob"] for a in alts] == sorted((a["logprob"] for a in alts), reverse=True)
        assert alts[0]["logprob"] == pytest.approx(row.max().item(), abs=1e-4)
        assert alts[0]["bytes"] == list(server.state.token_texts.bytes_of(int(row.argmax())))
    assert bytes(b for e in content for b in e["bytes"]).decode("utf-8", "replace") == choice["message"]["content"]
    plain = _request(server, CHAT, {"model": ADAPTER, "messages": MSGS, "max_tokens": 4, "temperature": 0,
                                    "logprobs": True})[1]["choices"][0]["logprobs"]["content"]
    assert [e["top_logprobs"] for e in plain] == [[]] * 4
    assert [e["logprob"] for e in plain] == [e["logprob"] for e in content]


def test_openai_client_reads_the_logprobs(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    c = client.completions.create(model="base", prompt=["Hello there", "Refund"], echo=True, logprobs=1, max_tokens=1,
                                  temperature=0)
    assert [ch.index for ch in c.choices] == [0, 1]
    assert c.choices[0].logprobs.token_logprobs[0] is None and c.choices[0].logprobs.text_offset[0] == 0
    chat = client.chat.completions.create(model="base", messages=MSGS, max_tokens=2, temperature=0, logprobs=True,
                                          top_logprobs=2)
    assert len(chat.choices[0].logprobs.content) == 2 and len(chat.choices[0].logprobs.content[0].top_logprobs) == 2


# -- what is still refused (beyond the limits in test_serve_hardening.py) ---------------------------------


@pytest.mark.parametrize(
    "path,extra,param,says",
    [
        (COMPLETIONS, {"logprobs": -1}, "logprobs", "greater than or equal to 0"),
        (COMPLETIONS, {"max_tokens": 0}, "max_tokens", "only allowed with echo"),
        (COMPLETIONS, {"logprobs": 1, "stream": True}, "logprobs", "stream"),
        (COMPLETIONS, {"prompt": ["a", "b"], "stream": True}, "prompt", "several prompts"),
        (COMPLETIONS, {"prompt": []}, "prompt", "list of token ids"),
        (COMPLETIONS, {"prompt": [[]]}, "prompt", "no empty list"),
        (COMPLETIONS, {"prompt": [1, "a"]}, "prompt", "list of token ids"),
        (COMPLETIONS, {"prompt": [1, -2]}, "prompt", "integers >= 0"),
        (COMPLETIONS, {"prompt": [True]}, "prompt", "list of token ids"),
        (COMPLETIONS, {"prompt": ["x"] * 257}, "prompt", "1 to 256 prompts"),
        (COMPLETIONS, {"prompt": [[1, 2], [10**9]]}, "prompt", "token id 1000000000 (prompt 1) is not in the vocab"),
        (CHAT, {"logprobs": True, "stream": True}, "logprobs", "stream"),
        (CHAT, {"logprobs": 1}, "logprobs", "boolean"),
    ],
)
def test_unsupported_values_are_400_naming_the_parameter(server, path, extra, param, says):
    body = {"model": "base", "max_tokens": 2, **({"messages": MSGS} if path == CHAT else {"prompt": "Once"}), **extra}
    status, payload = _request(server, path, body)
    assert status == 400, payload
    assert payload["error"]["param"] == param and says in payload["error"]["message"], payload


# -- vLLM's tokenizer routes ----------------------------------------------------------------------------


def test_tokenizer_routes_serve_the_model_tokenizer(server, tokenizer):
    status, info = _request(server, "/tokenizer_info")
    assert status == 200
    assert (info["eos_token"], info["bos_token"], info["pad_token"]) == (
        tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token)
    assert info["chat_template"] == tokenizer.chat_template and info["model_max_length"] == 256
    text = "Hello world \u2713"
    status, tok = _request(server, "/tokenize",
                           {"prompt": text, "add_special_tokens": False, "return_token_strs": True})
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert status == 200 and tok["tokens"] == ids and tok["count"] == len(ids) and tok["max_model_len"] == 256
    assert tok["token_strs"][:2] == ["Hello", " world"]
    assert _request(server, "/detokenize", {"tokens": ids}) == (200, {"prompt": text})
    status, err = _request(server, "/detokenize", {"tokens": [10**9]})
    assert status == 400 and err["error"]["param"] == "tokens"
    assert _request(server, "/tokenize", {"prompt": "x", "model": "nope"})[0] == 404
    for path, body in (("/tokenizer_info", None), ("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]})):
        assert _request(server, path, body, key=None)[0] == 401
