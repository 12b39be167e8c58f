"""GPU check (issue 17): every GPU path of tunesmith, run once on one CUDA device in under 8 minutes.

On random-initialised models of real shapes (Llama-3.2-1B, Llama-3.1-8B; gpucheck/shapes.py, no weights needed),
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
CPU (bf16 too), which is what tests/test_benchmarks/test_gpu_check.py runs, so this script cannot arrive broken.

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json                 # on the GPU machine
    python benchmarks/gpu_check.py --wheels .gpu-wheels --out gpu_check.json  # install carried wheels first
    python benchmarks/gpu_check.py --cpu-dry-run                             # anywhere, about a minute

Needs on the device: torch (CUDA), transformers, peft, accelerate, safetensors, tokenizers, rich, matplotlib,
pydantic, pyyaml, numpy; fastapi + uvicorn + prometheus-client for ``serve``; trl (+ datasets) for the baseline;
liger-kernel and bitsandbytes optional. See benchmarks/README.md ("GPU check") for the wheels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path

T_START = time.monotonic()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from gpucheck.bootstrap import install_wheels, use_checkout_source  # noqa: E402
from gpucheck.context import Context, ModelStore, default_model_root  # noqa: E402
from gpucheck.data import build_tokenizer, make_records  # noqa: E402
from gpucheck.device import GIB, Device  # noqa: E402
from gpucheck.inference import section_generate, section_packed_attention, section_serve  # noqa: E402
from gpucheck.nccl import nccl_worker, section_nccl  # noqa: E402
from gpucheck.plan import section_env, section_plan  # noqa: E402
from gpucheck.report import print_summary, write_json  # noqa: E402
from gpucheck.runner import Runner, start_watchdog  # noqa: E402
from gpucheck.shapes import METHODS, SHAPES, llama_param_count  # noqa: E402
from gpucheck.training import section_train  # noqa: E402
from gpucheck.trl_baseline import section_trl  # noqa: E402


def sections(ctx: Context) -> list[tuple[str, str | None, object, tuple]]:
    """(name, model whose checkpoint it needs, function, arguments) in order: the first model's sections first, so a
    short budget still covers every kind of path once."""
    out = []
    for i, key in enumerate(ctx.models_run):
        out += [(f"train {key} {method}", key, section_train, (ctx, key, method)) for method in METHODS]
        out += [(f"{'trl+liger' if liger else 'trl'} {key}", key, section_trl, (ctx, key, liger))
                for liger in (False, True)]
        if i == 0:
            out += [(f"packed-attention {key}", key, section_packed_attention, (ctx, key)),
                    (f"generate {key}", key, section_generate, (ctx, key)),
                    (f"serve {key}", key, section_serve, (ctx, key)),
                    ("nccl", None, section_nccl, (ctx,))]
    return out


def prepare(ctx: Context) -> None:
    """Records, tokenizer and the model store, sized for the largest workload."""
    import torch

    from tunesmith.train.tokenize import tokenize_records

    sample = make_records(200, seed=1)
    ctx.tokenizer = build_tokenizer(sample)
    scale = 0.12 if ctx.cpu else 1.0
    probe = [ctx.tokenizer.apply_chat_template(r["messages"], tokenize=False)
             for r in make_records(100, seed=2, scale=scale)]
    mean_tokens = sum(len(ids) for ids in ctx.tokenizer(probe, add_special_tokens=False)["input_ids"]) / len(probe)
    need = max(ctx.workloads[k].rows * ctx.workloads[k].seq_len for k in ctx.models_run)
    records = make_records(int(1.3 * need / mean_tokens) + 16, seed=0, scale=scale)
    # every side trains on the same examples: none that tunesmith would reject or TRL truncate (8 tokens of margin
    # for TRL's rendering)
    limit = min(ctx.workloads[k].seq_len for k in ctx.models_run) - 8
    kept = {e.id for e in tokenize_records(ctx.tokenizer, records, max_seq_length=limit)[0]}
    ctx.records = [r for r in records if r["id"] in kept]
    for key in ctx.models_run:
        ctx.schedule(key)
    # bf16 checkpoints + the 1B full fine-tuning's fp32 model folder (deleted after its section)
    need_bytes = 0 if ctx.cpu else sum(2 * llama_param_count(SHAPES[k]) for k in ctx.models_run) + 6 * GIB
    root = Path(ctx.args.model_dir) if ctx.args.model_dir else default_model_root(need_bytes)
    ctx.work = root / "runs"
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.store = ModelStore(root, ctx.shapes, ctx.tokenizer, ctx.device)
    print(f"  {len(ctx.records)} records (of {len(records)}: the rest exceed {limit} tokens); tokenizer "
          f"{len(ctx.tokenizer)} tokens; models in {root}; runs in {ctx.work}; torch threads {torch.get_num_threads()}")


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
    runner = Runner(args.budget_s, None, T_START)
    device = Device(args.cpu_dry_run)
    runner.device = device
    ctx = Context(args, device, runner)

    finish_lock, finished = threading.Lock(), []

    def finish() -> None:  # also what the watchdog runs before it stops the process: once, whichever thread is first
        with finish_lock:
            if finished:
                return
            finished.append(True)
            print_summary(ctx)
            write_json(ctx, args.json)
            if not args.keep and ctx.store:
                shutil.rmtree(ctx.store.root if not args.model_dir else ctx.work, ignore_errors=True)

    start_watchdog(runner, args.hard_limit_s or args.budget_s + 20, finish)
    mode = "CPU dry run, tiny models" if ctx.cpu else "CUDA"
    print(f"tunesmith GPU check ({mode}), models {', '.join(ctx.models_run)}, budget {args.budget_s:.0f}s", flush=True)
    runner.run("env", None, section_env, ctx)
    runner.run("data", None, prepare, ctx)
    if runner.get("data").status != "ok" or runner.get("env").status != "ok":
        finish()
        return 1
    runner.run("plan", None, section_plan, ctx)
    for name, model, fn, fn_args in sections(ctx):
        runner.run(name, ctx.est(name, model=model), fn, *fn_args)
    finish()
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
