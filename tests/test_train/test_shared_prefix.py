"""Shared-prefix training (train.shared_prefix): a label-free prefix common to a batch's rows is encoded once,
and the loss, the gradients and the trained weights are those of the normal path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from support.adapters import one_torch_thread  # noqa: F401
from support.train_runs import run_cli
from tunesmith.config import build_config
from tunesmith.errors import ConfigError
from tunesmith.train.batching import collate_packed, collate_padded
from tunesmith.train.loop import train_loop
from tunesmith.train.loss import CausalLMLoss, shared_prefix_split, summed_token_loss
from tunesmith.train.tokenize import IGNORE_INDEX, TokenizedExample

PREFIX = 40
SUFFIXES = (7, 19, 12)  # different lengths: the suffixes are right-padded


def _lora(model, seed=0):
    """``model`` with LoRA on every linear layer, B matrices random (B = 0 would leave A without gradient)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return peft_model


@pytest.fixture
def lora_model(tiny_model):
    return _lora(tiny_model)


def _tokens(g, n):
    return torch.randint(100, 40000, (n,), generator=g).tolist()


def _examples(seed=0, prefix=PREFIX, suffixes=SUFFIXES, general=False, untrained=2):
    """Rows opening with the same ``prefix`` tokens (no loss on them), each with its own suffix trained on from
    its ``untrained``-th token on."""
    g = torch.Generator().manual_seed(seed)
    shared = _tokens(g, prefix)
    out = []
    for i, n in enumerate(suffixes):
        suffix = _tokens(g, n)
        labels = [IGNORE_INDEX] * (prefix + untrained) + suffix[untrained:]
        out.append(TokenizedExample(shared + suffix, labels, id=f"r{i}", general=general))
    return out


def _padded(examples, tokenizer):
    return collate_padded(examples, tokenizer.pad_token_id)


def _assert_grads_close(grad, expected, name):
    """rtol 1e-4, with fp32 rounding noise allowed on the elements near zero (1e-5 of the tensor's largest)."""
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()),
                               msg=lambda m: f"{name}: {m}")


def _loss_and_grads(model, batch, shared_prefix, kl_weight=0.0):
    model.zero_grad(set_to_none=True)
    loss = summed_token_loss(model, batch, kl_weight, shared_prefix=shared_prefix)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def _assert_shared_equals_normal(model, batch, kl_weight=0.0):
    """Loss and gradients through the shared prefix are the normal path's."""
    shared, shared_grads = _loss_and_grads(model, batch, shared_prefix=True, kl_weight=kl_weight)
    normal, normal_grads = _loss_and_grads(model, batch, shared_prefix=False, kl_weight=kl_weight)
    torch.testing.assert_close(shared, normal, rtol=1e-5, atol=0)
    for name, grad in normal_grads.items():
        if grad is not None:
            _assert_grads_close(shared_grads[name], grad, name)


def test_a_batch_with_a_shared_masked_prefix_is_split_there(lora_model, tokenizer):
    """The tiny model attends through SDPA: its suffixes (7, 19, 12 tokens) are packed into rows of at most
    max(19, 40 // 2) = 20 tokens, first fit by decreasing length: [19] and [12, 7]."""
    split = shared_prefix_split(lora_model, _padded(_examples(), tokenizer))
    assert split is not None and split.conversations == 3
    # 40 shared tokens, and their next token (the suffix's first) carries no label either
    assert split.prefix_length == PREFIX
    assert split.input_ids.shape == (2, 19)
    assert split.position_ids[1].tolist() == list(range(PREFIX, PREFIX + 12)) + list(range(PREFIX, PREFIX + 7))
    mask = split.attention_mask
    assert mask.shape == (2, 1, 19, PREFIX + 19) and mask.dtype == torch.bool
    assert bool(mask[..., :PREFIX].all())  # every suffix token sees the whole prefix
    second = mask[1, 0, :, PREFIX:]
    assert torch.equal(second[:12, :12], torch.ones(12, 12, dtype=torch.bool).tril())  # causal within a suffix
    assert not second[12:, :12].any() and not second[:12, 12:].any()  # never into another suffix
    assert torch.equal(second[12:, 12:], torch.ones(7, 7, dtype=torch.bool).tril())


