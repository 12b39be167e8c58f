"""GPU check (issue 17): every GPU path of tunesmith, run once on one CUDA device in under 8 minutes.

On random-initialised models of real shapes (Llama-3.2-1B, Llama-3.1-8B; configs below, no weights needed),
in one process, section by section:

1. ``train <model> <method>``: LoRA, QLoRA, DoRA and full fine-tuning in bf16 through tunesmith's own entry point
   (``train_from_config`` with a RunConfig: the code users run), packed rows, completion-only loss. Asserts the
   loss is finite and decreasing and that every trainable tensor changed; prints tokens/s, MFU against the
   device's bf16 peak, and the measured peak memory beside the pre-flight estimate (ratio). Configurations the
   estimator says cannot fit are skipped with its reason (8B full fine-tuning needs ~16 bytes/parameter).
2. ``trl <model>`` / ``trl+liger <model>``: TRL's SFTTrainer on the same model, data and batch (LoRA), in the
   same process, as the baseline; the ratio tunesmith/TRL is printed. With Liger kernels if installed.
3. ``packed-attention``, ``generate``, ``serve``: block-diagonal SDPA attention on packed rows (against a leaky
   control), batched greedy generation, and a burst of requests (greedy and sampled, base and adapter) through
   the OpenAI-compatible server with continuous batching.
4. ``nccl``: tunesmith's data-parallel collectives and DDP on a one-rank NCCL group (a subprocess).

Each section prints its own result; a failing one prints its traceback and the next one runs (the exit status is
1 if any failed). A time guard skips what would not finish within ``--budget-s`` (default 450 s) and a watchdog
stops the process, with the summary, 20 s after it. ``--cpu-dry-run`` runs the same code on tiny models on the
CPU (bf16 too), which is what tests/test_gpu_check.py runs, so this script cannot arrive broken.

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json                 # on the GPU machine
    python benchmarks/gpu_check.py --wheels .gpu-wheels --out gpu_check.json  # install carried wheels first
    python benchmarks/gpu_check.py --cpu-dry-run                             # anywhere, about a minute

Needs on the device: torch (CUDA), transformers, peft, accelerate, safetensors, tokenizers, rich, matplotlib,
pydantic, pyyaml, numpy; fastapi + uvicorn + prometheus-client for ``serve``; trl (+ datasets) for the baseline;
liger-kernel and bitsandbytes optional. See benchmarks/README.md ("GPU check") for the wheels.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T_START = time.monotonic()
GIB = 2**30

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# ------------------------------------------------------------------------------------------------------------------
# what runs: model shapes (from the models' config.json files), workloads, time estimates

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_parameters={**LLAMA3_ROPE, "factor": 32.0}),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_parameters={**LLAMA3_ROPE, "factor": 8.0}),
}
# --cpu-dry-run: the same two models in miniature (tied / untied LM head, vocab larger than the tokenizer's)
TINY_ROPE = {**LLAMA3_ROPE, "original_max_position_embeddings": 1024}
TINY_SHAPES = {
    "llama-3.2-1b": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=4608, tie_word_embeddings=True,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, rope_parameters={**TINY_ROPE, "factor": 32.0}),
    "llama-3.1-8b": dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=4608, tie_word_embeddings=False,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, rope_parameters={**TINY_ROPE, "factor": 8.0}),
}
METHODS = ("lora", "qlora", "dora", "full")


@dataclass(frozen=True)
class Workload:
    """One training configuration per model: rows of ``seq_len`` tokens, ``warmup`` untimed + ``steps`` timed."""

    batch_size: int
    grad_accum: int
    seq_len: int
    warmup: int = 2
    steps: int = 6
    lr_adapter: float = 1e-3
    lr_full: float = 1e-4

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def rows(self) -> int:
        return self.total_steps * self.batch_size * self.grad_accum

    def lr(self, method: str) -> float:
        return self.lr_full if method == "full" else self.lr_adapter


WORKLOADS = {"llama-3.2-1b": Workload(batch_size=8, grad_accum=2, seq_len=2048),
             "llama-3.1-8b": Workload(batch_size=4, grad_accum=1, seq_len=2048)}
TINY_WORKLOADS = {"llama-3.2-1b": Workload(batch_size=2, grad_accum=2, seq_len=128, warmup=1, steps=3),
                  "llama-3.1-8b": Workload(batch_size=2, grad_accum=1, seq_len=128, warmup=1, steps=3)}

# rough seconds per section on the H200 (model loads included), for the time guard; 0 on the CPU dry run
EST_S = {"model llama-3.2-1b": 20, "model llama-3.1-8b": 60,
         "train llama-3.2-1b": 25, "train llama-3.2-1b full": 45, "train llama-3.1-8b": 50,
         "train llama-3.1-8b dora": 75, "train llama-3.1-8b qlora": 70,
         "trl llama-3.2-1b": 40, "trl llama-3.1-8b": 70,
         "packed-attention": 10, "generate": 20, "serve": 30, "nccl": 30}


class Skip(Exception):
    """The section cannot run here; the message says why."""


# ------------------------------------------------------------------------------------------------------------------
# set-up that must happen before tunesmith is imported


def install_wheels(folder: Path) -> Path:
    """Install the wheels in ``folder`` (no index, no dependency resolution) into ``folder/site`` and put that
    first on the path: the device has no network, so packages it lacks travel as wheels."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--wheels {folder}: no .whl files there (benchmarks/gpu_wheels.py makes the folder)")
    target = folder / "site"
    marker = target / ".installed"
    names = "\n".join(w.name for w in wheels)
    if not (marker.is_file() and marker.read_text() == names):
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                        "--disable-pip-version-check", "--target", str(target), *map(str, wheels)], check=True)
        marker.write_text(names)
        print(f"installed {len(wheels)} wheels into {target} in {time.monotonic() - t0:.0f}s", flush=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return target


def use_checkout_source() -> None:
    """Import tunesmith from this checkout (the device runs a copy of the working tree, nothing installed)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)


# ------------------------------------------------------------------------------------------------------------------
# data and tokenizer: synthetic, offline, the same on CPU and GPU

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|finetune_right_pad_id|>"]
# Llama-3 layout; prefix-stable, so completion-only labels are found in text as for any real chat model
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "gu", "ha", "ji", "ko", "la", "ma", "no",
             "pi", "qu", "re", "si", "to", "vu", "wa", "xe", "yo", "ze"]
SYSTEM_PROMPT = "You are a support assistant. Answer the customer's question briefly and accurately."


def make_records(n: int, *, seed: int = 0, scale: float = 1.0) -> list[dict]:
    """Chat records (system, user, assistant) over a made-up vocabulary; lengths vary (log-normal), so packing and
    padding matter, and answers are ~40% of the tokens, as in instruction data."""
    rng = random.Random(seed)
    vocab: set[str] = set()
    while len(vocab) < 2000:
        vocab.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    words = sorted(vocab)
    records = []
    for i in range(n):
        q = max(3, int(rng.lognormvariate(math.log(70 * scale), 0.5)))
        a = max(2, int(rng.lognormvariate(math.log(60 * scale), 0.8)))
        records.append({"id": f"ex-{i}", "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": " ".join(rng.choice(words) for _ in range(min(q, 400))) + "?"},
            {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(min(a, 500))) + "."},
        ]})
    return records


def build_tokenizer(records: list[dict], vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on the records, with special tokens and a chat template (ids stay below
    every model's vocabulary; what the models output beyond it decodes to nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((m["content"] for r in records for m in r["messages"]), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[1],
                                   pad_token=SPECIAL_TOKENS[4], chat_template=CHAT_TEMPLATE)


# ------------------------------------------------------------------------------------------------------------------
# the device: synchronisation, peak memory, peak FLOP/s


class Device:
    def __init__(self, cpu: bool):
        import torch

        self.cpu = cpu
        self.torch = torch.device("cpu" if cpu else "cuda")
        self.context_bytes = 0
        if not cpu:
            if not torch.cuda.is_available():
                raise SystemExit("no CUDA device visible: run on the GPU machine, or pass --cpu-dry-run")
            torch.cuda.init()
            a = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
            (a @ a).sum().item()  # cuBLAS handle and workspace
            free, total = torch.cuda.mem_get_info()
            self.context_bytes = total - free - torch.cuda.memory_reserved()

    def sync(self) -> None:
        if not self.cpu:
            import torch

            torch.cuda.synchronize()

    def release(self) -> None:
        gc.collect()
        if not self.cpu:
            import torch

            torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        self.release()
        if not self.cpu:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        """Peak memory since ``reset_peak``: on a GPU what nvidia-smi would show at the peak (the allocator's peak
        reservation + the CUDA context measured at start); on the CPU the process's peak RSS (whole run)."""
        from tunesmith.train.metrics import peak_memory_bytes

        if self.cpu:
            rss = peak_memory_bytes(self.torch)
            return {"bytes": rss, "note": "process peak RSS (whole run)"}
        import torch

        alloc, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        return {"bytes": reserved + self.context_bytes, "allocated": alloc, "reserved": reserved,
                "context": self.context_bytes}

    def resident_bytes(self) -> int:
        if self.cpu:
            return 0
        import torch

        return torch.cuda.memory_allocated()


def flops_text(x: float) -> str:
    return f"{x / 1e12:.0f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def measure_bf16_matmul_peak(device: Device, seconds: float = 1.0) -> float:
    """Achieved bf16 matmul FLOP/s of this device (8192^3 on a GPU; a small fp32 one on the CPU dry run)."""
    import torch

    if device.cpu:
        from tunesmith.train.metrics import measure_matmul_peak

        return measure_matmul_peak(seconds=0.2, n=256)
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        reps += 10
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------------------------
# random-initialised checkpoints of real shapes


def llama_config(shape: dict, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, attention_bias=False, mlp_bias=False,
                       hidden_act="silu", initializer_range=0.02, dtype="bfloat16")


class ModelStore:
    """Checkpoint folders (config, bf16 safetensors, tokenizer) of random-initialised models, written once on first
    use. Weights are initialised on the device (seconds, even for 8B) and loaded back by tunesmith's own loader,
    so every section goes through the same from_pretrained path (incl. 4-bit quantisation) a user's model does."""

    def __init__(self, root: Path, shapes: dict, tokenizer, device: Device):
        self.root, self.shapes, self.tokenizer, self.device = root, shapes, tokenizer, device
        self.dirs: dict[str, Path] = {}

    def built(self, key: str) -> bool:
        return key in self.dirs

    def config(self, key: str):
        return llama_config(self.shapes[key], self.tokenizer)

    def folder(self, key: str) -> Path:
        if key in self.dirs:
            return self.dirs[key]
        import torch
        from transformers import AutoModelForCausalLM

        t0 = time.monotonic()
        path = self.root / key
        torch.manual_seed(0)
        with torch.device(self.device.torch):
            model = AutoModelForCausalLM.from_config(self.config(key), dtype=torch.bfloat16)
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        n = sum(p.numel() for p in model.parameters())
        del model
        self.device.release()
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"  built {key}: {n / 1e6:,.1f}M parameters (random init, bf16), {size / GIB:.1f} GiB in {path} "
              f"({time.monotonic() - t0:.0f}s)", flush=True)
        self.dirs[key] = path
        return path


