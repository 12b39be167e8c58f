"""Validate ``tunesmith.estimate.memory.estimate_memory`` against measured peak memory on this machine.

For each configuration a fresh subprocess (``--worker``) does:

1. import torch / transformers / peft (/ bitsandbytes) and read ``VmRSS`` = the **baseline**
   (interpreter + libraries: what every process pays before it holds a model);
2. load the model from a saved safetensors checkpoint with ``from_pretrained`` (fp32, or 4-bit NF4
   with double quantisation for QLoRA), wrap it with peft LoRA (r=16, alpha=32, dropout 0.05 on
   q/k/v/o) unless the method is full, then ``gc.collect()``;
3. pages out the checkpoint file's mappings (``madvise(MADV_PAGEOUT)``) and resets the kernel's
   peak-RSS counter (``echo 5 > /proc/self/clear_refs``), so what *loading* leaves behind does not
   count: transformers keeps the safetensors file memory-mapped after loading, and for QLoRA the
   fp32 pages it read to quantise stay resident as clean, reclaimable page cache (~400 MiB for
   SmolLM2-135M) that training never touches again. Weights that do live in the mapping (full and
   LoRA models are views of it) fault back in when training touches them and are counted then;
4. runs 3 training steps (forward + backward + AdamW step, ``zero_grad(set_to_none=True)``) on
   random token ids of the configured batch x length, causal attention without a padding mask
   (SDPA), no gradient checkpointing, fp32;
5. reports ``VmHWM - baseline`` = measured peak (weights + gradients + optimizer states +
   activations + whatever the framework and the allocator add).

Each configuration is measured twice:

* **allocator-neutral** (the validated number): ``MALLOC_MMAP_THRESHOLD_=65536`` makes glibc
  serve every allocation of 64 KiB or more with its own mapping and unmap it on free, so RSS
  follows the bytes of live tensors, as ``torch.cuda.max_memory_allocated`` does on a GPU;
* **glibc defaults**: the same run with the default allocator, which keeps freed heap memory
  (forward-pass temporaries) mapped; the difference is reported as heap retention, not modelled.

The calibration configuration (``CALIBRATION``, not in the table) fixes the one constant of the
CPU model, ``CPU_OVERHEAD_BYTES`` = its allocator-neutral peak minus everything else predicted.

The parent prints a markdown table measured vs predicted (``docs/advise.md`` holds a copy).

Usage::

    PYTHONPATH=src python benchmarks/memory_estimate_validation.py            # all configurations
    PYTHONPATH=src python benchmarks/memory_estimate_validation.py --only 0,3 # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# name -> LlamaConfig overrides; vocab 49152 = the SmolLM2 tokenizer every tiny model shares
MODELS = {
    "tiny-s": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 688},
    "tiny-m": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 1376},
    "smollm2-135m": None,
    # calibration only (not validated): so small that the measured peak is mostly framework overhead
    "calib": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128},  # the embedded SmolLM2-135M-Instruct config (random weights: same memory)
}

CALIBRATION = ("calib", "full", 1, 32)

CONFIGS = [
    # (model, method, batch, seq_len)
    ("tiny-s", "full", 4, 256),
    ("tiny-s", "lora", 8, 256),
    ("tiny-s", "qlora", 4, 512),
    ("tiny-m", "full", 2, 512),
    ("tiny-m", "lora", 4, 384),
    ("tiny-m", "qlora", 8, 256),
    ("smollm2-135m", "full", 2, 256),
    ("smollm2-135m", "lora", 4, 256),
    ("smollm2-135m", "qlora", 2, 512),
]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def model_config_dict(name: str) -> dict:
    base = {
        "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True, "model_type": "llama",
        "architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-5, "hidden_act": "silu",
    }
    if MODELS[name] is None:
        from tunesmith.models.embedded import materialise

        return json.loads((materialise() / "config.json").read_text())
    return {**base, **MODELS[name]}


def save_checkpoint(name: str, folder: Path) -> Path:
    """Random-weight checkpoint with the model's config (memory does not depend on the values)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target = folder / name
    if (target / "config.json").is_file():
        return target
    cfg = model_config_dict(name)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target, safe_serialization=True)
    return target


