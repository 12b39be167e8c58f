"""QLoRA on CPU: bitsandbytes 4-bit NF4 base + LoRA trains, and the adapter merges onto the fp32 base."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("bitsandbytes")

from tunesmith.config import build_config  # noqa: E402
from tunesmith.train.batching import epoch_batches  # noqa: E402
from tunesmith.train.loop import train_loop  # noqa: E402
from tunesmith.train.methods import build_trainable_model  # noqa: E402
from tunesmith.train.tokenize import tokenize_records  # noqa: E402


def test_qlora_trains_lora_only_and_merges_onto_unquantised_base(tiny_model_dir, tokenizer, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = build_config({"model": {"name_or_path": str(tiny_model_dir)},
                        "train": {"method": "qlora", "lora": {"r": 8, "dropout": 0.0, "target_modules": "all-linear"}}})
    model, device = build_trainable_model(cfg)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4, "base linears are not 4-bit"
    assert linear4[0].weight.quant_type == "nf4"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    recs = [{"id": str(i), "messages": [{"role": "user", "content": f"ticket {i}"},
                                        {"role": "assistant", "content": ["Low", "High"][i % 2]}]} for i in range(8)]
    ex, _ = tokenize_records(tokenizer, recs, max_seq_length=128)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    state = train_loop(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                       epoch_batches=lambda e: epoch_batches(ex, batch_size=4, packing=True, row_length=128,
                                                             pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
                       total_steps=8, grad_accum=1, device=device)
    losses = [h["loss"] for h in state.history]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.2, losses
    for n, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        assert changed == (n in trainable), n

    model.save_pretrained(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    w0 = base.model.layers[0].mlp.down_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).merge_and_unload()
    lora_a = state_dict_tensor(tmp_path / "adapter", "layers.0.mlp.down_proj.lora_A")
    lora_b = state_dict_tensor(tmp_path / "adapter", "layers.0.mlp.down_proj.lora_B")
    expected = w0 + (cfg.train.lora.alpha / cfg.train.lora.r) * (lora_b @ lora_a)
    torch.testing.assert_close(merged.model.layers[0].mlp.down_proj.weight, expected, rtol=1e-5, atol=1e-6)


def state_dict_tensor(adapter_dir, fragment):
    from safetensors.torch import load_file

    sd = load_file(str(adapter_dir / "adapter_model.safetensors"))
    (key,) = [k for k in sd if fragment in k]
    return sd[key].float()


def test_qlora_in_bf16_keeps_non_quantised_weights_in_bf16(tiny_model_dir, tokenizer):
    """On a GPU qlora runs with bf16 compute: embeddings, LM head and norms must stay bf16 (as for lora, and as the
    pre-flight estimate counts them), not be upcast to fp32, which would run every activation in fp32."""
    import bitsandbytes as bnb

    cfg = build_config({"model": {"name_or_path": str(tiny_model_dir), "dtype": "bfloat16", "device": "cpu"},
                        "train": {"method": "qlora", "lora": {"r": 8, "dropout": 0.0}}})
    model, device = build_trainable_model(cfg)
    base = model.get_base_model()
    dense = {n: p.dtype for n, p in model.named_parameters()
             if "lora_" not in n and not isinstance(p, bnb.nn.Params4bit)}
    assert dense and set(dense.values()) == {torch.bfloat16}, {n: d for n, d in dense.items() if d != torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    hidden = base.get_decoder()(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state
    assert hidden.dtype == torch.bfloat16

    recs = [{"id": str(i), "messages": [{"role": "user", "content": f"ticket {i}"},
                                        {"role": "assistant", "content": ["Low", "High"][i % 2]}]} for i in range(4)]
    ex, _ = tokenize_records(tokenizer, recs, max_seq_length=128)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    state = train_loop(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                       epoch_batches=lambda e: epoch_batches(ex, batch_size=4, packing=True, row_length=128,
                                                             pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
                       total_steps=2, grad_accum=1, device=device)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state.history)


def test_4bit_weights_count_at_their_real_size(tiny_model_dir):
    """MFU and the parameter count of a qlora model use the 4-bit weights' real shapes (bitsandbytes packs two
    weights per byte, so numel() is half): the same architecture gives the same numbers as lora."""
    from tunesmith.train.methods import count_parameters
    from tunesmith.train.telemetry import training_flops

    counts = {}
    for method in ("lora", "qlora"):
        cfg = build_config({"model": {"name_or_path": str(tiny_model_dir)}, "train": {"method": method}})
        model, _ = build_trainable_model(cfg)
        counts[method] = (training_flops(model, method=method, seq_len=64), count_parameters(model))
    assert counts["qlora"] == counts["lora"], counts