def default_model_root(need_bytes: int) -> Path:
    """/dev/shm when it has room (no disk I/O for 16 GiB of 8B weights), else the temp folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * need_bytes:
        return Path(tempfile.mkdtemp(prefix="tunesmith-gpu-check-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="tunesmith-gpu-check-"))


# ------------------------------------------------------------------------------------------------------------------
# sections: results, time guard, watchdog


@dataclass
class Result:
    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    reason: str = ""
    metrics: dict = field(default_factory=dict)


class Runner:
    """Runs sections in order: a failure prints its traceback and the next section runs; a section whose time
    estimate exceeds what is left of the budget is skipped with the reason."""

    def __init__(self, budget_s: float, device: Device | None):
        self.budget_s = budget_s
        self.device = device
        self.results: list[Result] = []
        self.current = ""

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - T_START)

    def run(self, name: str, est_s: float | None, fn, *args) -> Result:
        """``est_s``: seconds the section needs (None: set-up that always runs)."""
        self.current = name
        print(f"\n== {name} ==", flush=True)
        t0 = time.monotonic()
        if est_s is not None and self.left() < est_s:
            res = Result(name, "skipped", reason=f"time guard: {self.left():.0f}s of the {self.budget_s:.0f}s budget "
                                                 f"left, this section needs about {est_s:.0f}s")
        else:
            try:
                res = Result(name, "ok", metrics=fn(*args) or {})
            except Skip as e:
                res = Result(name, "skipped", reason=str(e))
            except Exception as e:  # noqa: BLE001 - report it and go on with the next section
                traceback.print_exc()
                sys.stdout.flush()
                res = Result(name, "failed", reason=f"{type(e).__name__}: {e}".strip()[:500])
        res.seconds = time.monotonic() - t0
        if self.device is not None:
            self.device.release()
            left_behind = self.device.resident_bytes()
            if left_behind > GIB // 2:
                print(f"  note: {left_behind / GIB:.1f} GiB still allocated on the GPU after this section")
        self.results.append(res)
        tail = f": {res.reason}" if res.reason else ""
        print(f"-- {name}: {res.status.upper() if res.status == 'failed' else res.status} "
              f"({res.seconds:.1f}s){tail}", flush=True)
        self.current = ""
        return res

    def get(self, name: str) -> Result | None:
        return next((r for r in self.results if r.name == name), None)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == "failed"]


def start_watchdog(runner: Runner, hard_s: float, finish) -> threading.Timer:
    """Stop the process at ``hard_s`` after start even if a section hangs, printing what is known so far."""

    def fire() -> None:
        print(f"\ntime guard: {hard_s:.0f}s reached during '{runner.current}', stopping here", flush=True)
        runner.results.append(Result(runner.current or "?", "failed", reason="stopped by the time guard"))
        with contextlib.suppress(Exception):
            finish()
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(max(1.0, hard_s - (time.monotonic() - T_START)), fire)
    timer.daemon = True
    timer.start()
    return timer


# ------------------------------------------------------------------------------------------------------------------
# shared context of a run


@dataclass
class Schedule:
    """What each optimizer step of tunesmith's run processes (same tokenizer, packing and seed as the run), to
    count non-pad tokens exactly as for TRL (train_metrics counts positions of packed rows, padding included)."""

    examples: list
    avg_example: float
    nonpad: list[int]
    positions: list[int]
    labels: list[int]

    def check(self, history: list[dict]) -> None:
        for rec in history:
            k = rec["step"] - 1
            if (rec["tokens"], rec["label_tokens"]) != (self.positions[k], self.labels[k]):
                raise AssertionError(f"step {rec['step']}: the run processed {rec['tokens']} positions / "
                                     f"{rec['label_tokens']} labels, the schedule says {self.positions[k]} / "
                                     f"{self.labels[k]}: token counts would be wrong")


class Context:
    def __init__(self, args, device: Device, runner: Runner):
        self.args, self.device, self.runner = args, device, runner
        self.cpu = args.cpu_dry_run
        self.shapes = TINY_SHAPES if self.cpu else SHAPES
        self.workloads = TINY_WORKLOADS if self.cpu else WORKLOADS
        self.models_run = [m for m in args.models.split(",") if m]
        self.work: Path | None = None  # run folders, next to the checkpoints (see prepare)
        self.records: list[dict] = []
        self.tokenizer = None
        self.store: ModelStore | None = None
        self.plan: dict[tuple[str, str], dict] = {}
        self.schedules: dict[str, Schedule] = {}
        self.peak_flops: float | None = None  # tunesmith's MFU denominator (datasheet bf16 peak on a GPU)
        self.measured_flops: float | None = None
        self.adapters: dict[str, Path] = {}
        self.env: dict = {}

    def est(self, name: str, *, model: str | None = None) -> float:
        """Seconds the time guard reserves for a section (plus building its model's checkpoint if not done)."""
        if self.cpu:
            return 0.0
        base = EST_S.get(name, EST_S.get(" ".join(name.split()[:2]), 30))
        if model and self.store and not self.store.built(model):
            base += EST_S[f"model {model}"]
        return base

    def model_config(self, key: str):
        from tunesmith.models.config import ModelConfig

        return ModelConfig(name_or_path=str(self.store.folder(key)), dtype="bfloat16",
                           device="cpu" if self.cpu else "cuda", attn_implementation="sdpa")

    def run_config(self, key: str, method: str):
        from tunesmith.config import build_config

        wl = self.workloads[key]
        train = {"method": method, "max_steps": wl.total_steps, "batch_size": wl.batch_size,
                 "grad_accum": wl.grad_accum, "max_seq_length": wl.seq_len, "packing": True,
                 "completion_only_loss": True, "lr": wl.lr(method), "scheduler": "constant", "warmup_ratio": 0.0,
                 "save_every_epoch": False, "load_best_at_end": False, "logging_steps": 1, "preflight": True}
        return build_config({"name": f"{key}-{method}", "output_dir": str(self.work), "seed": 0,
                             "model": self.model_config(key).model_dump(), "train": train})

    def schedule(self, key: str) -> Schedule:
        if key in self.schedules:
            return self.schedules[key]
        from tunesmith.train.batching import epoch_batches
        from tunesmith.train.tokenize import tokenize_records

        wl = self.workloads[key]
        examples, report = tokenize_records(self.tokenizer, self.records, max_seq_length=wl.seq_len)
        probe = epoch_batches(examples, batch_size=wl.batch_size, packing=True, row_length=wl.seq_len, pad_id=-1,
                              seed=0, epoch=0)
        g, n = wl.grad_accum, wl.total_steps
        if len(probe) < n * g:
            raise RuntimeError(f"{len(probe)} micro-batches of data, {n * g} needed: make more records")
        steps = [probe[k * g:(k + 1) * g] for k in range(n)]
        sched = Schedule(
            examples=examples, avg_example=sum(len(e.input_ids) for e in examples) / len(examples),
            nonpad=[sum(int((b.input_ids != -1).sum()) for b in s) for s in steps],
            positions=[sum(b.input_ids.numel() for b in s) for s in steps],
            labels=[sum(b.n_label_tokens for b in s) for s in steps])
        self.schedules[key] = sched
        return sched


# ------------------------------------------------------------------------------------------------------------------
# section: environment and plan


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def section_env(ctx: Context) -> dict:
    import torch
    import transformers

    from tunesmith.train.metrics import device_peak_flops

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__, "mode": "cpu-dry-run" if ctx.cpu else "gpu"}
    for pkg in ("peft", "accelerate", "trl", "datasets", "liger-kernel", "bitsandbytes", "fastapi", "uvicorn",
                "pydantic", "triton"):
        env[pkg] = package_version(pkg)
    if not ctx.cpu:
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / GIB,
                   bf16=torch.cuda.is_bf16_supported(), cuda_context_gib=ctx.device.context_bytes / GIB,
                   sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                   sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled())
    else:
        env["device"] = "cpu"
    ctx.peak_flops = device_peak_flops(ctx.device.torch)
    ctx.measured_flops = measure_bf16_matmul_peak(ctx.device)
    env.update(peak_flops=ctx.peak_flops, measured_matmul_flops=ctx.measured_flops)
    for k, v in env.items():
        print(f"  {k}: {v}")
    if ctx.peak_flops is None:
        print("  (tunesmith has no datasheet peak for this device: MFU is against the measured matmul peak)")
        ctx.peak_flops = ctx.measured_flops
    ctx.env = env
    return env