def test_without_packing_each_suffix_is_a_right_padded_row(tokenizer):
    from tunesmith.train.shared_prefix import split_shared_prefix

    split = split_shared_prefix(_padded(_examples(), tokenizer))
    assert split is not None and split.conversations == 3
    assert split.input_ids.shape == (3, max(SUFFIXES))
    assert split.attention_mask.sum(-1).tolist() == [PREFIX + n for n in SUFFIXES]
    assert split.position_ids[0].tolist() == list(range(PREFIX, PREFIX + max(SUFFIXES)))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_suffixes_match_padded_suffixes_under_either_attention(tokenizer, attention, monkeypatch):
    """The same loss and gradients with the suffixes packed (a 4-D mask: boolean for SDPA, additive for eager)
    as with one padded row each."""
    import tunesmith.train.loss as loss_module
    from tunesmith.models.tiny import build_tiny_llama

    model = _lora(build_tiny_llama(tokenizer))
    model.base_model.model.config._attn_implementation = attention
    batch = _padded(_examples(suffixes=(7, 19, 12, 5, 9)), tokenizer)
    assert shared_prefix_split(model, batch).input_ids.shape[0] < 5
    packed, packed_grads = _loss_and_grads(model, batch, shared_prefix=True)
    monkeypatch.setattr(loss_module, "suffixes_packable", lambda base: False)
    assert shared_prefix_split(model, batch).input_ids.shape[0] == 5
    padded, padded_grads = _loss_and_grads(model, batch, shared_prefix=True)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=0)
    for name, grad in padded_grads.items():
        if grad is not None:
            _assert_grads_close(packed_grads[name], grad, name)


def test_shared_prefix_loss_equals_the_per_row_loss(lora_model, tokenizer):
    examples = _examples()
    batch = _padded(examples, tokenizer)
    with torch.no_grad():
        shared = summed_token_loss(lora_model, batch, shared_prefix=True)
        normal = summed_token_loss(lora_model, batch, shared_prefix=False)
        per_row = sum(summed_token_loss(lora_model, _padded([ex], tokenizer)) for ex in examples)
    torch.testing.assert_close(shared, normal, rtol=1e-5, atol=0)
    torch.testing.assert_close(shared, per_row, rtol=1e-5, atol=0)


def test_the_prefix_stops_before_the_token_that_predicts_the_first_label(lora_model, tokenizer):
    """Labels from the suffix's first token on: the prefix's last position would predict it, so the prefix is
    one token shorter and that prediction is made in the suffix."""
    examples = _examples(untrained=0)
    batch = _padded(examples, tokenizer)
    assert shared_prefix_split(lora_model, batch).prefix_length == PREFIX - 1
    with torch.no_grad():
        shared = summed_token_loss(lora_model, batch, shared_prefix=True)
        per_row = sum(summed_token_loss(lora_model, _padded([ex], tokenizer)) for ex in examples)
    torch.testing.assert_close(shared, per_row, rtol=1e-5, atol=0)


def test_shared_prefix_gradients_equal_the_normal_paths(lora_model, tokenizer):
    batch = _padded(_examples(), tokenizer)
    _, normal = _loss_and_grads(lora_model, batch, shared_prefix=False)
    _, shared = _loss_and_grads(lora_model, batch, shared_prefix=True)
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for name, grad in shared.items():
        if name not in trainable:
            assert grad is None, f"frozen {name} got a gradient"
            continue
        assert grad is not None and grad.abs().sum() > 0, name
        _assert_grads_close(grad, normal[name], name)


def test_the_kl_guard_term_is_the_same_through_the_shared_prefix(lora_model, tokenizer):
    """General rows get KL(base || tuned): its base forward takes the shared prefix too."""
    examples = _examples()[:2] + _examples(general=True)[2:]  # the same prefix; the last row is general
    batch = _padded(examples, tokenizer)
    assert batch.general is not None and shared_prefix_split(lora_model, batch) is not None
    _assert_shared_equals_normal(lora_model, batch, kl_weight=0.5)


