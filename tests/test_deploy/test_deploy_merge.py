"""Merged model == base + adapter: logits (fp32 tolerance) and greedy outputs, for lora, dora and qlora."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunesmith.deploy.merge import (
    attach_adapter,
    bnb_nf4_config,
    load_base,
    merge_adapter,
    read_adapter,
)
from tunesmith.errors import TunesmithError
from tunesmith.models.config import ModelConfig

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

PROMPTS = ["Hello, how are you?", "The ticket says the printer is broken and"]


def _batch(tokenizer):
    tokenizer.padding_side = "left"
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


@pytest.mark.parametrize("method", ["lora", "dora", "qlora"])
def test_merged_equals_base_plus_adapter(method, tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", method=method)
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"tuned": {"accuracy": 0.87}, "base": {"accuracy": 0.41}}))
    (run_dir / "data" / "stats.json").write_text(json.dumps({"train_examples": 123}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"method": method, "epochs": 3}}))

    out = merge_adapter(adapter, tmp_path / "merged", base=ModelConfig(name_or_path=str(tiny_model_dir)),
                        method=method, run_dir=run_dir)

    # Reference: the de-quantised base for qlora (the exact definition of the merged model); the real
    # bitsandbytes 4-bit forward is compared separately below (its CPU kernel is not fp32-exact).
    ref_base = load_base(ModelConfig(name_or_path=str(tiny_model_dir)), method, torch.float32)
    plain_base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    ref = attach_adapter(ref_base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    enc = _batch(tokenizer)
    with torch.no_grad():
        l_ref = ref(**enc).logits
        l_merged = merged(**enc).logits
        l_base = plain_base(**enc).logits
    mask = enc["attention_mask"].bool()
    diff = (l_ref - l_merged)[mask].abs().max().item()
    adapter_effect = (l_ref - l_base)[mask].abs().max().item()
    assert diff < 1e-4, f"{method}: merged logits differ from base+adapter by {diff}"
    assert adapter_effect > 100 * max(diff, 1e-6), f"{method}: the adapter barely changes outputs ({adapter_effect})"

    with torch.no_grad():
        g_ref = ref.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        g_merged = merged.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(g_ref, g_merged)

    card = (out / "README.md").read_text()
    assert "0.87" in card and "train_examples" in card and method in card and str(tiny_model_dir) in card
    assert (out / "generation_config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("adapter_*")), "the merged folder must not carry adapter files"


def test_qlora_merge_matches_the_4bit_model_it_was_trained_on(tiny_model_dir, tokenizer, tmp_path):
    """Merged qlora is close to the real bnb 4-bit base + adapter; a naive merge onto the fp32 base is not.

    bitsandbytes' CPU 4-bit matmul itself deviates ~0.2% from an fp32 matmul with the same weights, so
    the comparison with the live 4-bit model is relative: our merge must be >= 3x closer than the naive one.
    """
    from transformers import AutoModelForCausalLM

    base_cfg = ModelConfig(name_or_path=str(tiny_model_dir))
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", method="qlora")
    ours = AutoModelForCausalLM.from_pretrained(str(merge_adapter(adapter, tmp_path / "m", base=base_cfg, method="qlora")))
    naive = AutoModelForCausalLM.from_pretrained(str(merge_adapter(adapter, tmp_path / "n", base=base_cfg, method="lora")))
    q = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32,
                                             quantization_config=bnb_nf4_config(torch.float32))
    assert type(q.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    live = attach_adapter(q, adapter).eval()
    enc = _batch(tokenizer)
    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        l_live, l_ours, l_naive = (m(**enc).logits[mask] for m in (live, ours.eval(), naive.eval()))
    d_ours = (l_live - l_ours).abs().max().item()
    d_naive = (l_live - l_naive).abs().max().item()
    assert d_ours * 3 < d_naive, (d_ours, d_naive)


def test_qlora_merge_uses_dequantised_base(tiny_model_dir, tmp_path):
    """The qlora base is the de-quantised NF4 base, which differs from the fp32 base by the quantisation error."""
    from transformers import AutoModelForCausalLM

    nf4 = load_base(ModelConfig(name_or_path=str(tiny_model_dir)), "qlora", torch.float32)
    fp = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    w_q = nf4.model.layers[0].self_attn.q_proj.weight
    w = fp.model.layers[0].self_attn.q_proj.weight
    assert isinstance(w_q, torch.nn.Parameter) and w_q.dtype == torch.float32 and w_q.shape == w.shape
    err = (w_q - w).abs().max().item()
    assert 0 < err < 0.5 * w.abs().max().item()


def test_bad_adapter_folder_is_a_user_error(tmp_path):
    with pytest.raises(TunesmithError, match="not a PEFT adapter folder"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(TunesmithError, match="not valid JSON"):
        read_adapter(tmp_path)