def page_out(path_prefix: str) -> int:
    """Ask the kernel to drop the resident pages of every mapping of files under ``path_prefix``."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madv_pageout = 21  # Linux >= 5.4; clean file pages are dropped, anonymous ones kept (no swap)
    total = 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith(path_prefix):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if libc.madvise(start, end - start, madv_pageout) == 0:
                total += end - start
    return total


def worker(spec: dict) -> dict:
    import gc

    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    if spec["method"] == "qlora":
        import bitsandbytes  # noqa: F401
    torch.set_num_threads(1)  # shared machine; memory does not depend on the thread count
    from transformers import AutoModelForCausalLM

    from tunesmith.models.quantization import bnb_nf4_config

    gc.collect()
    baseline_kb = _status_kb("VmRSS")

    kwargs = {"dtype": torch.float32}
    if spec["method"] == "qlora":
        kwargs["quantization_config"] = bnb_nf4_config(torch.float32)  # what QLoRA training uses
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], **kwargs)
    model.config.use_cache = False
    if spec["method"] in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    gc.collect()
    page_out(spec["checkpoint"])
    loaded_kb = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")

    g = torch.Generator().manual_seed(0)
    b, s = spec["batch"], spec["seq_len"]
    vocab = model.config.vocab_size
    t0 = time.perf_counter()
    for _ in range(spec.get("steps", 3)):
        ids = torch.randint(0, vocab, (b, s), generator=g)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del out
    elapsed = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM")
    return {
        "baseline_mb": baseline_kb / 1024,
        "loaded_mb": (loaded_kb - baseline_kb) / 1024,
        "peak_mb": (peak_kb - baseline_kb) / 1024,
        "seconds": elapsed,
        "trainable": sum(p.numel() for p in params),
    }


def measure(ckpt: Path, method: str, batch: int, seq_len: int, *, neutral: bool) -> dict:
    """Run one configuration in a fresh subprocess and return its measurements."""
    spec = {"checkpoint": str(ckpt), "method": method, "batch": batch, "seq_len": seq_len}
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if neutral:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(proc.stdout, proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"worker failed for {spec}")
    return json.loads(line[len("RESULT "):])


def predict(model_name: str, method: str, batch: int, seq_len: int, device: str = "cpu"):
    from tunesmith.estimate.arch import Architecture
    from tunesmith.estimate.memory import estimate_memory

    arch = Architecture.from_config_dict(model_config_dict(model_name), name=model_name)
    return estimate_memory(arch, method=method, batch_size=batch, seq_len=seq_len, dtype="float32",
                           optimizer="adamw", gradient_checkpointing=False, lora_r=16,
                           lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"], device=device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated indices into CONFIGS")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    idx = [int(i) for i in args.only.split(",")] if args.only else range(len(CONFIGS))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(CALIBRATION[0], Path(tmp))
        calib = measure(ckpt, *CALIBRATION[1:], neutral=True)
        est = predict(*CALIBRATION)
        from tunesmith.estimate.memory import CPU_OVERHEAD_BYTES

        rest_mb = (est.total_bytes - CPU_OVERHEAD_BYTES) / 2**20
        print(f"calibration {CALIBRATION}: measured {calib['peak_mb']:.1f} MiB, predicted without overhead "
              f"{rest_mb:.1f} MiB -> CPU overhead {calib['peak_mb'] - rest_mb:.1f} MiB "
              f"(CPU_OVERHEAD_BYTES = {CPU_OVERHEAD_BYTES / 2**20:.0f} MiB)", flush=True)
        for i in idx:
            name, method, batch, seq_len = CONFIGS[i]
            ckpt = save_checkpoint(name, Path(tmp))
            res = measure(ckpt, method, batch, seq_len, neutral=True)
            glibc = measure(ckpt, method, batch, seq_len, neutral=False)
            est = predict(name, method, batch, seq_len)
            pred_mb = est.total_bytes / 2**20
            row = {"model": name, "method": method, "batch": batch, "seq_len": seq_len,
                   "measured_mb": round(res["peak_mb"], 1), "predicted_mb": round(pred_mb, 1),
                   "error_pct": round(100 * (pred_mb - res["peak_mb"]) / res["peak_mb"], 1),
                   "glibc_measured_mb": round(glibc["peak_mb"], 1),
                   "glibc_error_pct": round(100 * (pred_mb - glibc["peak_mb"]) / glibc["peak_mb"], 1),
                   "seconds": round(res["seconds"], 1),
                   "trainable": res["trainable"], "predicted_trainable": est.trainable_params}
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| model | method | batch x len | trainable params (measured = predicted) | measured peak, allocator-neutral (MiB) "
          "| predicted (MiB) | error | measured peak, glibc defaults (MiB) | error vs glibc |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        same = "yes" if r["trainable"] == r["predicted_trainable"] else f"NO ({r['predicted_trainable']:,})"
        print(f"| {r['model']} | {r['method']} | {r['batch']} x {r['seq_len']} | {r['trainable']:,} ({same}) | "
              f"{r['measured_mb']:.0f} | {r['predicted_mb']:.0f} | {r['error_pct']:+.1f}% | "
              f"{r['glibc_measured_mb']:.0f} | {r['glibc_error_pct']:+.1f}% |")
    worst = max(abs(r["error_pct"]) for r in rows)
    print(f"\nworst absolute error (allocator-neutral): {worst:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
