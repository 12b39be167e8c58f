"""EleutherAI's lm-evaluation-harness against `tunesmith serve` (issue 18), offline, on local JSONL tasks.

Multiple-choice (loglikelihood) tasks over /v1/completions — lm-eval sends echo + logprobs, batches of prompts
(`batch_size=2`) as token-id lists, and counts tokens with the served tokenizer (/tokenizer_info, /tokenize) —
must hand lm-eval exactly the model's own summed continuation log-probabilities, for the base model and for an
adapter; generation tasks must give the model's greedy answers over /v1/completions and /v1/chat/completions.
"""

from __future__ import annotations

import json

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import hash_key
from tunesmith.deploy.server.runner import ServerThread, build_state
from tunesmith.models.config import ModelConfig

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

KEY = "tsk-lm-eval"
ADAPTER = "support-tickets"
MC_DOCS = [
    {"question": "The printer on floor 3 is on fire. Which team handles it?", "choices": ["facilities", "IT", "legal"],
     "answer": 0},
    {"question": "A customer cannot log in after a password reset. Category?",
     "choices": ["billing", "account access", "shipping", "other"], "answer": 1},
    {"question": "Refund requested for a double charge. Category?", "choices": ["billing", "account access"],
     "answer": 0},
    {"question": "Parcel arrived damaged. Category?", "choices": [" shipping", "billing", "other"], "answer": 0},
]
GEN_DOCS = [{"ticket": "My invoice shows the wrong VAT number.", "category": "billing"},
            {"ticket": "The app crashes when I upload a photo.", "category": "bug"},
            {"ticket": "Where is my order #4411?", "category": "shipping"}]
MAX_GEN_TOKS = 8
STOP = "\n\n"

MC_TASK = """task: ts_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root}/mc.jsonl
  cache_dir: {root}/datasets-cache
test_split: test
output_type: multiple_choice
doc_to_text: "Ticket: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
GEN_TASK = """task: ts_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root}/gen.jsonl
  cache_dir: {root}/datasets-cache
test_split: test
output_type: generate_until
doc_to_text: "Ticket: {{{{ticket}}}}\\nCategory:"
doc_to_target: "{{{{category}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def offline_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("OPENAI_API_KEY", KEY)  # lm-eval's local-completions sends it as the Bearer key
        yield


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("lm-eval-adapter") / ADAPTER, seed=1, scale=2.0)


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter, offline_env):
    cfg = ServeConfig(adapters={ADAPTER: str(adapter)}, api_key_hashes=[hash_key(KEY)], max_total_tokens=512,
                      batch_wait_ms=20)
    state = build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as s:
        yield s


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    """Two local tasks over JSONL files (lm-eval's `json` dataset builder): nothing comes from the hub."""
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    (root / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in MC_DOCS))
    (root / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in GEN_DOCS))
    (root / "ts_mc.yaml").write_text(MC_TASK.format(root=root))
    (root / "ts_gen.yaml").write_text(GEN_TASK.format(root=root, max_gen_toks=MAX_GEN_TOKS))
    return TaskManager(include_path=str(root), include_defaults=False)


@pytest.fixture(scope="module")
def reference_models(tiny_model_dir, adapter):
    """The served weights, loaded apart with plain transformers / PEFT in fp32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()

    return {"base": load(), ADAPTER: PeftModel.from_pretrained(load(), str(adapter)).eval()}


def evaluate(server, task_manager, model: str, task: str, *, chat: bool = False) -> dict:
    """Run lm-eval's API model on one task; its results with every sample logged."""
    if chat:
        args = {"base_url": server.url + "/v1/chat/completions", "model": model}
        kind = "local-chat-completions"
    else:  # tokenizer_backend "auto": lm-eval probes /tokenizer_info and /tokenize and uses them
        args = {"base_url": server.url + "/v1/completions", "model": model, "auth_token": KEY, "batch_size": 2,
                "max_length": 512}
        kind = "local-completions"
    return lm_eval.simple_evaluate(model=kind, model_args=args, tasks=[task], task_manager=task_manager,
                                   log_samples=True, apply_chat_template=chat)


def reference_loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """Summed log-probability of ``continuation`` after ``context`` from one fp32 forward, and whether greedy
    decoding would produce it. Tokens are split as lm-eval splits them (TemplateLM._encode_pair): trailing
    spaces move from the context to the continuation, the whole text is tokenised once."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    positions = range(start, len(whole))
    total = sum(logp[i - 1, whole[i]].item() for i in positions)
    greedy = all(int(logp[i - 1].argmax()) == whole[i] for i in positions)
    return total, greedy


def reference_generation(model, tokenizer, prompt_ids: list[int]) -> str:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=MAX_GEN_TOKS, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True)
    return text.split(STOP)[0]


def test_multiple_choice_loglikelihoods_are_the_models_own(server, task_manager, reference_models, tokenizer):
    """What lm-eval receives for every (context, choice) equals the model's own summed token log-probabilities
    (1e-4), for the base model and for an adapter; and the adapter's numbers are its own."""
    received = {}
    for model in ("base", ADAPTER):
        out = evaluate(server, task_manager, model, "ts_mc")
        assert "acc,none" in out["results"]["ts_mc"]
        samples = out["samples"]["ts_mc"]
        assert len(samples) == len(MC_DOCS)
        pairs = [(args, resp[0]) for s in samples for args, resp in zip(s["arguments"], s["resps"], strict=True)]
        assert len(pairs) == sum(len(d["choices"]) for d in MC_DOCS)
        for (context, continuation), (loglikelihood, is_greedy) in pairs:
            want, want_greedy = reference_loglikelihood(reference_models[model], tokenizer, context, continuation)
            assert loglikelihood == pytest.approx(want, abs=1e-4), (model, context, continuation)
            assert is_greedy == want_greedy
        received[model] = [ll for _, (ll, _) in pairs]
    assert max(abs(a - b) for a, b in zip(received["base"], received[ADAPTER], strict=True)) > 1e-2, \
        "the adapter's loglikelihoods are the base model's"


def test_generation_task_over_both_endpoints(server, task_manager, reference_models, tokenizer):
    """generate_until through local-completions (token-id prompts, batches of 2) and local-chat-completions
    (the served chat template) gives the model's greedy answers, cut at the task's stop sequence."""
    model = reference_models[ADAPTER]
    completions = evaluate(server, task_manager, ADAPTER, "ts_gen")["samples"]["ts_gen"]
    chat = evaluate(server, task_manager, ADAPTER, "ts_gen", chat=True)["samples"]["ts_gen"]
    assert len(completions) == len(chat) == len(GEN_DOCS)
    answers = []
    for s in completions:
        context = s["arguments"][0][0]
        want = reference_generation(model, tokenizer, tokenizer(context, add_special_tokens=False)["input_ids"])
        assert s["resps"][0][0] == want, context
        answers.append(want)
    for s in chat:
        messages = json.loads(s["arguments"][0][0][0])
        assert messages[-1]["role"] == "user" and messages[-1]["content"].startswith("Ticket:")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
        want = reference_generation(model, tokenizer, list(ids))
        assert s["resps"][0][0] == want, messages
        answers.append(want)
    assert any(answers), "every reference answer is empty: the comparison shows nothing"
