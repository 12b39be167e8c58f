"""Chat rendering in one place: serving, generation, counting and training see the same ids."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from tunesmith.chat_template import (
    ChatTemplateError,
    count_record_tokens,
    record_token_ids,
    render_conversation,
    render_conversations,
    render_prompt_ids,
    render_prompt_ids_batch,
)
from tunesmith.data.length import TokenCounter
from tunesmith.train.tokenize import tokenize_record

CONVERSATIONS = [
    [{"role": "user", "content": "Summarise ticket 42: the printer is on fire."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Classify: refund please"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Café, naïve, 日本語 and emoji 🚀 — and a literal <|im_end|> in text."}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  leading and trailing spaces  \n"}],
]


def _previous_server_ids(tokenizer, messages):
    """What deploy/server/app.py computed before rendering moved to tunesmith.chat_template."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)


@pytest.fixture(scope="module")
def bos_tokenizer(embedded_model_dir):
    """SmolLM2's tokenizer made to add a BOS token, like Llama's, to plain text."""
    tok = AutoTokenizer.from_pretrained(embedded_model_dir, add_bos_token=True)
    assert tok("x")["input_ids"][0] == tok.bos_token_id != tok("x", add_special_tokens=False)["input_ids"][0]
    return tok


@pytest.fixture(scope="module")
def bos_template_tokenizer(embedded_model_dir):
    """A BOS-adding tokenizer whose chat template writes the BOS itself (as Llama 3's does)."""
    tok = AutoTokenizer.from_pretrained(embedded_model_dir, add_bos_token=True)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{{ '### ' + m['role'] + '\n' + m['content'] "
                         "+ eos_token + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '### assistant\n' }}{% endif %}")
    return tok


@pytest.fixture(scope="module")
def no_template_tokenizer(embedded_model_dir):
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = None
    return tok


@pytest.mark.parametrize("which", ["tokenizer", "bos_template_tokenizer"])
def test_prompt_ids_equal_the_servers_previous_call(which, request):
    tok = request.getfixturevalue(which)
    for msgs in CONVERSATIONS:
        assert render_prompt_ids(tok, msgs) == _previous_server_ids(tok, msgs)
    assert render_prompt_ids_batch(tok, CONVERSATIONS) == [_previous_server_ids(tok, m) for m in CONVERSATIONS]


def test_a_template_that_writes_bos_gets_exactly_one(bos_template_tokenizer):
    ids = render_prompt_ids(bos_template_tokenizer, CONVERSATIONS[0])
    assert ids[0] == bos_template_tokenizer.bos_token_id and ids.count(bos_template_tokenizer.bos_token_id) == 1


def test_batched_rendering_equals_one_at_a_time(tokenizer):
    convs = [c + [{"role": "assistant", "content": "ok", "weight": 0}] for c in CONVERSATIONS]
    assert render_conversations(tokenizer, convs) == [render_conversation(tokenizer, c) for c in convs]
    assert render_conversations(tokenizer, []) == []
    records = [{"id": "t", "text": "plain text"}] + [{"id": str(i), "messages": c} for i, c in enumerate(convs)]
    assert count_record_tokens(tokenizer, records) == [count_record_tokens(tokenizer, [r])[0] for r in records]


def test_chat_record_ids_are_the_templates_tokenized_ids(tokenizer):
    msgs = CONVERSATIONS[2]
    (ids,) = record_token_ids(tokenizer, [{"id": "c", "messages": [dict(m, weight=1) for m in msgs]}])
    assert ids == list(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False))


def test_no_chat_template_is_a_clear_error_everywhere(no_template_tokenizer):
    rec = {"id": "c", "messages": CONVERSATIONS[1] + [{"role": "assistant", "content": "billing"}]}
    for call in (lambda: render_prompt_ids(no_template_tokenizer, CONVERSATIONS[0]),
                 lambda: tokenize_record(no_template_tokenizer, rec),
                 lambda: TokenCounter(no_template_tokenizer, 64).count([rec])):
        with pytest.raises(ChatTemplateError, match="has no chat template") as err:
            call()
        assert "chat/instruct model" in str(err.value)
    # text records need no template
    assert count_record_tokens(no_template_tokenizer, [{"id": "t", "text": "hello"}]) == [2]


def test_a_conversation_the_template_refuses_is_a_clear_error(bos_template_tokenizer):
    tok = AutoTokenizer.from_pretrained(bos_template_tokenizer.name_or_path)
    tok.chat_template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}x"
    with pytest.raises(ChatTemplateError, match="cannot render this conversation: must start with user"):
        render_prompt_ids(tok, [{"role": "assistant", "content": "hi"}])


def test_advise_falls_back_to_plain_text_without_a_chat_template(tmp_path, no_template_tokenizer):
    from tunesmith.advise.dataset import measure_dataset

    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]}
            for i in range(4)]
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = measure_dataset(p, tokenizer=no_template_tokenizer)
    want = len(no_template_tokenizer("question 0\nanswer", add_special_tokens=False)["input_ids"])
    assert facts.token_max == want


def test_module_imports_without_torch():
    code = "import sys, tunesmith.chat_template; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
