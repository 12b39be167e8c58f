"""Loss masks: only assistant answers and their end-of-turn token carry loss."""

from __future__ import annotations

from tunesmith.train.tokenize import IGNORE_INDEX, tokenize_record, tokenize_records


def _record(*turns, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for role, content, *w in turns:
        m = {"role": role, "content": content}
        if w:
            m["weight"] = w[0]
        msgs.append(m)
    return {"id": "t:1", "messages": msgs}


def _labelled_text(tok, ex):
    return tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX])


def test_prompt_tokens_masked_answer_and_eos_trained(tokenizer):
    rec = _record(("user", "Classify: printer on fire"), ("assistant", "Urgency: Critical"), system="Be brief.")
    ex = tokenize_record(tokenizer, rec)
    assert len(ex.input_ids) == len(ex.labels)
    trained = [i for i, l in enumerate(ex.labels) if l != IGNORE_INDEX]
    # the trained tokens are exactly the answer followed by the end-of-turn token (EOS for SmolLM2)
    assert _labelled_text(tokenizer, ex) == "Urgency: Critical" + tokenizer.eos_token
    assert ex.input_ids[trained[-1]] == tokenizer.eos_token_id
    # pad == eos for this tokenizer, and still the EOS after the answer carries loss
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    # every prompt token (system, user, template markup) is masked
    assert all(l == IGNORE_INDEX for l in ex.labels[: trained[0]])
    assert trained == list(range(trained[0], trained[-1] + 1))
    # labels equal inputs where trained
    assert all(ex.labels[i] == ex.input_ids[i] for i in trained)


def test_multi_turn_weight_zero_turn_not_trained(tokenizer):
    rec = _record(
        ("user", "hi"), ("assistant", "first answer", 0), ("user", "again"), ("assistant", "second answer")
    )
    ex = tokenize_record(tokenizer, rec)
    assert _labelled_text(tokenizer, ex) == "second answer" + tokenizer.eos_token
    rec["messages"][1]["weight"] = 1
    ex = tokenize_record(tokenizer, rec)
    assert _labelled_text(tokenizer, ex) == "first answer" + tokenizer.eos_token + "second answer" + tokenizer.eos_token


def test_full_sequence_loss_when_completion_only_is_off(tokenizer):
    rec = _record(("user", "q"), ("assistant", "a"))
    ex = tokenize_record(tokenizer, rec, completion_only=False)
    assert all(l == t for l, t in zip(ex.labels, ex.input_ids))


def test_overlong_examples_are_reported_not_silently_dropped(tokenizer):
    short = _record(("user", "q"), ("assistant", "a"))
    long = _record(("user", "word " * 300), ("assistant", "answer"))
    long["id"] = "t:2"
    kept, report = tokenize_records(tokenizer, [short, long], max_seq_length=64, truncation="reject")
    assert [e.id for e in kept] == ["t:1"]
    assert report.rejected[0]["id"] == "t:2" and "max_seq_length 64" in report.rejected[0]["reason"]
    # truncation that would cut away the whole answer is reported too
    kept, report = tokenize_records(tokenizer, [long], max_seq_length=64, truncation="truncate")
    assert kept == [] and "no trained tokens" in report.rejected[0]["reason"]


def _bos_tokenizer(embedded_model_dir):
    """SmolLM2's tokenizer made to add a BOS token to plain text, as Llama's does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir, add_bos_token=True)
    assert tok("x")["input_ids"] != tok("x", add_special_tokens=False)["input_ids"]
    return tok


def test_counted_length_is_the_length_training_feeds(tokenizer, embedded_model_dir):
    from tunesmith.data.length import TokenCounter

    text = {"id": "t:1", "text": "Printers catch fire when the fuser overheats."}
    chat = _record(("user", "Classify: printer on fire"), ("assistant", "Urgency: Critical", 1), system="Be brief.")
    for tok in (tokenizer, _bos_tokenizer(embedded_model_dir)):
        counted = TokenCounter(tok, 4096).count([text, chat])
        assert counted == [len(tokenize_record(tok, r).input_ids) for r in (text, chat)]


def test_a_truncated_text_record_fits_what_training_feeds(embedded_model_dir):
    from tunesmith.data.length import TokenCounter

    tok = _bos_tokenizer(embedded_model_dir)
    counter = TokenCounter(tok, 16, "truncate")
    rec = {"id": "t:1", "text": " ".join(f"word{i}" for i in range(40))}
    cut, n, _ = counter.truncate(rec, counter.count([rec])[0])
    assert n == len(tokenize_record(tok, cut).input_ids) <= 16


# ---- conversations with tools --------------------------------------------------------------------


def _masked_text(tok, ex):
    return tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l == IGNORE_INDEX])


def test_tool_conversation_in_the_fallback_format_trains_calls_and_answers_only(tokenizer):
    from support.tool_chat import PARIS, ZURICH, tool_record

    rec = tool_record()
    ex = tokenize_record(tokenizer, rec)
    eot = tokenizer.eos_token  # <|im_end|>
    calls = ('Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich \\"HB\\""}}\n</tool_call>')
    assert _labelled_text(tokenizer, ex) == calls + eot + "Paris 18°C, Zürich 12°C." + eot
    masked = _masked_text(tokenizer, ex)
    # the tool schema (system prompt), the question and the tool results carry no loss
    assert '"description": "Current weather of a city"' in masked and "<tools>" in masked
    assert "<tool_response>\n18°C sunny\n</tool_response>\n<tool_response>\n12°C rain\n</tool_response>" in masked
    assert "Weather in Paris and Zürich?" in masked
    # the calls trained are the record's calls
    from tunesmith.tool_calls import parse_tool_calls

    assert parse_tool_calls(calls) == ("Checking both.", [PARIS, ZURICH])


def test_tool_conversation_through_a_template_with_tool_support(embedded_model_dir):
    from support.tool_chat import tokenizer_with_tool_template, tool_record

    tok = tokenizer_with_tool_template(embedded_model_dir)
    ex = tokenize_record(tok, tool_record())
    # the turn the template writes (text and calls) up to and including its end-of-turn token
    calls = ('Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich \\"HB\\""}}\n</tool_call>')
    assert _labelled_text(tok, ex) == calls + "<|im_end|>" + "Paris 18°C, Zürich 12°C.<|im_end|>"
    masked = _masked_text(tok, ex)
    assert "Available functions:" in masked and "<|im_start|>tool\n18°C sunny<|im_end|>" in masked


def test_tool_turn_weight_and_an_example_that_ends_with_its_call(tokenizer):
    from support.tool_chat import tool_record

    rec = tool_record()
    rec["messages"][2]["weight"] = 0  # the calling turn is context only
    assert _labelled_text(tokenizer, tokenize_record(tokenizer, rec)) == "Paris 18°C, Zürich 12°C." + tokenizer.eos_token
    rec = tool_record()
    rec["messages"] = rec["messages"][:3]  # learn to call: the example ends with the calls
    rec["messages"][2]["content"] = ""
    labelled = _labelled_text(tokenizer, tokenize_record(tokenizer, rec))
    assert labelled.startswith("<tool_call>\n") and labelled.endswith("</tool_call>" + tokenizer.eos_token)
