"""Write a llama-architecture Hugging Face checkpoint as a GGUF file (f32, f16 or q8_0), plus an Ollama Modelfile.

Tensor names follow llama.cpp (``gguf.get_tensor_name_map``). llama.cpp expects the Q and K
projections with the rotary halves interleaved (its converter's ``permute``); transformers'
GGUF loader reverses that permutation on load, so the round trip is exact in f32.
The tokenizer is written as a byte-level BPE ("gpt2") vocabulary with merges, special token ids
and the chat template (``tokenizer.chat_template``), so llama.cpp, Ollama and transformers all
render chat prompts the way the model was trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from tunesmith.errors import TunesmithError
from tunesmith.utils.io import atomic_path, write_text

log = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "q8_0")
SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order: per head, interleave the two rotary halves."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_data(name: str, t: torch.Tensor, outtype: str):
    """(numpy data, raw_dtype or None) for one tensor; 1-D tensors (norms) always stay f32."""
    import gguf

    arr = t.detach().to(torch.float32).cpu().numpy()
    if arr.ndim == 1 or outtype == "f32":
        return arr.astype(np.float32), None
    if outtype == "f16":
        return arr.astype(np.float16), None
    if arr.shape[-1] % 32:
        return arr.astype(np.float16), None  # q8_0 needs rows in blocks of 32; keep this tensor in f16
    return gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0


def _tokenizer_metadata(writer, tokenizer) -> None:
    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    model = tok_json.get("model", {})
    if model.get("type") != "BPE":
        raise TunesmithError(
            f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')}",
            hint="export safetensors (tunesmith export merge) and convert with llama.cpp's convert_hf_to_gguf.py",
        )
    vocab_size = len(tokenizer)
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i, f"[PAD{i}]")
        tokens.append(tok)
        if i in added:
            types.append(3 if added[i].get("special") else 4)  # CONTROL / USER_DEFINED
        elif i in by_id:
            types.append(1)  # NORMAL
        else:
            types.append(5)  # UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    pre = "smollm" if "smollm" in str(getattr(tokenizer, "name_or_path", "")).lower() else "default"
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, tid in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if tid is not None:
            setter(int(tid))
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def export_gguf(model_dir: str | Path, out_file: str | Path, *, outtype: str = "f16", name: str | None = None) -> Path:
    """Convert the (merged) checkpoint in ``model_dir`` into ``out_file``; returns the file's path."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if outtype not in OUTTYPES:
        raise TunesmithError(f"unknown GGUF type '{outtype}'", hint=f"one of {', '.join(OUTTYPES)}")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TunesmithError(
            f"{model_dir} is not a model folder (no config.json)", hint="run `tunesmith export merge` first"
        )
    config = AutoConfig.from_pretrained(model_dir)
    archs = config.architectures or []
    arch = next((SUPPORTED_ARCHS[a] for a in archs if a in SUPPORTED_ARCHS), None)
    if arch is None:
        raise TunesmithError(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHS)}; {model_dir} is {', '.join(archs) or 'unknown'}",
            hint="use llama.cpp's convert_hf_to_gguf.py on the merged safetensors folder",
        )
    if getattr(config, "rope_scaling", None) and (config.rope_scaling or {}).get("rope_type", "default") != "default":
        raise TunesmithError(f"rope scaling {config.rope_scaling} is not supported by this GGUF writer")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = model.state_dict()

    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope_theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
        "rope_theta", 10000.0
    )
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    out_file = Path(out_file)
    with atomic_path(out_file) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_name(name or model_dir.name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_rope_dimension_count(head_dim)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(float(rope_theta))
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _tokenizer_metadata(writer, tokenizer)

        for hf_name, tensor in state.items():
            if hf_name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            gname = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise TunesmithError(f"no GGUF name for tensor '{hf_name}'")
            t = tensor
            if hf_name.endswith("self_attn.q_proj.weight"):
                t = torch.from_numpy(_permute(t.numpy(), n_head))
            elif hf_name.endswith("self_attn.k_proj.weight"):
                t = torch.from_numpy(_permute(t.numpy(), n_kv))
            data, raw_dtype = _tensor_data(hf_name, t, outtype)
            writer.add_tensor(gname, data, raw_dtype=raw_dtype)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    log.info("wrote %s (%s)", out_file, outtype)
    return out_file


CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def write_modelfile(gguf_file: str | Path, tokenizer, *, temperature: float = 0.2, num_ctx: int = 2048) -> Path:
    """An Ollama ``Modelfile`` beside the GGUF: ``ollama create my-model -f Modelfile``."""
    gguf_file = Path(gguf_file)
    lines = [f"FROM ./{gguf_file.name}", ""]
    template = tokenizer.chat_template or ""
    stops = []
    if "<|im_start|>" in template:
        lines += ['TEMPLATE """' + CHATML_TEMPLATE + '"""', ""]
        stops = ["<|im_end|>", "<|im_start|>"]
    else:
        lines += ["# Ollama reads the chat template from the GGUF metadata (tokenizer.chat_template)", ""]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER num_ctx {num_ctx}", ""]
    path = gguf_file.with_name("Modelfile")
    write_text(path, "\n".join(lines))
    return path