def section_plan(ctx: Context) -> dict:
    """tunesmith's estimator on the real shapes (the H200's memory, or the free memory of this GPU): which
    configurations run. The dry run follows the same plan, so it runs what the GPU run would."""
    from tunesmith.advise.arch import Architecture, load_architecture_catalog
    from tunesmith.advise.hardware import get_gpu
    from tunesmith.advise.memory import estimate_memory, fits
    from tunesmith.train.config import TrainConfig

    if ctx.cpu:
        capacity, where = get_gpu("H200").memory_bytes, "an H200 (tunesmith's GPU catalogue)"
    else:
        import torch

        capacity, where = torch.cuda.mem_get_info()[0], "this GPU's free memory"
    catalog = load_architecture_catalog()
    lora = TrainConfig().lora
    out = {}
    print(f"  pre-flight estimates for the real shapes, bf16, on {where} ({capacity / GIB:.1f} GiB):")
    for key in ctx.models_run:
        real = dict(SHAPES[key])
        ref = catalog.get(key, {})
        for dim, ours in (("hidden_size", "hidden_size"), ("num_layers", "num_hidden_layers"),
                          ("intermediate_size", "intermediate_size"), ("num_kv_heads", "num_key_value_heads")):
            if dim in ref and ref[dim] != real[ours]:
                raise AssertionError(f"{key}: {ours}={real[ours]} here but {ref[dim]} in tunesmith's catalogue")
        arch = Architecture.from_transformers_config(llama_config(real, ctx.tokenizer))
        wl = WORKLOADS[key]
        for method in METHODS:
            est = estimate_memory(arch, method=method, batch_size=wl.batch_size, seq_len=wl.seq_len, dtype="bfloat16",
                                  optimizer="adamw", lora_r=lora.r, lora_targets=lora.target_modules,
                                  lora_dropout=lora.dropout, device="cuda")
            ok = fits(est, capacity, headroom=0.05)  # the pre-flight's own rule
            reason = "" if ok else (f"pre-flight estimate {est.total_gib:.1f} GiB ({est.peak_phase}) does not fit "
                                    f"{capacity / GIB:.1f} GiB with 5% headroom: skipped, as tunesmith would refuse it")
            ctx.plan[(key, method)] = {"estimate_gib": est.total_gib, "fits": ok, "reason": reason}
            out[f"{key} {method}"] = ctx.plan[(key, method)]
            print(f"    {key:<13} {method:<5} batch {wl.batch_size} x {wl.seq_len}: {est.total_gib:6.1f} GiB "
                  f"{'runs' if ok else 'SKIP (does not fit)'}")
    return out


