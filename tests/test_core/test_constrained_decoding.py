"""Constrained decoding (xgrammar): outputs always follow the JSON Schema / JSON / regex / choice, per row.

The model is a tiny Llama with large random weights: it prefers arbitrary tokens, which is the adversarial
case for a grammar (a trained model mostly proposes tokens that already fit).
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from tunesmith.constrained_decoding import (
    ConstraintError, GrammarCompiler, GrammarLogitsProcessor, OutputConstraint, accept_tokens, mask_logits,
    model_vocab_size,
)
from tunesmith.evaluate.generate import generate_greedy, generate_token_ids, render_prompts, stop_token_ids

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["bug", "feature", "question"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {"type": "object", "properties": {
            "team": {"enum": ["web", "api", "data"]},
            "active": {"type": "boolean"},
            "reviewers": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 8}, "level": {"enum": [1, 2, 3]}},
                "required": ["name", "level"]}, "maxItems": 2},
        }, "required": ["team", "active", "reviewers"]},
    },
    "required": ["title", "kind", "priority", "tags", "owner"],
}
REGEX = (r"Urgency: (?P<urgency>Critical|High|Medium|Low)\nCategory: (?P<category>Billing|Technical|Account)\n"
         r"Score: [0-9]{1,2}")
# prefixes of each other, quotes, backslashes, non-ASCII, spaces: the options' text must be taken literally
CHOICES = ["High", "Highest", 'say "yes"', "back\\slash", "café au lait", "n/a"]


@pytest.fixture(scope="module")
def wild_model(tokenizer):
    """Random weights scaled up: confident, arbitrary next-token choices that depend on the prompt."""
    from tunesmith.models.tiny import build_tiny_llama

    model = build_tiny_llama(tokenizer, seed=3).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def compiler(tokenizer, wild_model):
    return GrammarCompiler(tokenizer, vocab_size=model_vocab_size(wild_model),
                           stop_token_ids=stop_token_ids(tokenizer, wild_model))


def _prompts(tokenizer, n: int) -> list[list[int]]:
    words = ["printer", "invoice", "login", "parcel", "refund", "crash", "password", "🙂", "déjà vu", "{", '"', "42"]
    convs = [[{"role": "user", "content": " ".join(words[(i * k) % len(words)] for k in range(1 + i % 6)) + f" #{i}"}]
             for i in range(n)]
    return render_prompts(tokenizer, convs)


def _bias(model, token_ids: list[int], amount: float):
    """Push these tokens' logits up (amount > 0) or down; returns the hook handle (``.remove()`` it)."""
    def hook(_module, _inputs, out):
        out = out.clone()
        out[..., token_ids] += amount
        return out

    return model.lm_head.register_forward_hook(hook)


def _eos_bias(model, amount: float):
    """A model that always (amount > 0) or never wants to stop."""
    eos = model.generation_config.eos_token_id
    return _bias(model, eos if isinstance(eos, list) else [eos], amount)


def test_json_schema_outputs_always_validate(tokenizer, wild_model, compiler):
    prompts = _prompts(tokenizer, 32)
    grammar = compiler.compile(OutputConstraint.json_schema(SCHEMA))
    outs = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=160, batch_size=16,
                           constraints=[grammar] * len(prompts))
    for out in outs:
        jsonschema.validate(json.loads(out), SCHEMA)  # raises on the first invalid output
    assert len(set(outs)) >= 16  # the model really chose: varied values, not one canned answer
    # the same model free: not JSON (so the outputs above are the grammar's doing)
    free = generate_greedy(wild_model, tokenizer, prompts[:8], max_new_tokens=40, batch_size=8)
    assert not any(_parses(o) for o in free)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def test_plain_json_outputs_parse(tokenizer, wild_model, compiler):
    """Free JSON has no bound on strings or nesting, so the model here likes closing strings (a quote bias) to end
    within the budget. Every row that ended parses; a row cut by the budget is the only way to get anything else."""
    prompts = _prompts(tokenizer, 24)
    quotes = [t for t in range(len(tokenizer)) if tokenizer.decode([t]).strip() and
              set(tokenizer.decode([t]).strip()) <= {'"'}]
    hook = _bias(wild_model, quotes, 5.0)
    try:
        any_value, objects = (generate_token_ids(
            wild_model, tokenizer, prompts, max_new_tokens=96, batch_size=12,
            constraints=[compiler.compile(OutputConstraint.json(object_only=o))] * len(prompts)) for o in (False, True))
    finally:
        hook.remove()
    values = [json.loads(tokenizer.decode(i)) for i in any_value]  # every row ended and parses
    assert len({json.dumps(v) for v in values}) >= 6
    ended = [json.loads(tokenizer.decode(i)) for i in objects if len(i) < 96]
    assert len(ended) >= 20 and all(isinstance(v, dict) for v in ended) and any(ended)


