"""Training engine behaviour on a tiny random Llama with the real tokenizer (CPU, fp32)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tunesmith.config import build_config
from tunesmith.estimate.arch import ATTENTION_LINEARS, MLP_LINEARS
from tunesmith.train.batching import (
    collate_packed,
    collate_padded,
    epoch_batches,
    pack_examples,
)
from tunesmith.train.loop import train_loop
from tunesmith.train.loss import summed_token_loss
from tunesmith.train.methods import build_trainable_model
from tunesmith.train.tokenize import tokenize_records

TICKETS = [
    ("Printer on fire, whole office down", "Urgency: Critical"),
    ("How do I change my email?", "Urgency: Low"),
    ("Refund missing, I am blocked", "Urgency: High"),
    ("App slow sometimes, refresh helps", "Urgency: Medium"),
    ("All users cannot log in", "Urgency: Critical"),
    ("Do you ship to Norway?", "Urgency: Low with a longer answer to vary the lengths of examples"),
    ("Invoice wrong, finance blocked", "Urgency: High"),
    ("Export empty, we can work around it", "Urgency: Medium"),
]


def _records(n=8):
    recs = []
    for i in range(n):
        q, a = TICKETS[i % len(TICKETS)]
        recs.append({"id": f"r:{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return recs


def _cfg(model_dir, **train):
    return build_config({"model": {"name_or_path": str(model_dir)}, "train": train, "seed": 3})


@pytest.fixture
def examples(tokenizer):
    ex, _ = tokenize_records(tokenizer, _records(), max_seq_length=256)
    return ex


def _train(model, examples, tokenizer, *, steps, batch_size=4, grad_accum=1, packing=True, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return train_loop(
        model, opt, sched,
        epoch_batches=lambda e: epoch_batches(examples, batch_size=batch_size, packing=packing, row_length=256,
                                              pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
        total_steps=steps, grad_accum=grad_accum, device=torch.device("cpu"), max_grad_norm=1.0,
    )


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_loss_decreases_and_only_trainable_params_change(tiny_model_dir, tokenizer, examples, method):
    lora = {"r": 8, "dropout": 0.0, "target_modules": "all-linear"}
    train = {"method": method} if method == "full" else {"method": method, "lora": lora}
    model, _ = build_trainable_model(_cfg(tiny_model_dir, **train))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    if method != "full":
        assert all("lora_" in n for n in trainable)
    result = _train(model, examples, tokenizer, steps=12, lr=3e-2 if method == "full" else 1e-2)
    losses = [h["loss"] for h in result.history]
    last = sum(losses[-3:]) / 3
    # a random tiny model's frozen LM head limits what adapters can do; full training drops far
    if method == "full":
        assert last < 0.5 * losses[0], losses
    else:
        assert last < losses[0] - 0.4, losses
    for n, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        if n in trainable:
            assert changed, f"trainable {n} did not change"
        else:
            assert not changed, f"frozen {n} changed"


def test_default_lora_adapts_every_linear_layer_but_the_lm_head(tiny_model_dir):
    """The default targets (estimate/arch.py DEFAULT_LORA_TARGETS): attention and MLP projections, never the head."""
    model, _ = build_trainable_model(_cfg(tiny_model_dir, method="lora"))
    linear = {n.removeprefix("base_model.model.").removesuffix(".base_layer") for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and "lora_" not in n}  # an adapted layer's own Linear: .base_layer
    adapted = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted and {n.split(".")[-1] for n in adapted} == set(ATTENTION_LINEARS + MLP_LINEARS)
    assert adapted == linear - {"lm_head"}, linear ^ adapted


def test_packed_loss_equals_unpacked(tiny_model, tokenizer, examples):
    """Packing must not let examples attend to each other: same loss as each example alone."""
    tiny_model.eval()
    rows = pack_examples(examples, row_length=256)
    assert any(len(r) > 1 for r in rows)
    packed = collate_packed(rows, tokenizer.pad_token_id)
    padded = collate_padded(examples, tokenizer.pad_token_id)
    assert packed.n_label_tokens == padded.n_label_tokens
    with torch.no_grad():
        packed_loss = summed_token_loss(tiny_model, packed) / packed.n_label_tokens
        unpacked_loss = summed_token_loss(tiny_model, padded) / padded.n_label_tokens
        one_by_one = sum(float(summed_token_loss(tiny_model, collate_padded([e], tokenizer.pad_token_id))) for e in examples)
    assert abs(float(packed_loss) - float(unpacked_loss)) < 1e-5
    assert abs(float(packed_loss) - one_by_one / padded.n_label_tokens) < 1e-5


def test_packing_without_position_restart_would_differ(tiny_model, tokenizer, examples):
    """Control for the test above: the same packed row with one running position sequence
    (cross-example attention) gives a different loss, so the equality is not trivially true."""
    tiny_model.eval()
    packed = collate_packed(pack_examples(examples, row_length=256), tokenizer.pad_token_id)
    leaky = type(packed)(packed.input_ids, packed.labels,
                         torch.arange(packed.input_ids.shape[1]).expand_as(packed.input_ids), None)
    with torch.no_grad():
        a = float(summed_token_loss(tiny_model, packed))
        b = float(summed_token_loss(tiny_model, leaky))
    assert abs(a - b) > 1e-3


def test_grad_accumulation_matches_one_big_batch(tiny_model_dir, tokenizer, examples):
    """Batch 8 x accumulation 1 and batch 2 x accumulation 4 give the same update (token-normalised loss)."""
    params = []
    for bs, accum in [(8, 1), (2, 4)]:
        model, _ = build_trainable_model(_cfg(tiny_model_dir, lora={"r": 8, "dropout": 0.0}))
        _train(model, examples, tokenizer, steps=1, batch_size=bs, grad_accum=accum, packing=False, lr=1e-3)
        params.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    for n in params[0]:
        # atol 1e-5 against updates of ~1e-3 (lr): Adam's first step divides by |g|, so an entry whose gradient
        # is near zero turns fp32 summation-order noise into ~1e-6 (seen on the MLP adapters)
        torch.testing.assert_close(params[0][n], params[1][n], rtol=1e-5, atol=1e-5)


def test_epoch_batches_are_seeded(tokenizer):
    examples, _ = tokenize_records(tokenizer, _records(16), max_seq_length=256)

    def order(seed, epoch):
        batches = epoch_batches(examples, batch_size=2, packing=False, row_length=256,
                                pad_id=tokenizer.pad_token_id, seed=seed, epoch=epoch)
        return [row[row != tokenizer.pad_token_id].tolist() for b in batches for row in b.input_ids]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert sorted(map(tuple, order(1, 0))) == sorted(map(tuple, order(1, 1)))  # same examples, new order


def test_preflight_refuses_a_run_that_cannot_fit(tiny_model_dir, monkeypatch):
    from tunesmith.train import preflight
    from tunesmith.train.run import _preflight

    cfg = _cfg(tiny_model_dir, method="full", batch_size=8)
    _preflight(cfg)  # fits in this machine's memory
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda device: 10 * 2**20)  # a 10 MiB device
    with pytest.raises(preflight.DoesNotFitError) as e:
        _preflight(cfg)
    assert "GiB at its peak" in e.value.message
    assert "train.method: lora" in e.value.hint and "gradient_checkpointing" in e.value.hint


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, tokenizer, examples, method):
    batch = collate_packed(pack_examples(examples, row_length=256), tokenizer.pad_token_id)
    grads = []
    for ckpt in (False, True):
        train = {"method": method, "gradient_checkpointing": ckpt}
        if method != "full":
            train["lora"] = {"r": 4, "dropout": 0.0}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, _ = build_trainable_model(_cfg(tiny_model_dir, **train))
        # tunesmith calls the current transformers API, not the deprecated alias that warns the user
        assert not [w for w in caught if "`gradient_checkpointing_enable` is deprecated" in str(w.message)]
        model.train()
        saved = [0]

        def count(t):
            saved[0] += t.numel()
            return t

        decoder = (model.get_base_model() if hasattr(model, "get_base_model") else model).get_decoder()
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            decoder(input_ids=batch.input_ids, position_ids=batch.position_ids)
        grads.append(saved[0])
        loss = summed_token_loss(model, batch)
        loss.backward()
        grads.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    saved_plain, (loss0, g0), saved_ckpt, (loss1, g1) = grads
    assert saved_ckpt < 0.5 * saved_plain  # activations really are recomputed, not kept
    assert abs(loss0 - loss1) < 1e-5
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], rtol=1e-4, atol=1e-6)


def test_full_fine_tuning_in_bf16_keeps_fp32_master_weights_and_computes_in_bf16(tiny_model_dir, tokenizer, examples):
    """model.dtype bfloat16 + full: weights (and AdamW states) stay fp32, matmuls run in bf16 under
    autocast, and updates far below bf16's resolution of the weights are not lost."""
    from tunesmith.train.methods import compute_dtypes

    cfg = _cfg(tiny_model_dir, method="full")
    cfg.model.dtype = "bfloat16"
    assert compute_dtypes(cfg, torch.device("cpu")) == (torch.float32, torch.bfloat16)
    model, _ = build_trainable_model(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    seen = []
    proj = model.model.layers[0].self_attn.q_proj
    proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = proj.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)  # a step of ~1e-5: below bf16's spacing near 0.02
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    result = train_loop(
        model, opt, sched,
        epoch_batches=lambda e: epoch_batches(examples, batch_size=4, packing=True, row_length=256,
                                              pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
        total_steps=2, grad_accum=1, device=torch.device("cpu"), autocast_dtype=torch.bfloat16,
    )
    assert len(result.history) == 2 and seen and set(seen) == {torch.bfloat16}
    assert proj.weight.dtype == torch.float32
    delta = (proj.weight.detach() - before).abs()
    assert delta.max() > 0
    # the same update applied to bf16 weights would round away for most entries
    lost_in_bf16 = (before.bfloat16() + (proj.weight.detach() - before).bfloat16()).float() == before.bfloat16().float()
    assert lost_in_bf16.float().mean() > 0.5


def test_preflight_counts_what_fsdp_and_zero_shard_across_ranks(tiny_model_dir, monkeypatch):
    """A run that cannot fit one device is refused under DDP but passes when FSDP shards it over 8 GPUs;
    the estimator splits exactly the states each strategy splits."""
    from transformers import AutoConfig

    from tunesmith.estimate.arch import Architecture
    from tunesmith.estimate.memory import estimate_memory
    from tunesmith.train import preflight

    arch = Architecture.from_transformers_config(AutoConfig.from_pretrained(tiny_model_dir))
    kw = dict(method="full", batch_size=1, seq_len=64, dtype="float32", device="cuda")
    one = estimate_memory(arch, **kw)
    z2 = estimate_memory(arch, **kw, sharding="optimizer", num_shards=8)
    fsdp = estimate_memory(arch, **kw, sharding="full", num_shards=8)
    for name in ("optimizer states",):
        assert z2.component(name).bytes == one.component(name).bytes // 8
    assert z2.component("weights").bytes == one.component("weights").bytes  # ZeRO-2 keeps whole weights
    assert fsdp.component("weights").bytes == one.component("weights").bytes // 8
    assert fsdp.component("gathered layers").bytes == 2 * 4 * arch.layer_params
    assert fsdp.total_bytes < z2.total_bytes < one.total_bytes

    cfg = _cfg(tiny_model_dir, method="full", batch_size=1, max_seq_length=64)
    model_config = AutoConfig.from_pretrained(tiny_model_dir)
    cpu = torch.device("cpu")
    single = estimate_memory(arch, **{**kw, "device": "cpu"}).total_bytes
    sharded = estimate_memory(arch, **{**kw, "device": "cpu"}, sharding="full", num_shards=8).total_bytes
    between = (single + sharded) // 2  # a device too small for one whole copy, big enough for 1/8 of the states
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda device: between)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one rank per machine here
    with pytest.raises(preflight.DoesNotFitError) as e:  # DDP: every rank holds everything
        preflight.check_memory(cfg, model_config, cpu, torch.float32)
    assert "train.distributed: fsdp" in e.value.hint
    cfg.train.distributed = "fsdp"
    pf = preflight.check_memory(cfg, model_config, cpu, torch.float32)
    assert pf.estimate_bytes == sharded
    # several ranks on one machine share its memory
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(preflight.DoesNotFitError, match="8 processes"):
        preflight.check_memory(cfg, model_config, cpu, torch.float32)
