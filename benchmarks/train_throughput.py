"""Training throughput: tunesmith vs TRL's SFTTrainer (+PEFT LoRA) on the same model, data and batch.

Three sides, each trained for a fixed number of optimizer steps (after warm-up steps) on its own
fresh copy of the model, in its own subprocess (so peak RSS is per side), in alternating order
across repeats (repeat r runs the sides rotated by r):

* ``tunesmith``   - tokenize_records (chat template, completion-only labels) -> epoch_batches(packing=True)
                    -> train_loop with summed_token_loss -> AdamW.
* ``trl_default`` - the seed's recipe: SFTTrainer + peft_config on conversational ``messages`` with TRL's
                    defaults (no packing, loss on the whole sequence), except what would make the comparison
                    unfair on CPU: ``bf16=False`` (TRL turns bf16 on by default, ~16x slower on this CPU) and
                    ``gradient_checkpointing=False`` (TRL's default is True; tunesmith runs without it).
* ``trl_best``    - TRL at its best on CPU: prompt/completion conversational data (completion-only loss),
                    ``packing=True`` with the default ``bfd`` strategy (which turns on ``padding_free``),
                    fp32, no gradient checkpointing.

Same for every side: model weights (fp32, SDPA attention), LoRA config and seed, examples (the support-ticket
generator plus a share of long free-text answers), per-device batch size B, gradient accumulation G, sequence
length L (max_length / packed row length), learning rate and schedule (constant), max_grad_norm, thread count.
"Batch" means B sequences of at most L tokens: packed rows for tunesmith and trl_best, single examples for
trl_default - what the same config gives each recipe. Compare tokens/s, not steps/s.

Non-pad tokens are counted the same way for every side: positions of the input that hold a real token of an
example (not padding), i.e. the attention-mask sum for padded batches and all positions of a padding-free row;
for tunesmith's packed rows the same batches are collated once more with an impossible pad id and the
non-pad positions counted. Model FLOPs per token = ``tunesmith.train.telemetry.flops_per_token`` (4N for a frozen
base + LoRA, N counting the tied LM head as a matmul, plus causal attention at the mean example length); it is
the same number for all sides, so MFU ratios equal throughput ratios. The MFU denominator is the fp32 matmul peak
(``measure_matmul_peak``) at the same thread count, measured in the same run (median of one measurement in each
side's subprocess plus one at the start and end).

On a shared, noisy machine, also look at tokens per CPU-second (``time.process_time`` of the training process)
and "MFU (cpu)" = model FLOPs per CPU-second / matmul FLOPs per CPU-second: both numerator and denominator are
in CPU time, so it is much less sensitive to other processes than the wall-clock MFU.

Usage:
    python benchmarks/train_throughput.py --quick                  # tiny model, seconds
    python benchmarks/train_throughput.py                          # SmolLM2-135M (embedded), minutes
    python benchmarks/train_throughput.py --steps 3 --repeats 1 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("tunesmith", "trl_default", "trl_best")
TARGETS = {"tunesmith/trl_default": 2.0, "tunesmith/trl_best": 1.3, "mfu": 0.50}

LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])

# Long free-text answers: a reply to the customer after the classification, so some examples are several times
# longer than the typical ticket and padding matters (as in real instruction data).
REPLY_SENTENCES = [
    "Thank you for reaching out and for the detailed description of the problem.",
    "I have forwarded this to the responsible team together with the reference you gave us.",
    "In the meantime, please make sure you are on the latest version of the app and clear your browser cache.",
    "If the issue affects more people on your side, let us know how many so we can prioritise accordingly.",
    "We have checked the logs for your account and found a few requests that failed with a timeout.",
    "A fix for a similar problem was released last week, so it is worth trying again after a restart.",
    "Could you send us a screenshot of the error message and the exact time it happened?",
    "Your invoice will be corrected and a credit note issued within three business days.",
    "For security reasons we have temporarily disabled the affected API key; please create a new one.",
    "The courier has opened an investigation and we will update you as soon as we hear back from them.",
    "You can follow the progress of this ticket in the support portal under 'My requests'.",
    "We are sorry for the inconvenience this has caused to you and your team.",
    "If you prefer, we can schedule a short call with one of our engineers to go through the setup together.",
    "Please do not share your password or one-time codes with anyone, including our staff.",
    "Once the change is deployed, the sync should resume automatically and catch up with the missed records.",
]


# ----------------------------------------------------------------------------------------------------------------
# data


def _load_generator():
    path = ROOT / "examples" / "support-tickets" / "generate.py"
    spec = importlib.util.spec_from_file_location("support_tickets_generate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_records(n: int, seed: int, long_share: float, long_sentences: tuple[int, int]) -> list[dict]:
    """Support tickets as chat records; ``long_share`` of them get a long free-text reply appended."""
    from tunesmith.data.formats import alpaca_to_record

    rows = _load_generator().generate(n, seed)
    rng = random.Random(seed + 1)
    records = []
    for i, row in enumerate(rows):
        if rng.random() < long_share:
            k = rng.randint(*long_sentences)
            reply = " ".join(rng.choice(REPLY_SENTENCES) for _ in range(k))
            row = {**row, "output": row["output"] + "\n\nReply to the customer: " + reply}
        rec = alpaca_to_record(row)
        rec["id"] = f"ticket-{i}"
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------------------------------------
# shared helpers


def matmul_peaks(seconds: float = 0.5) -> tuple[float, float]:
    """(fp32 matmul FLOP/s wall-clock via tunesmith's measure_matmul_peak, matmul FLOP per CPU-second)."""
    import torch

    from tunesmith.train.telemetry import measure_matmul_peak

    wall = measure_matmul_peak(seconds)
    # the same loop, timed in CPU seconds of this process (robust to other processes on the machine)
    n = 1024
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    cpu = 2 * n**3 * reps / max(time.process_time() - c0, 1e-9)
    return wall, cpu


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def load_fresh_model(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    return model


def lora_config():
    from peft import LoraConfig

    return LoraConfig(**LORA, bias="none", task_type="CAUSAL_LM")


# ----------------------------------------------------------------------------------------------------------------
# workers (one side-run per subprocess)


def run_tunesmith(cfg: dict, records: list[dict], tokenizer, model) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import get_scheduler

    from tunesmith.train.batching import epoch_batches
    from tunesmith.train.loop import Hooks, train_loop
    from tunesmith.train.tokenize import tokenize_records

    B, G, L, seed = cfg["batch_size"], cfg["grad_accum"], cfg["max_seq_length"], cfg["seed"]
    examples, report = tokenize_records(tokenizer, records, max_seq_length=L, completion_only=True)
    assert not report.rejected, report.rejected[:3]
    torch.manual_seed(seed)
    model = get_peft_model(model, lora_config())

    counts: dict[int, list[tuple[int, int]]] = {}  # epoch -> [(non-pad tokens, label tokens)] per micro-batch

    def batches_for(epoch: int):
        kw = dict(batch_size=B, packing=True, row_length=L, seed=seed, epoch=epoch)
        batches = epoch_batches(examples, pad_id=tokenizer.pad_token_id, **kw)
        if epoch not in counts:  # same layout, impossible pad id: count the positions that hold real tokens
            probe = epoch_batches(examples, pad_id=-1, **kw)
            counts[epoch] = [(int((p.input_ids != -1).sum()), b.n_label_tokens) for p, b in zip(probe, batches)]
        return batches

    W, S = cfg["warmup_steps"], cfg["steps"]
    cursor = {"epoch": 0, "i": 0}
    marks: dict[str, float] = {}
    timed = {"tokens": 0, "label_tokens": 0, "padded_tokens": 0}
    losses = []

    def on_step(rec: dict) -> None:
        # train_loop (one process) takes G consecutive micro-batches per step, fewer at the end of an epoch
        ep = counts[cursor["epoch"]]
        group = ep[cursor["i"] : cursor["i"] + G]
        cursor["i"] += len(group)
        if cursor["i"] >= len(ep):
            cursor["epoch"], cursor["i"] = cursor["epoch"] + 1, 0
        assert sum(c[1] for c in group) == rec["label_tokens"], "micro-batch bookkeeping out of step with train_loop"
        losses.append(rec["loss"])
        if rec["step"] == W:
            marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()
        elif rec["step"] > W:
            timed["tokens"] += sum(c[0] for c in group)
            timed["label_tokens"] += rec["label_tokens"]
            timed["padded_tokens"] += rec["tokens"]  # what train_loop counts: packed rows incl. row padding
        if rec["step"] == W + S:
            marks["t1"], marks["c1"] = time.perf_counter(), time.process_time()

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    scheduler = get_scheduler("constant", optimizer)
    if W == 0:
        marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()
    train_loop(model, optimizer, scheduler, epoch_batches=batches_for, total_steps=W + S, grad_accum=G,
               device=torch.device("cpu"), max_grad_norm=cfg["max_grad_norm"], hooks=Hooks(on_step=on_step))
    return _result(model, marks, timed, losses, dataset_tokens=sum(len(e.input_ids) for e in examples))


def run_trl(cfg: dict, records: list[dict], tokenizer, model, best: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    B, G, L, W, S = cfg["batch_size"], cfg["grad_accum"], cfg["max_seq_length"], cfg["warmup_steps"], cfg["steps"]
    msgs = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in records]
    if best:  # prompt/completion conversational: TRL computes the loss on the completion only
        rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in msgs]
    else:  # the seed's recipe: conversational messages, TRL defaults (loss on the whole sequence)
        rows = [{"messages": m} for m in msgs]
    dataset = Dataset.from_list(rows)

    extra = dict(packing=True, packing_strategy="bfd", padding_free=True, completion_only_loss=True) if best else {}
    args = SFTConfig(
        output_dir=cfg["tmp"] + f"/trl-{'best' if best else 'default'}",
        per_device_train_batch_size=B, gradient_accumulation_steps=G, max_steps=W + S, max_length=L,
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=cfg["max_grad_norm"], seed=cfg["seed"],
        bf16=False, fp16=False, gradient_checkpointing=False,  # fair on CPU: fp32, no recomputation
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        **extra,
    )
    assert args.pad_to_multiple_of is None  # so a padding-free row holds no padding at all

    marks: dict[str, float] = {}
    timed = {"tokens": 0, "label_tokens": 0, "padded_tokens": 0}
    losses: list[float] = []
    step_loss = [0.0]

    class Trainer(SFTTrainer):
        """SFTTrainer plus token counting (a sum over a mask per micro-batch: negligible cost)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                mask = inputs.get("attention_mask")
                n = int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
                step = self.state.global_step + 1  # the optimizer step this micro-batch belongs to
                if W < step <= W + S:
                    timed["tokens"] += n
                    timed["padded_tokens"] += int(inputs["input_ids"].numel())
                    timed["label_tokens"] += int((inputs["labels"][:, 1:] != -100).sum())
                loss = out[0] if return_outputs else out
                step_loss[0] += float(loss.detach())
            return out

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if W == 0:
                marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            losses.append(step_loss[0])
            step_loss[0] = 0.0
            if state.global_step == W:
                marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()
            if state.global_step == W + S:
                marks["t1"], marks["c1"] = time.perf_counter(), time.process_time()

    torch.manual_seed(cfg["seed"])
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(), callbacks=[Timer()])
    info = {
        "trl_padding_free": bool(trainer.padding_free),
        "trl_completion_only_loss": bool(trainer.completion_only_loss),
        "trl_packing": bool(args.packing),
        "trl_gradient_checkpointing": bool(args.gradient_checkpointing),
        "trl_bf16": bool(args.bf16),
        "trl_optim": str(args.optim),
        "attn_implementation": trainer.model.config._attn_implementation,
    }
    from trl.kernels.chunked_logprob import _use_triton

    # TRL's fused LM head scores only label positions where Triton runs (CUDA/XPU); elsewhere every position
    info["trl_lm_head_on_all_positions"] = not _use_triton(next(trainer.model.parameters()).device)
    try:
        from trl.chat_template_utils import get_training_chat_template

        get_training_chat_template(tokenizer)
        info["trl_assistant_only_loss"] = "available for this chat template"
    except Exception as e:  # noqa: BLE001 - report TRL's own reason
        info["trl_assistant_only_loss"] = f"not available: {e}"
    ds = trainer.train_dataset
    dataset_tokens = sum(len(x) for x in ds["input_ids"])
    trainer.train()
    res = _result(trainer.model, marks, timed, losses, dataset_tokens=dataset_tokens)
    res.update(info)
    res["trl_rows"] = len(ds)
    return res


def _result(model, marks, timed, losses, *, dataset_tokens: int) -> dict:
    from tunesmith.train.methods import count_parameters

    wall = marks["t1"] - marks["t0"]
    cpu = marks["c1"] - marks["c0"]
    trainable, total = count_parameters(model)
    return {
        "wall_s": wall, "cpu_s": cpu, **timed,
        "tokens_per_s": timed["tokens"] / wall, "tokens_per_cpu_s": timed["tokens"] / cpu,
        "trainable_parameters": trainable, "total_parameters": total,
        "losses": losses, "dataset_tokens": dataset_tokens,
    }


def worker(side: str, cfg_path: str, out_path: str) -> None:
    import torch
    from transformers import AutoTokenizer

    from tunesmith.train.telemetry import flops_per_token

    cfg = json.loads(Path(cfg_path).read_text())
    torch.set_num_threads(cfg["threads"])
    records = json.loads(Path(cfg["data"]).read_text())
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_fresh_model(cfg["model_dir"])
    # FLOPs of the plain model (before LoRA is added, which adds ~nothing): the same number for every side
    fpt = flops_per_token(model, method="lora", seq_len=cfg["mean_example_tokens"])
    head_fpt = 4 * model.get_output_embeddings().weight.numel()  # LM head share of fpt (frozen: fwd 2 + bwd 2)
    peak_wall, peak_cpu = matmul_peaks()
    if side == "tunesmith":
        res = run_tunesmith(cfg, records, tokenizer, model)
    else:
        res = run_trl(cfg, records, tokenizer, model, best=side == "trl_best")
    res["flops_per_token"] = fpt
    # "strict" model FLOPs: the LM head only where the side's own loss needs it (positions with a label)
    res["strict_flops"] = (fpt - head_fpt) * res["tokens"] + head_fpt * res["label_tokens"]
    res.update(side=side, peak_rss_bytes=peak_rss_bytes(), matmul_peak=peak_wall, matmul_peak_per_cpu_s=peak_cpu,
               threads=torch.get_num_threads())
    Path(out_path).write_text(json.dumps(res))


# ----------------------------------------------------------------------------------------------------------------
# driver


def prepare(args, tmp: Path) -> dict:
    from transformers import AutoTokenizer

    from tunesmith.models.embedded import materialise
    from tunesmith.train.tokenize import tokenize_records

    smol = materialise()
    tokenizer = AutoTokenizer.from_pretrained(smol)
    if args.quick:
        from tunesmith.models.tiny import save_tiny_llama

        model_dir = save_tiny_llama(tmp / "tiny-llama", tokenizer, hidden_size=128, num_layers=2, num_heads=4,
                                    num_kv_heads=2, intermediate_size=256)
        model_name = "tiny-llama (hidden 128, 2 layers, SmolLM2 tokenizer)"
    else:
        model_dir, model_name = smol, "SmolLM2-135M-Instruct (embedded)"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    long_sentences = (4, 22)
    records = make_records(args.examples, args.seed, args.long_share, long_sentences)
    # the same examples for every side: drop those tunesmith would reject (> L tokens, with a margin for TRL's
    # slightly different rendering), so no side truncates or drops anything
    examples, _ = tokenize_records(tokenizer, records, max_seq_length=args.max_seq_length - 8, truncation="reject")
    kept = {e.id for e in examples}
    records = [r for r in records if r["id"] in kept]
    lengths = sorted(len(e.input_ids) for e in examples)
    (tmp / "data.json").write_text(json.dumps(records))
    return {
        "model_dir": str(model_dir), "model": model_name, "data": str(tmp / "data.json"), "tmp": str(tmp),
        "batch_size": args.batch_size, "grad_accum": args.grad_accum, "max_seq_length": args.max_seq_length,
        "warmup_steps": args.warmup, "steps": args.steps, "lr": 1e-4, "max_grad_norm": 1.0, "seed": args.seed,
        "threads": args.threads, "examples": len(records),
        "mean_example_tokens": round(sum(lengths) / len(lengths)),
        "example_tokens_p10_p50_p90_max": [lengths[len(lengths) // 10], lengths[len(lengths) // 2],
                                           lengths[9 * len(lengths) // 10], lengths[-1]],
        "label_share": sum(e.n_label_tokens for e in examples) / sum(lengths),
    }


def run_side(side: str, cfg_path: Path, out: Path, env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--cfg", str(cfg_path), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"side {side} failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def summarise(cfg: dict, runs: list[dict], peaks: list[float], peaks_cpu: list[float], sides: list[str]) -> dict:
    peak = statistics.median(peaks + [r["matmul_peak"] for r in runs])
    peak_cpu = statistics.median(peaks_cpu + [r["matmul_peak_per_cpu_s"] for r in runs])
    out = {"config": {k: v for k, v in cfg.items() if k not in ("data", "tmp")}, "matmul_peak_flops": peak,
           "matmul_peak_flops_per_cpu_s": peak_cpu, "sides": {}, "runs": runs}
    for side in sides:
        rs = [r for r in runs if r["side"] == side]
        fpt = rs[0]["flops_per_token"]
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        tpc = statistics.median(r["tokens_per_cpu_s"] for r in rs)
        s = {
            "tokens_per_s": tps, "tokens_per_cpu_s": tpc,
            "tokens_per_s_all": [r["tokens_per_s"] for r in rs],
            "tokens_per_step": statistics.median(r["tokens"] / cfg["steps"] for r in rs),
            "padding_share": statistics.median(1 - r["tokens"] / r["padded_tokens"] for r in rs),
            "label_share": statistics.median(r["label_tokens"] / r["tokens"] for r in rs),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
            "flops_per_token": fpt, "mfu": fpt * tps / peak, "mfu_cpu": fpt * tpc / peak_cpu,
            "mfu_strict": statistics.median(r["strict_flops"] / r["wall_s"] for r in rs) / peak,
            "mfu_strict_cpu": statistics.median(r["strict_flops"] / r["cpu_s"] for r in rs) / peak_cpu,
            "trainable_parameters": rs[0]["trainable_parameters"], "dataset_tokens": rs[0]["dataset_tokens"],
            "first_loss": statistics.median(r["losses"][0] for r in rs),
        }
        s.update({k: v for k, v in rs[0].items() if k.startswith("trl_") or k == "attn_implementation"})
        out["sides"][side] = s
    sd = out["sides"]
    out["ratios"] = {}
    for base in ("trl_default", "trl_best"):
        if "tunesmith" in sd and base in sd:
            out["ratios"][f"tunesmith/{base}"] = sd["tunesmith"]["tokens_per_s"] / sd[base]["tokens_per_s"]
            out["ratios"][f"tunesmith/{base} (cpu-time)"] = sd["tunesmith"]["tokens_per_cpu_s"] / sd[base]["tokens_per_cpu_s"]
    return out


def print_report(res: dict) -> None:
    c = res["config"]
    print()
    print(f"model: {c['model']}; {c['examples']} examples, tokens/example p10/p50/p90/max = "
          f"{'/'.join(map(str, c['example_tokens_p10_p50_p90_max']))} (mean {c['mean_example_tokens']}), "
          f"label share (tunesmith, completion-only) {100 * c['label_share']:.0f}%")
    print(f"batch {c['batch_size']} x accumulation {c['grad_accum']}, sequence length {c['max_seq_length']}, "
          f"{c['warmup_steps']} warm-up + {c['steps']} timed steps, {c['repeats']} repeats (alternating order), "
          f"{c['threads']} threads, LoRA r={LORA['r']} alpha={LORA['lora_alpha']} on {','.join(LORA['target_modules'])}")
    print(f"fp32 matmul peak (same run, median): {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s wall, "
          f"{res['matmul_peak_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second")
    print()
    head = (f"{'side':<12} {'tok/s':>8} {'tok/cpu-s':>10} {'MFU':>6} {'MFU(cpu)':>9} {'strict':>7} {'tok/step':>9} {'pad%':>5} "
            f"{'label%':>7} {'peak RSS':>9} {'trainable':>10}  tok/s per repeat")
    print(head)
    print("-" * len(head))
    for side, s in res["sides"].items():
        print(f"{side:<12} {s['tokens_per_s']:>8.0f} {s['tokens_per_cpu_s']:>10.0f} {100 * s['mfu']:>5.0f}% "
              f"{100 * s['mfu_cpu']:>8.0f}% {100 * s['mfu_strict']:>6.0f}% {s['tokens_per_step']:>9.0f} {100 * s['padding_share']:>4.0f}% "
              f"{100 * s['label_share']:>6.0f}% {s['peak_rss_bytes'] / 2**20:>7.0f}MB {s['trainable_parameters']:>10,}  "
              + " ".join(f"{x:.0f}" for x in s["tokens_per_s_all"]))
    print()
    for side, s in res["sides"].items():
        if side.startswith("trl"):
            print(f"{side}: packing={s['trl_packing']} padding_free={s['trl_padding_free']} "
                  f"completion_only_loss={s['trl_completion_only_loss']} bf16={s['trl_bf16']} "
                  f"gradient_checkpointing={s['trl_gradient_checkpointing']} optim={s['trl_optim']} "
                  f"attn={s['attn_implementation']} LM head on all positions={s.get('trl_lm_head_on_all_positions')} "
                  f"dataset tokens={s['dataset_tokens']}")
    trl = [s for k, s in res["sides"].items() if k.startswith("trl")]
    if trl and "trl_assistant_only_loss" in trl[0]:
        print(f"TRL assistant_only_loss=True: {trl[0]['trl_assistant_only_loss']} -> trl_best gets completion-only "
              "loss from the prompt/completion conversational format instead")
    if "tunesmith" in res["sides"]:
        print(f"tunesmith: dataset tokens={res['sides']['tunesmith']['dataset_tokens']}")
    print("(tok/s and MFU are medians over repeats; MFU = flops_per_token x non-pad tok/s / matmul peak; MFU(cpu) = "
          "the same per CPU-second; strict = MFU counting the LM head only on positions with a label, the work the "
          "side's own loss needs; tok/step = non-pad tokens per optimizer step; pad% = padding share of processed "
          "positions; label% = share of non-pad tokens that carry loss)")
    print()
    r = res["ratios"]
    parts = [f"{k} = {v:.2f}x" for k, v in r.items() if "cpu" not in k]
    if "tunesmith" in res["sides"]:
        parts.append(f"MFU = {100 * res['sides']['tunesmith']['mfu']:.0f}%")
        parts.append(f"(strict {100 * res['sides']['tunesmith']['mfu_strict']:.0f}%)")
    print("  ".join(parts))
    parts = [f"{k.replace(' (cpu-time)', '')} = {v:.2f}x" for k, v in r.items() if "cpu" in k]
    if "tunesmith" in res["sides"]:
        parts.append(f"MFU(cpu) = {100 * res['sides']['tunesmith']['mfu_cpu']:.0f}%")
    print("per CPU-second: " + "  ".join(parts))
    checks = []
    for k, target in TARGETS.items():
        v = res["sides"]["tunesmith"]["mfu"] if k == "mfu" and "tunesmith" in res["sides"] else r.get(k)
        if v is not None:
            checks.append(f"{k} {'>=' if v >= target else '<'} {target:g}: {'met' if v >= target else 'NOT met'}")
    print(("targets (not meaningful in --quick): " if c.get("quick") else "targets: ") + "; ".join(checks))
    if c.get("quick"):
        print("NOTE --quick is a smoke test of the harness, not a measurement: the tiny model's cost is dominated by its "
              "LM head (hidden 128 x vocab 49,152), so ratios are inflated and MFU (which credits the LM head on every "
              "token) can exceed 100%. The targets apply to the full SmolLM2 mode.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random model and short data (seconds)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps per side-run")
    ap.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps before timing")
    ap.add_argument("--repeats", type=int, default=None, help="alternating repeats (median reported)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--grad-accum", type=int, default=None)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--examples", type=int, default=None)
    ap.add_argument("--long-share", type=float, default=0.25, help="share of examples with a long free-text answer")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or torch's)")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {','.join(SIDES)}")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None, help="write the full results here")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.cfg, args.out)
        return

    quick = dict(steps=3, warmup=1, repeats=2, batch_size=2, grad_accum=1, max_seq_length=512, examples=300)
    full = dict(steps=4, warmup=1, repeats=3, batch_size=2, grad_accum=2, max_seq_length=512, examples=600)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    import torch

    if args.threads is None:
        args.threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    sides = [s for s in args.sides.split(",") if s]
    assert all(s in SIDES for s in sides), f"unknown side in {sides}"

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
               [str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as d:
        tmp = Path(d)
        cfg = prepare(args, tmp)
        cfg["repeats"] = args.repeats
        cfg["quick"] = args.quick
        cfg_path = tmp / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        w0, c0 = matmul_peaks()
        peaks, peaks_cpu = [w0], [c0]
        runs = []
        for rep in range(args.repeats):
            order = sides[rep % len(sides):] + sides[: rep % len(sides)]
            for side in order:
                t = time.perf_counter()
                r = run_side(side, cfg_path, tmp / f"{rep}-{side}.json", env)
                r["repeat"] = rep
                runs.append(r)
                print(f"repeat {rep + 1}/{args.repeats} {side:<12} {r['tokens_per_s']:8.0f} tok/s "
                      f"{r['tokens_per_cpu_s']:8.0f} tok/cpu-s  ({r['tokens']} non-pad tokens in {r['wall_s']:.1f}s; "
                      f"subprocess {time.perf_counter() - t:.0f}s)", flush=True)
        w1, c1 = matmul_peaks()
        peaks.append(w1)
        peaks_cpu.append(c1)
        res = summarise(cfg, runs, peaks, peaks_cpu, sides)
    print_report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
