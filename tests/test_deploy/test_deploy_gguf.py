"""GGUF export round trip: the file loads back through transformers' gguf_file= and its logits match."""

from __future__ import annotations

import os

import pytest
import torch

from tunesmith.deploy.gguf_export import export_gguf, write_modelfile
from tunesmith.deploy.merge import merge_adapter
from tunesmith.errors import TunesmithError
from tunesmith.models.config import ModelConfig

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

# max |logit difference| allowed, relative to the largest |logit| of the merged model
TOLERANCE = {"f32": 1e-6, "f16": 3e-3, "q8_0": 0.1}  # q8_0 measured 0.07 on the random tiny model


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gguf")
    adapter = make_adapter(tiny_model_dir, tmp / "adapter", method="lora")
    return merge_adapter(adapter, tmp / "merged", base=ModelConfig(name_or_path=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def gguf_files(merged_dir, tmp_path_factory):
    """Each type exported once (loading a GGUF back through transformers costs ~10 s: it parses the vocab)."""
    out = tmp_path_factory.mktemp("gguf-out")
    return {t: export_gguf(merged_dir, out / f"model-{t}.gguf", outtype=t) for t in ("f32", "f16", "q8_0")}


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_gguf_round_trip_logits(outtype, merged_dir, gguf_files, tokenizer):
    from transformers import AutoModelForCausalLM

    f = gguf_files[outtype]
    back = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    msgs = [{"role": "user", "content": "My printer is on fire, what do I do?"}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        a, b = ref(**ids).logits, back(**ids).logits
    rel = ((a - b).abs().max() / a.abs().max()).item()
    assert rel <= TOLERANCE[outtype], f"{outtype}: relative logit error {rel:.2e}"
    if outtype != "f32":
        assert rel > 0, "a lossy type that reproduces logits bit-exactly was not written lossily"
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() >= 0.9


def test_gguf_f16_file_tensors_tokenizer_and_chat_template(gguf_files, merged_dir, tokenizer):
    """One pass over the f16 file (reading a 49k-token vocabulary is slow): tensors, metadata, tokenizer."""
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.deploy.gguf_export import _permute

    f = gguf_files["f16"]
    reader = gguf.GGUFReader(str(f))
    tensors = {t.name: t for t in reader.tensors}
    state = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).state_dict()
    assert "output.weight" not in tensors  # tied embeddings are written once
    assert len(tensors) == len([k for k in state if k != "lm_head.weight"])
    cfg_heads, cfg_kv = 4, 2  # the tiny fixture model
    checks = {
        "token_embd.weight": state["model.embed_tokens.weight"],
        "blk.1.attn_q.weight": torch.from_numpy(_permute(state["model.layers.1.self_attn.q_proj.weight"].numpy(), cfg_heads)),
        "blk.1.attn_k.weight": torch.from_numpy(_permute(state["model.layers.1.self_attn.k_proj.weight"].numpy(), cfg_kv)),
        "blk.0.ffn_down.weight": state["model.layers.0.mlp.down_proj.weight"],
        "blk.0.attn_norm.weight": state["model.layers.0.input_layernorm.weight"],
    }
    for name, want in checks.items():
        t = tensors[name]
        kind = gguf.GGMLQuantizationType.F32 if want.ndim == 1 else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == kind, name
        np.testing.assert_allclose(np.asarray(t.data, dtype=np.float32).reshape(want.shape), want.numpy(),
                                   rtol=1e-3, atol=1e-4)

    fields = reader.fields
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert fields["general.architecture"].contents() == "llama"
    back = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Héllo 你好 <tag> 123"}]
    a = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    b = back.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert a == b
    assert tokenizer(a)["input_ids"] == back(b)["input_ids"]
    assert back.eos_token_id == tokenizer.eos_token_id

    mf = write_modelfile(f, tokenizer).read_text()
    assert f"FROM ./{f.name}" in mf and 'PARAMETER stop "<|im_end|>"' in mf and "<|im_start|>" in mf


def test_gguf_refuses_non_model_folder(tmp_path):
    with pytest.raises(TunesmithError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(TunesmithError, match="unknown GGUF type"):
        export_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4_k")


@pytest.mark.skipif(os.environ.get("TUNESMITH_LLAMACPP") != "1", reason="opt-in: TUNESMITH_LLAMACPP=1 + llama-cpp-python")
def test_gguf_generates_with_llama_cpp(merged_dir, tmp_path):
    """Opt-in (see docs/deploy.md): llama.cpp itself loads the exported file and generates."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f = export_gguf(merged_dir, tmp_path / "m.gguf", outtype="f32")
    llm = llama_cpp.Llama(model_path=str(f), n_ctx=256, verbose=False, logits_all=True)
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    ids = tok("Hello there, how are you?")["input_ids"]
    assert llm.tokenize(b"Hello there, how are you?", add_bos=False, special=True) == ids
    llm.eval(ids)
    ref = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0, -1]
    got = torch.tensor(llm.scores[len(ids) - 1])
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-3
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert out["choices"][0]["message"]["content"] is not None