# ------------------------------------------------------------------------------------------------------------------
# section: training through tunesmith's entry point


@contextlib.contextmanager
def captured_model():
    """Record the model ``train_from_config`` builds (and a CPU copy of its trainable tensors) by wrapping
    tunesmith's own ``build_trainable_model``; the run itself is untouched."""
    import tunesmith.train.run as run_mod

    real = run_mod.build_trainable_model
    box: dict = {}

    def capturing(cfg):
        model, device = real(cfg)
        box["model"] = model
        box["before"] = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        return model, device

    run_mod.build_trainable_model = capturing
    try:
        yield box
    finally:
        run_mod.build_trainable_model = real


def trainable_changed(box: dict) -> tuple[int, int, list[str]]:
    import torch

    model, before = box["model"], box["before"]
    unchanged = [n for n, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[n].to(p.device))]
    return len(before) - len(unchanged), len(before), unchanged


def check_loss(losses: list[float]) -> str:
    if not losses or not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"loss is not finite: {losses}")
    tail = sum(losses[-2:]) / len(losses[-2:])
    if not tail < losses[0]:
        raise AssertionError(f"loss is not decreasing: {[round(x, 4) for x in losses]}")
    return f"loss {losses[0]:.3f} -> {tail:.3f} (finite, decreasing)"


def require_bitsandbytes(device: Device) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise Skip("bitsandbytes: not installed, QLoRA skipped (its CUDA wheel is 41 MiB; benchmarks/README.md "
                   "says which wheels fit the 64 MiB)") from None


