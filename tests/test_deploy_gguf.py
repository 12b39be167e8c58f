"""GGUF export round trip: the file loads back through transformers' gguf_file= and its logits match."""

from __future__ import annotations

import os

import pytest
import torch

from deploy_helpers import make_adapter
from tunesmith.deploy.gguf_export import export_gguf, write_modelfile
from tunesmith.deploy.merge import merge_adapter
from tunesmith.errors import TunesmithError
from tunesmith.models.config import ModelConfig

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


def test_gguf_f16_tensors_match_f32_file(gguf_files):
    """f16 holds the same (permuted) tensors as the f32 file, rounded to half precision; norms stay f32."""
    import gguf
    import numpy as np

    t32 = {t.name: t for t in gguf.GGUFReader(str(gguf_files["f32"])).tensors}
    t16 = {t.name: t for t in gguf.GGUFReader(str(gguf_files["f16"])).tensors}
    assert t32.keys() == t16.keys() and "blk.0.attn_q.weight" in t16 and "output.weight" not in t16  # tied
    for name, a in t32.items():
        b = t16[name]
        want = gguf.GGMLQuantizationType.F32 if len(a.shape) == 1 else gguf.GGMLQuantizationType.F16
        assert b.tensor_type == want, name
        np.testing.assert_allclose(np.asarray(b.data, dtype=np.float32), np.asarray(a.data), rtol=1e-3, atol=1e-4)


def test_gguf_tokenizer_and_chat_template_round_trip(gguf_files, tokenizer):
    import gguf
    from transformers import AutoTokenizer

    f = gguf_files["f16"]
    fields = gguf.GGUFReader(str(f)).fields
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