def test_task_rows_keep_the_shared_prefix_beside_a_general_row_that_lacks_it(lora_model, tokenizer):
    """A micro-batch of task rows sharing their prompt and a general row that opens otherwise (mixed-in general
    data lacks the task's system prompt and tools): the task rows still take the shared prefix, the general row
    the normal way with its KL term, and loss and gradients are the normal path's."""
    from tunesmith.train.loss import loss_parts, shared_prefix_spared_tokens

    task = _examples()
    general = _examples(seed=5, suffixes=(15,), general=True)  # its own 40-token opening
    batch = _padded(task + general, tokenizer)
    assert shared_prefix_split(lora_model, batch) is None  # the batch as a whole does not qualify
    parts = loss_parts(batch)
    assert [p.input_ids.shape[0] for p in parts] == [3, 1] and parts[0].general is None
    assert shared_prefix_spared_tokens(lora_model, batch) == PREFIX * (len(task) - 1)
    _assert_shared_equals_normal(lora_model, batch, kl_weight=0.5)


def _no_common_prefix(tokenizer):
    examples = _examples()
    first = examples[1]
    first.input_ids[0] += 1  # the rows differ from their first token on
    return _padded(examples, tokenizer)


def _labels_in_prefix(tokenizer):
    examples = _examples()
    examples[2].labels[10] = examples[2].input_ids[10]  # one row trains on a token of the shared prefix
    return _padded(examples, tokenizer)


def _packed_rows_of_different_prefixes(tokenizer):
    """Two rows of two conversations each: the rows' first conversations open with one prefix, the second
    ones with another."""
    a, b, _ = _examples()
    d, e, _ = _examples(seed=1)
    return collate_packed([[a, d], [b, e]], tokenizer.pad_token_id)


def _packed_first_label_across_conversations(tokenizer):
    """A packed conversation whose only label is its first token: the normal path predicts it from the
    conversation before it (collate_packed never does this; a batch built otherwise must not be split)."""
    a, b, c = _examples()
    batch = collate_packed([[a, b], [c]], tokenizer.pad_token_id)
    start = len(a.input_ids)
    batch.labels[0, start:] = IGNORE_INDEX
    batch.labels[0, start] = batch.input_ids[0, start]
    return batch


def _short_prefix(tokenizer):
    return _padded(_examples(prefix=20), tokenizer)


@pytest.mark.parametrize("make", [_no_common_prefix, _labels_in_prefix, _packed_rows_of_different_prefixes,
                                  _packed_first_label_across_conversations, _short_prefix])
def test_batches_that_do_not_qualify_take_the_normal_path_with_the_right_loss(lora_model, tokenizer, make):
    batch = make(tokenizer)
    assert shared_prefix_split(lora_model, batch) is None
    loss = summed_token_loss(lora_model, batch, shared_prefix=True)
    # the right loss: every conversation alone
    rows = batch.input_ids.shape[0]
    if batch.attention_mask is not None:
        alone = [TokenizedExample(batch.input_ids[r][batch.attention_mask[r].bool()].tolist(),
                                  batch.labels[r][batch.attention_mask[r].bool()].tolist()) for r in range(rows)]
        expected = sum(summed_token_loss(lora_model, _padded([ex], tokenizer)) for ex in alone)
    else:
        expected = summed_token_loss(lora_model, batch, shared_prefix=False)
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=0)


def test_packed_rows_of_one_conversation_each_use_the_shared_prefix(lora_model, tokenizer):
    """With packing on, rows that hold one conversation (plus padding) qualify."""
    examples = _examples()
    batch = collate_packed([[ex] for ex in examples], tokenizer.pad_token_id)
    assert batch.attention_mask is None
    split = shared_prefix_split(lora_model, batch)
    assert split is not None and split.prefix_length == PREFIX
    with torch.no_grad():
        shared = summed_token_loss(lora_model, batch, shared_prefix=True)
        per_row = sum(summed_token_loss(lora_model, _padded([ex], tokenizer)) for ex in examples)
    torch.testing.assert_close(shared, per_row, rtol=1e-5, atol=0)