def test_regex_outputs_fullmatch(tokenizer, wild_model, compiler):
    prompts = _prompts(tokenizer, 48)
    grammar = compiler.compile(OutputConstraint.regex(REGEX))  # Python's named groups are accepted
    outs = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=32, batch_size=16,
                           constraints=[grammar] * len(prompts))
    for out in outs:
        assert re.fullmatch(REGEX, out), out
    assert len(set(outs)) >= 6


def test_choice_outputs_are_options(tokenizer, wild_model, compiler):
    prompts = _prompts(tokenizer, 48)
    grammar = compiler.compile(OutputConstraint.choice(CHOICES))
    outs = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=16, batch_size=16,
                           constraints=[grammar] * len(prompts))
    assert set(outs) <= set(CHOICES)
    assert len(set(outs)) >= 2


def test_end_token_only_where_the_grammar_may_end(tokenizer, wild_model, compiler):
    """A model that always wants to stop still completes the structure; one that never wants to stop is stopped."""
    prompts = _prompts(tokenizer, 8)
    grammar = compiler.compile(OutputConstraint.json_schema(SCHEMA))
    hook = _eos_bias(wild_model, 1e4)
    try:
        assert generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=8, batch_size=8) == [""] * 8
        outs = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=160, batch_size=8,
                               constraints=[grammar] * len(prompts))
    finally:
        hook.remove()
    for out in outs:
        jsonschema.validate(json.loads(out), SCHEMA)
    choice = compiler.compile(OutputConstraint.choice(["yes", "no"]))
    hook = _eos_bias(wild_model, -1e4)
    try:
        ids = generate_token_ids(wild_model, tokenizer, prompts, max_new_tokens=30, batch_size=8,
                                 constraints=[choice] * len(prompts))
    finally:
        hook.remove()
    assert all(tokenizer.decode(i) in ("yes", "no") and len(i) < 30 for i in ids)


def test_rows_are_independent_in_a_batch(tokenizer, wild_model, compiler):
    """Constrained and free rows share batches; a free row's output is what it is without any constraint."""
    prompts = _prompts(tokenizer, 6)
    schema, choice = compiler.compile(OutputConstraint.json_schema(SCHEMA)), compiler.compile(
        OutputConstraint.choice(CHOICES))
    constraints = [[schema, None, choice][i % 3] for i in range(len(prompts))]
    mixed = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=160, batch_size=6, constraints=constraints)
    free = generate_greedy(wild_model, tokenizer, prompts, max_new_tokens=160, batch_size=6)
    for i, (m, f) in enumerate(zip(mixed, free, strict=True)):
        if i % 3 == 0:
            jsonschema.validate(json.loads(m), SCHEMA)
        elif i % 3 == 1:
            assert m == f
        else:
            assert m in CHOICES