def section_train(ctx: Context, key: str, method: str) -> dict:
    from transformers import AutoConfig

    from tunesmith.data.prepare import PreparedData
    from tunesmith.models.loading import resolve_dtype
    from tunesmith.train.metrics import flops_per_token
    from tunesmith.train.preflight import DoesNotFitError, check_memory
    from tunesmith.train.run import train_from_config

    plan = ctx.plan[(key, method)]
    if not plan["fits"]:
        raise Skip(plan["reason"])
    if method == "qlora":
        require_bitsandbytes(ctx.device)
    wl, sched = ctx.workloads[key], ctx.schedule(key)
    cfg = ctx.run_config(key, method)
    dev = ctx.device.torch
    try:  # tunesmith's pre-flight, as train_from_config runs it (it runs it again inside)
        pf = check_memory(cfg, AutoConfig.from_pretrained(cfg.model.name_or_path), dev, resolve_dtype("bfloat16", dev))
    except DoesNotFitError as e:
        raise Skip(f"pre-flight refused it: {e.message}") from None
    with captured_model() as box:
        ctx.device.reset_peak()
        train_from_config(cfg, PreparedData(train=ctx.records, validation=[], test=[]))
        ctx.device.sync()
        peak = ctx.device.peak()
        changed, total, unchanged = trainable_changed(box)
        fpt = flops_per_token(box["model"], method=method, seq_len=int(sched.avg_example))
        box.clear()
    history = [json.loads(x) for x in (cfg.run_dir / "train_metrics.jsonl").read_text().splitlines() if x.strip()]
    sched.check(history)
    loss_line = check_loss([r["loss"] for r in history])
    if unchanged:
        raise AssertionError(f"{len(unchanged)} of {total} trainable tensors did not change: {unchanged[:5]}")
    timed = [r for r in history if r["step"] > wl.warmup]
    tok_s = sum(sched.nonpad[r["step"] - 1] for r in timed) / sum(r["step_s"] for r in timed)
    m = {"tokens_per_s": tok_s, "mfu": fpt * tok_s / ctx.peak_flops, "flops_per_token": fpt,
         "mfu_vs_measured_matmul": fpt * tok_s / ctx.measured_flops, "losses": [r["loss"] for r in history],
         "trainable_tensors_changed": f"{changed}/{total}", "peak_bytes": peak["bytes"], "peak": peak,
         "estimate_bytes": pf.estimate_bytes, "estimate_over_measured": pf.estimate_bytes / peak["bytes"],
         "padding_share": 1 - sum(sched.nonpad) / sum(sched.positions)}
    if method != "full":
        ctx.adapters[key] = cfg.run_dir / "adapter"
    shutil.rmtree(cfg.run_dir / "model", ignore_errors=True)  # full fine-tuning's fp32 weights: GiBs, not needed
    print(f"  {loss_line}; {changed}/{total} trainable tensors changed")
    print(f"  {tok_s:,.0f} tokens/s (non-pad, {wl.steps} timed steps after {wl.warmup}), MFU {100 * m['mfu']:.1f}% "
          f"of {flops_text(ctx.peak_flops)} ({100 * m['mfu_vs_measured_matmul']:.1f}% of the measured matmul peak)")
    print(f"  peak memory {peak['bytes'] / GIB:.2f} GiB"
          + (f" (allocated {peak['allocated'] / GIB:.2f}, reserved {peak['reserved'] / GIB:.2f} + CUDA context "
             f"{peak['context'] / GIB:.2f})" if "allocated" in peak else f" ({peak['note']})")
          + f"; pre-flight estimate {pf.estimate_bytes / GIB:.2f} GiB = {m['estimate_over_measured']:.2f}x measured")
    return m


# ------------------------------------------------------------------------------------------------------------------
# section: TRL's SFTTrainer, same model, data and batch


def require_trl(ctx: Context, liger: bool) -> None:
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as e:
        raise Skip(f"TRL: not installed, skipped ({e.name} missing; pip install 'trl>=1.10,<2')") from None
    if liger:
        if ctx.cpu:
            raise Skip("Liger: its Triton kernels need CUDA, skipped in the CPU dry run")
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            raise Skip("Liger: not installed, skipped (pip install liger-kernel)") from None