def test_packed_rows_of_several_conversations_become_one_suffix_each(lora_model, tokenizer):
    """Rows holding two and three conversations that all open with the prefix: each conversation is a suffix
    of its own (it attends only to itself in the packed row too), with the loss and gradients of the
    normal packed path."""
    a, b, c = _examples()
    d, e = _examples(seed=1, suffixes=(9, 4))
    d.input_ids[:PREFIX], e.input_ids[:PREFIX] = a.input_ids[:PREFIX], a.input_ids[:PREFIX]
    batch = collate_packed([[a, b], [c, d, e]], tokenizer.pad_token_id)
    split = shared_prefix_split(lora_model, batch)
    assert split is not None and split.prefix_length == PREFIX
    assert split.conversations == 5  # the padding run carries no label and is left out
    normal, normal_grads = _loss_and_grads(lora_model, batch, shared_prefix=False)
    shared, shared_grads = _loss_and_grads(lora_model, batch, shared_prefix=True)
    torch.testing.assert_close(shared, normal, rtol=1e-5, atol=0)
    for name, grad in normal_grads.items():
        if grad is not None:
            _assert_grads_close(shared_grads[name], grad, name)


def test_gradient_checkpointing_takes_the_normal_path(lora_model, tokenizer):
    """transformers drops the cache inside checkpointed layers: the prefix would be lost, so never split."""
    batch = _padded(_examples(), tokenizer)
    expected = summed_token_loss(lora_model, batch).detach()
    lora_model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora_model.train()
    assert shared_prefix_split(lora_model, batch) is None
    loss = summed_token_loss(lora_model, batch, shared_prefix=True)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=0)


def test_lora_on_the_embedded_smollm2_gets_the_same_loss_and_gradients(embedded_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = _lora(AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32))
    model.train()
    batch = _padded(_examples(suffixes=(5, 11)), tokenizer)
    assert shared_prefix_split(model, batch).prefix_length == PREFIX
    normal, normal_grads = _loss_and_grads(model, batch, shared_prefix=False)
    shared, shared_grads = _loss_and_grads(model, batch, shared_prefix=True)
    torch.testing.assert_close(shared, normal, rtol=1e-5, atol=0)
    for name, grad in normal_grads.items():
        if grad is None:
            assert shared_grads[name] is None, name
        else:
            # per tensor, not per element: through 30 fp32 layers a summation order of its own leaves the odd
            # element ~3e-4 off (seen with 1 and 2 threads), while a wrong prefix or mask is off by O(1)
            error = float((shared_grads[name] - grad).norm() / grad.norm())
            assert error < 1e-4, f"{name}: relative error {error:.2e}"