def test_padded_lm_head_ids_are_never_chosen(tokenizer, wild_model):
    """An LM head wider than the tokenizer (padding rows): those ids are masked even when they score highest."""
    from tunesmith.models.tiny import build_tiny_llama

    model = build_tiny_llama(tokenizer, seed=5).eval()
    n_tok = len(tokenizer)
    model.resize_token_embeddings(n_tok + 40)
    assert model_vocab_size(model) == n_tok + 40

    def hook(_m, _i, out):
        out = out.clone()
        out[..., n_tok:] += 1e4
        return out

    h = model.lm_head.register_forward_hook(hook)
    try:
        compiler = GrammarCompiler(tokenizer, vocab_size=model_vocab_size(model),
                                   stop_token_ids=stop_token_ids(tokenizer, model))
        grammar = compiler.compile(OutputConstraint.json_schema(SCHEMA))
        prompts = _prompts(tokenizer, 6)
        ids = generate_token_ids(model, tokenizer, prompts, max_new_tokens=160, batch_size=6,
                                 constraints=[grammar] * len(prompts))
    finally:
        h.remove()
    for row in ids:
        assert max(row) < n_tok
        jsonschema.validate(json.loads(tokenizer.decode(row)), SCHEMA)


def test_mask_logits_per_row(tokenizer, compiler):
    logits = torch.zeros(3, compiler.vocab_size)
    rows = [compiler.compile(OutputConstraint.choice(["yes"])).start(), None,
            compiler.compile(OutputConstraint.regex("[0-9]")).start()]
    mask_logits(logits, rows)
    allowed = [set(torch.nonzero(row > -1e30).flatten().tolist()) for row in logits]
    assert {tokenizer.decode([t]) for t in allowed[0]} <= {"y", "ye", "yes"} and allowed[0]
    assert len(allowed[1]) == compiler.vocab_size  # the free row is untouched
    assert {tokenizer.decode([t]) for t in allowed[2]} == set("0123456789")
    assert not set(compiler.stop_token_ids) & (allowed[0] | allowed[2])  # nothing complete yet: no end
    # after "yes" the only way on is an end token; once taken, the row is finished and left alone
    yes = tokenizer.encode("yes", add_special_tokens=False)
    for t in yes:
        rows[0].accept(t)
    logits = torch.zeros(1, compiler.vocab_size)
    mask_logits(logits, rows[:1])
    assert set(torch.nonzero(logits[0] > -1e30).flatten().tolist()) <= set(compiler.stop_token_ids)
    rows[0].accept(compiler.stop_token_ids[0])
    assert rows[0].finished
    with pytest.raises(RuntimeError, match="does not follow"):
        rows[2].accept(yes[0])


def test_logits_processor_for_model_generate(tokenizer, wild_model, compiler):
    grammar = compiler.compile(OutputConstraint.regex(r"[a-c]{3}"))
    prompt = torch.tensor([_prompts(tokenizer, 1)[0]])
    out = wild_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                              do_sample=False, logits_processor=[GrammarLogitsProcessor([grammar.start()])],
                              eos_token_id=stop_token_ids(tokenizer, wild_model), pad_token_id=tokenizer.pad_token_id)
    new = out[0, prompt.shape[1]:].tolist()
    assert re.fullmatch("[a-c]{3}", tokenizer.decode(new, skip_special_tokens=True))
    assert new[-1] in compiler.stop_token_ids