def trl_trainer(ctx: Context, key: str, liger: bool, model, counts: dict):
    """SFTTrainer at its best here: prompt/completion data (completion-only loss), bfd packing into padding-free
    rows, bf16, no gradient checkpointing; batch, accumulation, length, LR schedule and LoRA as tunesmith's run."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.train.methods import lora_config

    wl = ctx.workloads[key]
    msgs = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in ctx.records]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in msgs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames gradient_checkpointing; TRL's is True
        args = SFTConfig(
            output_dir=str(ctx.work / f"trl-{key}{'-liger' if liger else ''}"),
            per_device_train_batch_size=wl.batch_size, gradient_accumulation_steps=wl.grad_accum,
            max_steps=wl.total_steps, max_length=wl.seq_len, learning_rate=wl.lr_adapter, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0, bf16=True, fp16=False,
            gradient_checkpointing=False, packing=True, packing_strategy="bfd", padding_free=True,
            completion_only_loss=True, report_to="none", save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, logging_steps=1, use_liger_kernel=liger, use_cpu=ctx.cpu)
    if args.gradient_checkpointing or not args.bf16:
        raise AssertionError(f"TRL config not as intended: {args.gradient_checkpointing=} {args.bf16=}")
    device = ctx.device

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training and wl.warmup < self.state.global_step + 1 <= wl.total_steps:
                mask = inputs.get("attention_mask")
                counts["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return out

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (wl.warmup, wl.total_steps):
                device.sync()
                counts["t0" if state.global_step == wl.warmup else "t1"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                counts["losses"].append(float(logs["loss"]))

    cfg = ctx.run_config(key, "lora")
    return Counting(model=model, args=args, train_dataset=dataset, processing_class=ctx.tokenizer,
                    peft_config=lora_config(cfg), callbacks=[Timer()])


def section_trl(ctx: Context, key: str, liger: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.train.metrics import flops_per_token

    require_trl(ctx, liger)
    label = "TRL+Liger" if liger else "TRL"
    sched = ctx.schedule(key)
    ctx.device.reset_peak()
    model = AutoModelForCausalLM.from_pretrained(ctx.store.folder(key), dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").to(ctx.device.torch)
    model.config.use_cache = False
    fpt = flops_per_token(model, method="lora", seq_len=int(sched.avg_example))  # the number tunesmith's side uses
    counts = {"tokens": 0, "losses": []}
    trainer = trl_trainer(ctx, key, liger, model, counts)
    trainer.train()
    peak = ctx.device.peak()
    tok_s = counts["tokens"] / (counts["t1"] - counts["t0"])
    m = {"tokens_per_s": tok_s, "mfu": fpt * tok_s / ctx.peak_flops, "peak_bytes": peak["bytes"], "peak": peak,
         "losses": counts["losses"], "padding_free": bool(trainer.padding_free),
         "completion_only_loss": bool(trainer.completion_only_loss)}
    del trainer, model
    ours = ctx.runner.get(f"train {key} lora")
    if ours and ours.status == "ok":
        m["tunesmith_over_trl"] = ours.metrics["tokens_per_s"] / tok_s
        print(f"  {label} ratio {key} lora: tunesmith/{label} = {m['tunesmith_over_trl']:.2f}x "
              f"(tunesmith {ours.metrics['tokens_per_s']:,.0f} tok/s, {label} {tok_s:,.0f} tok/s)")
    else:
        print(f"  {label} ratio {key} lora: no tunesmith LoRA result to compare with")
    print(f"  {label}: {tok_s:,.0f} tokens/s (non-pad), MFU {100 * m['mfu']:.1f}%, peak memory "
          f"{peak['bytes'] / GIB:.2f} GiB, padding_free={m['padding_free']}, losses "
          f"{[round(x, 3) for x in counts['losses']]}")
    return m


# ------------------------------------------------------------------------------------------------------------------
# sections: packed attention, generation, serving


def layer0_attention(model, batch) -> "torch.Tensor":  # noqa: F821
    """Output of the first layer's self-attention for ``batch`` (packed rows: positions restart, no mask)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen = {}
    hook = base.get_decoder().layers[0].self_attn.register_forward_hook(
        lambda _m, _a, out: seen.__setitem__("o", out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            base.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                               attention_mask=batch.attention_mask, use_cache=False)
    finally:
        hook.remove()
    return seen["o"].float()


def section_packed_attention(ctx: Context, key: str) -> dict:
    """Two examples packed in one row must give the second the attention output it gets alone (SDPA with the
    block-diagonal mask transformers derives from restarting positions); a row with continuous positions (plain
    causal attention, the second example sees the first) is the control that shows the check can fail."""
    import torch

    from tunesmith.models.loading import load_model
    from tunesmith.train.batching import collate_packed

    examples = sorted(ctx.schedule(key).examples, key=lambda e: len(e.input_ids))
    first, second = examples[len(examples) // 2], examples[len(examples) // 3]
    model = load_model(ctx.model_config(key)).eval()
    pad = ctx.tokenizer.pad_token_id
    packed = collate_packed([[first, second]], pad).to(ctx.device.torch)
    alone = collate_packed([[second]], pad).to(ctx.device.torch)
    leaky = collate_packed([[first, second]], pad)
    leaky.position_ids = torch.arange(leaky.input_ids.shape[1]).unsqueeze(0)
    leaky = leaky.to(ctx.device.torch)
    n1, n2 = len(first.input_ids), len(second.input_ids)
    ref = layer0_attention(model, alone)[:, :n2]

    def rel(x):
        return float((x[:, n1:n1 + n2] - ref).norm() / ref.norm())

    err, leak = rel(layer0_attention(model, packed)), rel(layer0_attention(model, leaky))
    print(f"  example of {n2} tokens packed after one of {n1}: relative difference of its attention output "
          f"{err:.2e} (bf16 noise); with plain causal attention over the row (control) {leak:.2e}")
    if not (err < 0.05 and leak > 5 * err):
        raise AssertionError(f"packed examples are not isolated: {err:.3e} vs control {leak:.3e}")
    return {"relative_difference": err, "control_difference": leak}


def section_generate(ctx: Context, key: str) -> dict:
    from tunesmith.evaluate.generate import generate_greedy, render_prompts
    from tunesmith.models.loading import load_model, load_tokenizer

    mc = ctx.model_config(key)
    tokenizer, model = load_tokenizer(mc), load_model(mc).eval()
    n, new_tokens, batch = (8, 8, 4) if ctx.cpu else (64, 64, 32)
    prompts = render_prompts(tokenizer, [r["messages"][:-1] for r in ctx.records[:n]])
    generated = {"tokens": 0}
    real_generate = model.generate

    def counting_generate(*a, **kw):
        out = real_generate(*a, **kw)
        new = out[:, kw["input_ids"].shape[1]:]
        generated["tokens"] += int((new != kw["pad_token_id"]).sum())  # rows that stopped are padded
        return out

    model.generate = counting_generate
    generate_greedy(model, tokenizer, prompts[:2], max_new_tokens=2)  # warm-up
    generated["tokens"] = 0
    ctx.device.sync()
    t0 = time.perf_counter()
    outs = generate_greedy(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch)
    ctx.device.sync()
    dt = time.perf_counter() - t0
    if len(outs) != n or not all(isinstance(o, str) for o in outs):
        raise AssertionError(f"expected {n} completions, got {len(outs)}")
    print(f"  {n} prompts (shared system prompt, mean {sum(map(len, prompts)) / n:.0f} tokens), batch {batch}, "
          f"{generated['tokens']} new tokens in {dt:.2f}s = {generated['tokens'] / dt:,.0f} tokens/s")
    return {"prompts": n, "new_tokens": generated["tokens"], "seconds": dt, "tokens_per_s": generated["tokens"] / dt}


def post_json(url: str, body: dict, timeout: float) -> tuple[int, dict, float]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")[:300]}, time.perf_counter() - t0


def serve_requests(ctx: Context, model_names: list[str]) -> list[dict]:
    """Every third request samples (temperature 0.8, top_p 0.9, seeded); models alternate base / adapter."""
    n = 8 if ctx.cpu else 32
    out = []
    for i, rec in enumerate(ctx.records[:n]):
        body = {"model": model_names[i % len(model_names)], "messages": rec["messages"][:-1],
                "max_tokens": 8 if ctx.cpu else 32, "temperature": 0.0}
        if i % 3 == 2:
            body.update(temperature=0.8, top_p=0.9, seed=i)
        out.append(body)
    return out


def section_serve(ctx: Context, key: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise Skip(f"serving needs fastapi and uvicorn: {e.name} not installed") from None
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.runner import ServerThread, build_state

    adapter = ctx.adapters.get(key)
    names = ["base"] + (["gpu-check"] if adapter else [])
    cfg = ServeConfig(auth=False, adapters={"gpu-check": str(adapter)} if adapter else {}, max_batch_size=16,
                      max_concurrent_per_key=64, request_timeout_s=120)
    state = build_state(cfg, ctx.model_config(key), method="lora")
    rows_seen: list[int] = []
    observe = state.engine.observe_batch
    state.engine.observe_batch = lambda n: (rows_seen.append(n), observe(n))
    bodies = serve_requests(ctx, names)
    with ServerThread(state) as server:
        url = server.url + "/v1/chat/completions"
        status, _, _ = post_json(url, {**bodies[0], "max_tokens": 2}, 120)  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: post_json(url, b, 120), bodies))
        wall = time.perf_counter() - t0
    bad = [(b["model"], b["temperature"], s, a) for b, (s, a, _) in zip(bodies, answers, strict=True) if s != 200]
    if status != 200 or bad:
        raise AssertionError(f"{len(bad)} of {len(bodies)} requests failed: {bad[:3]}")
    finish = {a["choices"][0]["finish_reason"] for _, a, _ in answers}
    tokens = sum(a["usage"]["completion_tokens"] for _, a, _ in answers)
    lat = sorted(t for _, _, t in answers)
    m = {"requests": len(bodies), "sampled": sum(b["temperature"] > 0 for b in bodies), "models": names,
         "wall_s": wall, "requests_per_s": len(bodies) / wall, "tokens_per_s": tokens / wall,
         "p50_s": lat[len(lat) // 2], "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
         "max_rows_per_forward": max(rows_seen), "finish_reasons": sorted(finish)}
    print(f"  {len(bodies)} requests ({m['sampled']} sampled; models {', '.join(names)}) from 16 clients: all 200, "
          f"{m['requests_per_s']:.1f} req/s, {m['tokens_per_s']:,.0f} tokens/s, p50 {m['p50_s']:.2f}s, "
          f"p95 {m['p95_s']:.2f}s, up to {m['max_rows_per_forward']} rows per forward")
    return m


# ------------------------------------------------------------------------------------------------------------------
# section: NCCL (a subprocess: a process group is once per process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_nccl(ctx: Context) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--nccl-worker"] + (["--cpu-dry-run"] if ctx.cpu else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(30.0, min(180.0, ctx.runner.left())))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("NCCL-WORKER ")]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise AssertionError(f"the NCCL worker exited with {proc.returncode}")
    m = json.loads(lines[-1].removeprefix("NCCL-WORKER "))
    print(f"  {m['backend']} group of 1 rank: Distributed.global_sum = {m['global_sum']}, barrier ok; DDP-wrapped "
          f"training through train_loop, losses {[round(x, 3) for x in m['losses']]}")
    return m


def nccl_worker(cpu: bool) -> None:
    """tunesmith's data-parallel path on a 1-rank group: the process group as init_distributed makes it under
    torchrun, DDP through setup_data_parallel, and train_loop. Distributed.world_size is set to 2 so the loop's
    own collectives (global_sum on every step, barrier) run instead of taking the 1-process shortcut; the
    1-rank group answers them."""
    import torch

    use_checkout_source()
    from tunesmith.models.loading import resolve_device
    from tunesmith.models.tiny import build_tiny_llama
    from tunesmith.train.batching import epoch_batches
    from tunesmith.train.loop import train_loop
    from tunesmith.train.parallel import Distributed, local_device, setup_data_parallel
    from tunesmith.train.tokenize import tokenize_records

    device = local_device(resolve_device("cpu" if cpu else "cuda"))
    backend = "gloo" if cpu else "nccl"
    torch.distributed.init_process_group(backend)
    try:
        dist = Distributed(rank=0, world_size=2, strategy="ddp")
        total = dist.global_sum(3)
        assert total == 3 and isinstance(total, int), total
        dist.barrier()
        records = make_records(32, scale=0.2)
        tokenizer = build_tokenizer(records, vocab_size=1024)
        examples, _ = tokenize_records(tokenizer, records, max_seq_length=256)
        model = build_tiny_llama(tokenizer).to(device)
        optimizer = setup_data_parallel(model, dist, device, lambda: torch.optim.AdamW(model.parameters(), lr=1e-3),
                                        None)
        state = train_loop(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                           epoch_batches=lambda e: epoch_batches(examples, batch_size=2, packing=True, row_length=256,
                                                                 pad_id=tokenizer.pad_token_id, seed=0, epoch=e),
                           total_steps=3, grad_accum=1, device=device, dist=dist)
        losses = [r["loss"] for r in state.history]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
        print("NCCL-WORKER " + json.dumps({"backend": backend, "global_sum": total, "losses": losses}), flush=True)
    finally:
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------------
# summary


def summary_rows(ctx: Context) -> list[dict]:
    rows = []
    for key in ctx.models_run:
        for method in METHODS:
            r = ctx.runner.get(f"train {key} {method}")
            if r is None:
                continue
            m = r.metrics
            row = {"config": f"{key} {method}", "status": r.status, "tokens_per_s": m.get("tokens_per_s"),
                   "mfu": m.get("mfu"), "peak_gib": m["peak_bytes"] / GIB if "peak_bytes" in m else None,
                   "estimate_gib": m["estimate_bytes"] / GIB if "estimate_bytes" in m else None,
                   "estimate_over_measured": m.get("estimate_over_measured")}
            for label, name in (("trl", f"trl {key}"), ("trl_liger", f"trl+liger {key}")):
                t = ctx.runner.get(name)
                if method == "lora" and t is not None and t.status == "ok":
                    row[f"over_{label}"] = t.metrics.get("tunesmith_over_trl")
            rows.append(row)
        for name in (f"trl {key}", f"trl+liger {key}"):
            r = ctx.runner.get(name)
            if r is not None:
                m = r.metrics
                rows.append({"config": f"{key} lora ({name.split()[0].upper()})", "status": r.status,
                             "tokens_per_s": m.get("tokens_per_s"), "mfu": m.get("mfu"),
                             "peak_gib": m["peak_bytes"] / GIB if "peak_bytes" in m else None})
    return rows


def print_summary(ctx: Context) -> None:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    print("\n== summary ==")
    head = (f"{'config':<28} {'status':<8} {'tokens/s':>10} {'MFU%':>6} {'peak GiB':>9} {'est GiB':>8} "
            f"{'est/meas':>9} {'x TRL':>6} {'x Liger':>8}")
    print(head)
    print("-" * len(head))
    for r in summary_rows(ctx):
        print(f"{r['config']:<28} {r['status']:<8} {f(r.get('tokens_per_s'), ',.0f'):>10} "
              f"{f(r['mfu'] * 100 if r.get('mfu') is not None else None, '.1f'):>6} {f(r.get('peak_gib'), '.2f'):>9} "
              f"{f(r.get('estimate_gib'), '.2f'):>8} {f(r.get('estimate_over_measured'), '.2f'):>9} "
              f"{f(r.get('over_trl'), '.2f'):>6} {f(r.get('over_trl_liger'), '.2f'):>8}")
    peak = flops_text(ctx.peak_flops) if ctx.peak_flops else "?"
    print(f"(MFU against {peak}; peak GiB on a GPU = peak reserved + CUDA context, on the CPU the process's peak "
          "RSS; est GiB = tunesmith's pre-flight estimate; x TRL = tunesmith tokens/s over TRL's, same model, data, "
          "batch)")
    print("\nsections:")
    for r in ctx.runner.results:
        print(f"  {r.status:<8} {r.name:<28} {r.seconds:6.1f}s  {r.reason[:150]}")
    print(f"total {time.monotonic() - T_START:.0f}s; {len(ctx.runner.failed)} failed")


def write_json(ctx: Context, path: Path | None) -> None:
    if not path:
        return
    out = {"mode": "cpu-dry-run" if ctx.cpu else "gpu", "env": ctx.env, "seconds": time.monotonic() - T_START,
           "workloads": {k: asdict(v) for k, v in ctx.workloads.items()}, "summary": summary_rows(ctx),
           "sections": [asdict(r) for r in ctx.runner.results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(path)
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------------------------------
# main


def sections(ctx: Context) -> list[tuple[str, float, object, tuple]]:
    """(name, seconds to reserve, function, args) in order: the first model's sections first, so a short budget
    still covers every kind of path once."""
    out = []
    for i, key in enumerate(ctx.models_run):
        for method in METHODS:
            name = f"train {key} {method}"
            out.append((name, lambda n=name, k=key: ctx.est(n, model=k), section_train, (ctx, key, method)))
        for liger in (False, True):
            name = f"{'trl+liger' if liger else 'trl'} {key}"
            out.append((name, lambda k=key: ctx.est(f"trl {k}", model=k), section_trl, (ctx, key, liger)))
        if i == 0:
            out += [(f"packed-attention {key}", lambda: ctx.est("packed-attention"), section_packed_attention, (ctx, key)),
                    (f"generate {key}", lambda: ctx.est("generate"), section_generate, (ctx, key)),
                    (f"serve {key}", lambda: ctx.est("serve"), section_serve, (ctx, key)),
                    ("nccl", lambda: ctx.est("nccl"), section_nccl, (ctx,))]
    return out


def prepare(ctx: Context) -> None:
    """Records, tokenizer and the model store, sized for the largest workload."""
    import torch

    sample = make_records(200, seed=1)
    ctx.tokenizer = build_tokenizer(sample)
    scale = 0.12 if ctx.cpu else 1.0
    probe = [ctx.tokenizer.apply_chat_template(r["messages"], tokenize=False)
             for r in make_records(100, seed=2, scale=scale)]
    mean_tokens = sum(len(ids) for ids in ctx.tokenizer(probe, add_special_tokens=False)["input_ids"]) / len(probe)
    need = max(ctx.workloads[k].rows * ctx.workloads[k].seq_len for k in ctx.models_run)
    ctx.records = make_records(int(1.3 * need / mean_tokens) + 16, seed=0, scale=scale)
    for key in ctx.models_run:
        ctx.schedule(key)
    # bf16 checkpoints + the 1B full fine-tuning's fp32 model folder (deleted after its section)
    need_bytes = 0 if ctx.cpu else sum(2 * llama_param_count(SHAPES[k]) for k in ctx.models_run) + 6 * GIB
    root = Path(ctx.args.model_dir) if ctx.args.model_dir else default_model_root(need_bytes)
    ctx.work = root / "runs"
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.store = ModelStore(root, ctx.shapes, ctx.tokenizer, ctx.device)
    print(f"  {len(ctx.records)} records; tokenizer {len(ctx.tokenizer)} tokens; models in {root}; runs in {ctx.work}; "
          f"torch threads {torch.get_num_threads()}")


def llama_param_count(shape: dict) -> int:
    h, i, n, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return n * layer + v * h * (1 if shape["tie_word_embeddings"] else 2) + h


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny models on the CPU, same code path (for the test)")
    p.add_argument("--json", "--out", dest="json", type=Path, help="write the results (JSON) here")
    p.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated subset of {','.join(SHAPES)}")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="seconds from start after which no section starts that would not finish (default 450)")
    p.add_argument("--hard-limit-s", type=float, default=None, help="watchdog: stop here (default budget + 20 s)")
    p.add_argument("--wheels", type=Path, help="folder of wheels to install first (see benchmarks/gpu_wheels.py)")
    p.add_argument("--model-dir", help="where to write the random-initialised checkpoints (default /dev/shm or tmp)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints and run folders")
    p.add_argument("--nccl-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m and m not in SHAPES]
    if unknown:
        p.error(f"unknown model(s) {unknown}: choose from {', '.join(SHAPES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels.resolve())
    use_checkout_source()
    if args.nccl_worker:
        nccl_worker(args.cpu_dry_run)
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    runner = Runner(args.budget_s, None)
    device = Device(args.cpu_dry_run)
    runner.device = device
    ctx = Context(args, device, runner)

    def finish() -> None:
        print_summary(ctx)
        write_json(ctx, args.json)

    start_watchdog(runner, args.hard_limit_s or args.budget_s + 20, finish)
    print(f"tunesmith GPU check ({'CPU dry run, tiny models' if ctx.cpu else 'CUDA'}), models {', '.join(ctx.models_run)}, "
          f"budget {args.budget_s:.0f}s", flush=True)
    runner.run("env", None, section_env, ctx)
    runner.run("data", None, prepare, ctx)
    if runner.get("data").status != "ok" or runner.get("env").status != "ok":
        finish()
        return 1
    runner.run("plan", None, section_plan, ctx)
    for name, est, fn, fn_args in sections(ctx):
        runner.run(name, est(), fn, *fn_args)
    finish()
    if not args.keep and ctx.store:
        shutil.rmtree(ctx.store.root if not args.model_dir else ctx.work, ignore_errors=True)
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