def _train(model, batches, shared_prefix, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = train_loop(model, opt, sched, epoch_batches=lambda e: batches, total_steps=steps, grad_accum=2,
                       device=torch.device("cpu"), max_grad_norm=1.0, shared_prefix=shared_prefix)
    return state, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_optimizer_steps_with_shared_prefix_give_the_same_weights(tokenizer):
    from tunesmith.models.tiny import build_tiny_llama

    batches = [_padded(_examples(seed=s, suffixes=(5 + s, 9, 14 - s)), tokenizer) for s in range(4)]
    start = {n: p.detach().clone() for n, p in _lora(build_tiny_llama(tokenizer)).named_parameters() if p.requires_grad}
    off_state, off = _train(_lora(build_tiny_llama(tokenizer)), batches, shared_prefix=False)
    on_state, on = _train(_lora(build_tiny_llama(tokenizer)), batches, shared_prefix=True)
    # each step: 2 micro-batches x 40 prefix tokens x 2 rows not encoded again
    assert [h["shared_prefix_tokens"] for h in on_state.history] == [2 * PREFIX * 2] * 3
    assert [h["shared_prefix_tokens"] for h in off_state.history] == [0] * 3
    assert all(not torch.equal(off[n], start[n]) for n in off)  # the steps moved every trainable weight
    for name, weight in off.items():
        torch.testing.assert_close(on[name], weight, rtol=1e-4, atol=1e-6, msg=name)


def test_the_loss_module_encodes_the_prefix_once_only_when_asked(lora_model, tokenizer, monkeypatch):
    import tunesmith.train.loss as loss

    batch = _padded(_examples(), tokenizer)
    real, calls = loss.suffix_hidden_states, []

    def spy(base, split):
        calls.append(split.prefix_length)
        return real(base, split)

    monkeypatch.setattr(loss, "suffix_hidden_states", spy)
    CausalLMLoss(lora_model, shared_prefix=True)(**batch.loss_inputs())
    CausalLMLoss(lora_model)(**batch.loss_inputs())
    assert calls == [PREFIX]


def _train_cfg(**train):
    return build_config({"model": {"name_or_path": "x"}, "train": train}).train


def test_shared_prefix_config():
    assert _train_cfg().shared_prefix == "auto" and _train_cfg().uses_shared_prefix
    assert _train_cfg(shared_prefix=False).shared_prefix == "off"  # YAML reads a bare `off` as false
    assert not _train_cfg(shared_prefix="off").uses_shared_prefix
    assert not _train_cfg(gradient_checkpointing=True).uses_shared_prefix
    assert not _train_cfg(distributed="fsdp").uses_shared_prefix
    assert not _train_cfg(distributed="deepspeed", zero_stage=3).uses_shared_prefix
    assert _train_cfg(distributed="deepspeed", zero_stage=2).uses_shared_prefix
    with pytest.raises(ConfigError, match="shared_prefix"):
        _train_cfg(shared_prefix="always")


SYSTEM = ("You are the support desk of a homeware shop. Classify every ticket by urgency (Low, Medium, High) and "
          "category (Billing, Technical), one field per line, and never add anything else to the answer.")


def _run_config(tmp_path, model_dir, **train):
    """A `tunesmith train` config on conversations that all open with the same system prompt (~45 tokens)."""
    rows = [{"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": f"Ticket {i}: {'printer broke' if i % 3 else 'how to export?'}"},
                          {"role": "assistant", "content": f"Urgency: {['Low', 'High', 'Medium'][i % 3]}\n"
                                                           f"Category: {['Billing', 'Technical'][i % 2]}"}]}
            for i in range(40)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "run", "output_dir": str(tmp_path / "runs"), "seed": 5, "model": {"name_or_path": str(model_dir)},
           "data": {"train_file": str(data), "validation_fraction": 0.1, "test_fraction": 0.1},
           "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.0}, "batch_size": 2, "grad_accum": 2, "lr": 1e-3,
                     "max_steps": 4, "max_seq_length": 256, "logging_steps": 100, "select_by": "val_loss",
                     "save_every_epoch": False, "forgetting_guard": "off", **train}}  # general rows: their own tests
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(run):
    return [json.loads(x) for x in (run / "train_metrics.jsonl").read_text().splitlines()]


def _run_adapter(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs_off_and_auto(tmp_path_factory, tiny_model_dir):
    """`tunesmith train` twice on the same config: train.shared_prefix off, then auto (the default)."""
    tmp = tmp_path_factory.mktemp("shared-prefix-runs")
    cfg = _run_config(tmp, tiny_model_dir)
    for value in ("off", "auto"):
        r = run_cli("train", str(cfg), f"name=run-{value}", f"train.shared_prefix={value}")
        assert r.returncode == 0, r.stderr[-3000:]
    return cfg, tmp / "runs"


def test_tunesmith_train_with_shared_prefix_auto_matches_off(runs_off_and_auto):
    """Through the CLI, with packing on (rows of several conversations): the same losses and adapter."""
    _, runs = runs_off_and_auto
    off, auto = _metrics(runs / "run-off"), _metrics(runs / "run-auto")
    assert all(m["shared_prefix_tokens"] == 0 for m in off)
    assert all(m["shared_prefix_tokens"] > 0 for m in auto)  # every step's batches took the shared prefix
    assert len(off) == len(auto) == 4
    for a, b in zip(off, auto):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (off, auto)
    a, b = _run_adapter(runs / "run-off"), _run_adapter(runs / "run-auto")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_two_ddp_processes_with_shared_prefix_match_one_process(runs_off_and_auto):
    """2 ranks x (batch 2, accumulation 1) under DDP with the shared prefix = 1 process x accumulation 2."""
    cfg, runs = runs_off_and_auto
    r = run_cli("train", str(cfg), "name=ddp", "train.grad_accum=1", "--nproc", "2", "--distributed", "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    single, multi = _metrics(runs / "run-auto"), _metrics(runs / "ddp")
    assert all(m["shared_prefix_tokens"] > 0 for m in multi)
    assert all(abs(s["loss"] - m["loss"]) < 1e-4 for s, m in zip(single, multi)), (single, multi)
    a, b = _run_adapter(runs / "run-auto"), _run_adapter(runs / "ddp")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