def test_constraints_are_equal_by_value_and_keep_schema_order():
    a = OutputConstraint.json_schema({"type": "object", "properties": {"z": {"type": "string"},
                                                                         "a": {"type": "integer"}}})
    b = OutputConstraint.json_schema(json.dumps({"type": "object", "properties": {"z": {"type": "string"},
                                                                                   "a": {"type": "integer"}}}))
    assert a == b and hash(a) == hash(b)
    assert a.spec.index('"z"') < a.spec.index('"a"')  # declared property order is the generation order
    assert OutputConstraint.choice(["x", "y", "x"]) == OutputConstraint.choice(["x", "y"])
    assert OutputConstraint.regex("(?P<u>a|b)c").spec == "(a|b)c"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: OutputConstraint.json_schema({"type": "objekt"}), "not a valid JSON Schema"),
    (lambda: OutputConstraint.json_schema("{not json"), "not valid JSON"),
    (lambda: OutputConstraint.json_schema([1, 2]), "must be an object"),
    (lambda: OutputConstraint.regex("a(b"), "not a valid regular expression"),
    (lambda: OutputConstraint.regex(""), "empty"),
    (lambda: OutputConstraint.choice([]), "at least one option"),
    (lambda: OutputConstraint.choice(["a", ""]), "non-empty"),
])
def test_invalid_constraints_are_clear_errors(make, message):
    with pytest.raises(ConstraintError, match=message):
        make()


def test_what_xgrammar_cannot_compile_is_a_clear_error(compiler):
    with pytest.raises(ConstraintError, match=r"cannot compile the regex constraint: .*[Ww]ord boundary"):
        compiler.compile(OutputConstraint.regex(r"\bword\b"))


def test_stop_tokens_must_be_the_generators(tokenizer, wild_model):
    other = GrammarCompiler(tokenizer, vocab_size=model_vocab_size(wild_model), stop_token_ids=[7])
    grammar = other.compile(OutputConstraint.json())
    with pytest.raises(ValueError, match="stop tokens"):
        generate_greedy(wild_model, tokenizer, _prompts(tokenizer, 2), max_new_tokens=4, constraints=[grammar, None])


def test_logits_of_another_width_are_refused(compiler):
    row = compiler.compile(OutputConstraint.json()).start()
    with pytest.raises(ValueError, match="compiled for"):
        mask_logits(torch.zeros(1, compiler.vocab_size + 64), [row])


def test_accept_tokens_advances_a_batch_and_refuses_what_the_grammar_does_not_allow(tokenizer, compiler):
    digit, letter = (tokenizer.encode(c, add_special_tokens=False)[0] for c in ("7", "x"))
    rows = [compiler.compile(OutputConstraint.regex("[0-9]")).start(), None,
            compiler.compile(OutputConstraint.choice(["x"])).start()]
    accept_tokens(rows, [digit, 12345, letter])  # the free row's token is not looked at
    accept_tokens(rows, [compiler.stop_token_ids[0], 0, compiler.stop_token_ids[0]])
    assert rows[0].finished and rows[2].finished
    fresh = [compiler.compile(OutputConstraint.regex("[0-9]")).start()]
    with pytest.raises(RuntimeError, match="row 0 does not follow"):
        accept_tokens(fresh, [letter])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_masking_equals_xgrammars_kernel(tokenizer, compiler, dtype):
    """mask_logits applies masks on CPU with torch ops (faster than xgrammar's CPU kernel): same logits."""
    import xgrammar as xgr

    schema = compiler.compile(OutputConstraint.json_schema(SCHEMA))
    rows = [schema.start(), None, compiler.compile(OutputConstraint.regex("[a-z]+ [0-9]{2}")).start(), schema.start()]
    for t in tokenizer.encode('{"title": "abc', add_special_tokens=False):
        rows[0].accept(t)
    rows[2].accept(tokenizer.encode("x", add_special_tokens=False)[0])
    torch.manual_seed(0)
    logits = torch.randn(4, compiler.vocab_size).to(dtype)
    expected = logits.clone()
    bitmask = xgr.allocate_token_bitmask(4, compiler.vocab_size)
    for i in (0, 2, 3):
        rows[i].matcher.fill_next_token_bitmask(bitmask, i)
    bitmask[[0, 3]] &= schema.also_allowed
    xgr.apply_token_bitmask_inplace(expected, bitmask, indices=[0, 2, 3])
    got = mask_logits(logits.clone(), rows)
    assert torch.equal(got, expected)
    assert torch.equal(got[1], logits[1]) and not torch.equal(got[0], got[3])  # free row untouched, states differ
