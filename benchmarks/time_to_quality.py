"""Time to quality: tunesmith's zero-config run vs the plain TRL script a user would write from TRL's docs.

Task: examples/order-emails (email -> JSON with five fields, 12% of emails lacking one). Both sides train
the same model (the embedded SmolLM2-135M-Instruct unless --model) on the same prepared train split and are
scored by the same evaluation (tunesmith's json_fields scorer, on the same held-out test split, in one
`tunesmith eval`), so the only difference is how each trains:

* ``tunesmith`` - `tunesmith advise --data` writes the run config (recipe, scorer, schema) and
  `tunesmith train CONFIG train.time_budget=B` trains to the budget: a probe sets the number of steps
  that fit and fits the LR schedule to them; checkpoints are chosen by the task score on validation.
* ``trl``       - `SFTTrainer` + `peft_config=LoraConfig(...)` on prompt/completion conversations (TRL's
  completion-only loss) with the seed's recipe: 3 epochs at learning_rate 2e-4 (also TRL's PEFT integration page:
  "~10x the full fine-tuning rate for LoRA"), the SFTConfig defaults otherwise (linear schedule, no warm-up).
  Held equal: LoRA rank, alpha, dropout and target modules, rows per micro-batch, gradient accumulation, sequence
  length and packing (so the same tokens per optimizer step). Exceptions as on CPU in
  benchmarks/train_throughput.py: fp32 (``bf16=False``) and no gradient checkpointing.

Time to quality. tunesmith's is measured: the first validation whose task score (the json_fields score of its
validation examples) reaches ``--target``, in seconds from the launch of its training process (model load,
tokenising, the budget's probe and every validation count); when no validation reaches it, its whole training
time (its final adapter is what the test split scores). TRL then gets ``--cap-factor`` (3) times that time,
from the launch of its own process, and its adapter is scored when the cap stops it. Both adapters are scored in
one `tunesmith eval` on the same held-out test split (field accuracy, fully-right rate, valid JSON, invented values).
If tunesmith's test field accuracy reaches the target and TRL's at the cap does not, tunesmith got there at least
``cap-factor`` times faster;
if TRL reached it, the speedup is below that and the script says so (it does not search for TRL's exact time).
TRL is scored once, at the cap: at its low rate its score rises through the run, so an earlier peak is unlikely,
but it is not excluded.

Needs TRL: ``pip install trl`` (or ``pip install -e ".[bench]"``); without it the script says so and exits 0.

Usage:
    PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 python benchmarks/time_to_quality.py --quick    # harness check: 120 emails, 3 steps
    PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 python benchmarks/time_to_quality.py --budget 15m --json ttq.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRL_LEARNING_RATE = 2e-4  # the seed's recipe; TRL docs, PEFT integration: "~10x the full fine-tuning rate for LoRA"
TRL_EPOCHS = 3.0  # the seed's recipe
CAP_FACTOR = 3.0  # issue 13's target: tunesmith reaches the target score at least 3x faster
NEEDS_TRL = ("time_to_quality.py compares tunesmith with TRL's SFTTrainer and needs TRL and PEFT: "
             "pip install trl peft   (or: pip install -e \".[bench]\")")
# --quick checks the harness, not quality: a fixed few steps (a short budget would be refused on a loaded machine,
# whose probe alone can take minutes), few examples scored
QUICK = {"n": 120, "budget": None, "max_steps": 3, "max_examples": 20, "task_eval_examples": 8, "batch_size": 1,
         "cap_factor": 1.0}
FULL = {"n": 900, "budget": "15m", "max_steps": None, "max_examples": None, "task_eval_examples": None, "batch_size": None,
        "cap_factor": CAP_FACTOR}


def missing_packages() -> list[str]:
    return [p for p in ("trl", "peft", "datasets") if importlib.util.find_spec(p) is None]


def prompt_completion(records: list[dict]) -> list[dict]:
    """Prepared records (``messages``) as TRL's conversational prompt/completion rows: everything before the
    last assistant turn is the prompt, that turn the completion (TRL then trains on the completion only)."""
    rows = []
    for r in records:
        msgs = [{"role": m["role"], "content": m["content"]} for m in r["messages"]]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        rows.append({"prompt": msgs[:last], "completion": msgs[last:last + 1]})
    return rows


def trl_settings(run_config: dict, wall_cap_s: float, *, max_steps: int | None = None) -> dict:
    """What the TRL side trains with, from tunesmith's run config: the held-equal values and the seed's recipe
    (3 epochs at 2e-4), stopped by ``wall_cap_s``; ``max_steps`` (--quick) instead of the epochs."""
    t = run_config["train"]
    lora = t["lora"]
    length = {"max_steps": max_steps} if max_steps else {"num_train_epochs": TRL_EPOCHS}
    return {
        "lora": {"r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
                 "target_modules": lora["target_modules"], "bias": "none", "task_type": "CAUSAL_LM"},
        "sft": {"per_device_train_batch_size": t["batch_size"], "gradient_accumulation_steps": t["grad_accum"],
                "max_length": t["max_seq_length"], "packing": t["packing"], **length,
                "learning_rate": TRL_LEARNING_RATE, "seed": run_config.get("seed", 0),
                "bf16": False, "fp16": False, "gradient_checkpointing": False,
                "report_to": "none", "save_strategy": "no", "logging_steps": 10},
        "wall_cap_s": wall_cap_s,
    }


def time_to_target(val_history: list[dict], launched_at: float, target: float) -> dict:
    """tunesmith's time to ``target``: the first validation whose task score reaches it, in seconds from
    ``launched_at``; when none does, the (first) best score and when it was measured (``reached`` False)."""
    scored = [v for v in val_history if v.get("task_score") is not None and v.get("time") is not None]
    if not scored:
        return {"reached": False, "seconds": None, "score": None, "step": None}
    hit = next((v for v in scored if v["task_score"] >= target), None)
    best = hit or max(scored, key=lambda v: v["task_score"])  # max keeps the first of equal scores
    return {"reached": hit is not None, "seconds": best["time"] - launched_at, "score": best["task_score"],
            "step": best["step"]}


def train_limit(budget: str | None, max_steps: int | None) -> list[str]:
    """tunesmith's overrides for how long it trains: the time budget, or (--quick) a fixed number of steps."""
    if (budget is None) == (max_steps is None):
        raise SystemExit("give either --budget or --max-steps")
    return [f"train.time_budget={budget}"] if budget is not None else [f"train.max_steps={max_steps}"]


def headline(model_metrics: dict) -> dict:
    """The numbers compared, from one model's block of metrics.json (json_fields scorer)."""
    values = model_metrics.get("values") or {}
    return {"field_accuracy": values.get("right_rate"), "fully_right": values.get("fully_right_rate"),
            "valid_json": model_metrics.get("format_compliance"), "invented": model_metrics.get("invented_value_rate"),
            "field_accuracy_ci": values.get("right_rate_ci"), "n": model_metrics.get("n")}


def tunesmith_time(to_target: dict, wall_s: float) -> float:
    """tunesmith's time to quality: its first validation at the target, else its whole training (its final adapter
    is the one scored on the test split). TRL's cap is a multiple of it."""
    return to_target["seconds"] if to_target["reached"] else wall_s


def compare(sides: dict[str, dict], target: float, *, to_target: dict | None = None,
            cap_factor: float | None = None) -> dict:
    """Per side: its headline numbers, wall time and whether its test field accuracy reached ``target``; the ratios
    tunesmith / TRL (field accuracy, wall time); and, given tunesmith's ``to_target`` and the ``cap_factor`` TRL's
    time was capped at, the verdict on time to quality."""
    out = {"target_field_accuracy": target, "sides": {}}
    for name, s in sides.items():
        acc = s["metrics"]["field_accuracy"]
        out["sides"][name] = {**s, "reached_target": acc is not None and acc >= target}
    ts, trl = sides.get("tunesmith"), sides.get("trl")
    if ts and trl:
        a, b = ts["metrics"]["field_accuracy"], trl["metrics"]["field_accuracy"]
        out["field_accuracy_ratio"] = a / b if a is not None and b else None
        out["wall_time_ratio"] = ts["wall_s"] / trl["wall_s"] if trl["wall_s"] else None
    if to_target is not None and cap_factor is not None and ts and trl:
        out["tunesmith_to_target"], out["cap_factor"] = to_target, cap_factor
        out["tunesmith_time_s"] = tunesmith_time(to_target, ts["wall_s"])  # TRL's cap was cap_factor times it
        if not out["sides"]["tunesmith"]["reached_target"]:
            out["verdict"], out["speedup_at_least"] = "tunesmith did not reach the target on the test split", None
        elif out["sides"]["trl"]["reached_target"]:
            out["verdict"], out["speedup_at_least"] = f"TRL reached the target within {cap_factor:g}x: speedup below {cap_factor:g}x", None
        else:
            out["verdict"], out["speedup_at_least"] = f"TRL had not reached the target at {cap_factor:g}x the time", cap_factor
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render(result: dict) -> str:
    lines = [f"{'side':10} {'wall s':>7} {'steps':>6} {'field acc':>10} {'fully right':>12} {'valid JSON':>11} "
             f"{'invented':>9}  target {_pct(result['target_field_accuracy'])}"]
    for name, s in result["sides"].items():
        m = s["metrics"]
        lines.append(f"{name:10} {s['wall_s']:7.0f} {s['steps']:6d} {_pct(m['field_accuracy']):>10} "
                     f"{_pct(m['fully_right']):>12} {_pct(m['valid_json']):>11} {_pct(m['invented']):>9}  "
                     f"{'reached' if s['reached_target'] else 'not reached'}")
    if result.get("field_accuracy_ratio") is not None:
        lines.append(f"tunesmith / TRL: field accuracy x{result['field_accuracy_ratio']:.2f}, "
                     f"wall time x{result['wall_time_ratio']:.2f}")
    tt = result.get("tunesmith_to_target")
    if tt and tt["seconds"] is not None:
        what = "reached" if tt["reached"] else "best"
        lines.append(f"tunesmith validation score {what} {_pct(tt['score'])} at step {tt['step']}, "
                     f"{tt['seconds']:.0f} s after launch; its time {result['tunesmith_time_s']:.0f} s, "
                     f"TRL capped at {result['cap_factor']:g}x that")
    if result.get("verdict"):
        lines.append(f"time to quality: {result['verdict']}"
                     + (f" (speedup >= {result['speedup_at_least']:g}x)" if result.get("speedup_at_least") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# the sides (subprocesses, so each has its own process and clock)

def _cli(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], check=True, env=env, cwd=REPO)


def _timed_cli(*args: str, env: dict) -> float:
    start = time.perf_counter()
    _cli(*args, env=env)
    return time.perf_counter() - start


def trl_worker(settings_path: str) -> None:
    """The TRL side, as a user would write it from TRL's docs (plus a wall-clock cap)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    s = json.loads(Path(settings_path).read_text())
    launched = s["launched_at"]  # the parent's clock when it started this process: imports count, as for tunesmith
    records = [json.loads(line) for line in Path(s["train_file"]).read_text().splitlines() if line.strip()]
    model = AutoModelForCausalLM.from_pretrained(s["model_dir"], dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(s["model_dir"])

    capped = []

    class WallClockCap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() - launched >= s["wall_cap_s"]:
                control.should_training_stop = True
                capped.append(state.global_step)

    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(prompt_completion(records)),
                         args=SFTConfig(output_dir=s["output_dir"], **s["sft"]),
                         peft_config=LoraConfig(**s["lora"]), callbacks=[WallClockCap()])
    trainer.train()
    trainer.model.save_pretrained(s["adapter_dir"])
    Path(s["result"]).write_text(json.dumps({"steps": trainer.state.global_step, "planned_steps": trainer.state.max_steps,
                                             "stopped_by_cap": bool(capped)}))


def _model_dir(name: str) -> str:
    if name.startswith("embedded:"):
        from tunesmith.models.embedded import materialise

        return str(materialise(name.split(":", 1)[1]))
    return name


def run(args) -> dict:
    import yaml

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    work = (REPO / "runs" / "time-to-quality").resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("order_emails", REPO / "examples" / "order-emails" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    data = work / "order-emails.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in gen.generate(args.n, args.seed)))

    # tunesmith: advise writes the run config, then data, then train to the budget
    cfg_path = work / "run.yaml"
    model = ["--model", args.model] if args.model else []
    budget = ["--budget", args.budget] if args.budget else []  # the recipe plans for the budget, as `run --budget` does
    _cli("advise", "--data", str(data), *model, *budget, "--no-interactive", "-o", str(cfg_path), env=env)
    overrides = ["name=ttq", f"output_dir={work}", "eval.adversarial.enabled=false", "eval.regression.enabled=false"]
    if args.task_eval_examples:
        overrides.append(f"train.task_eval_examples={args.task_eval_examples}")
    if args.batch_size:  # both sides: TRL's settings are read from the config tunesmith trained with
        overrides += [f"train.batch_size={args.batch_size}", "train.grad_accum=1"]
    _cli("data", "prepare", str(cfg_path), *overrides, env=env)  # outside the timed training, as for TRL
    launched = time.time()
    ts_wall = _timed_cli("train", str(cfg_path), *overrides, *train_limit(args.budget, args.max_steps), env=env)
    run_dir = work / "ttq"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    ts_steps, to_target = summary["steps"], time_to_target(summary.get("val_history") or [], launched, args.target)
    cap = args.cap_factor * tunesmith_time(to_target, ts_wall)

    # TRL: same prepared train split, same model, same LoRA and tokens per step; the seed's recipe, capped in time
    settings = {"train_file": str(run_dir / "data" / "train.jsonl"), "model_dir": _model_dir(cfg["model"]["name_or_path"]),
                "output_dir": str(work / "trl-out"), "adapter_dir": str(work / "trl-adapter"),
                "result": str(work / "trl-result.json"),
                **trl_settings(cfg, cap, max_steps=ts_steps if args.max_steps else None)}
    settings["launched_at"] = time.time()
    (work / "trl-settings.json").write_text(json.dumps(settings, indent=1))
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--trl-worker", str(work / "trl-settings.json")], check=True, env=env)
    trl_run = {**json.loads((work / "trl-result.json").read_text()), "wall_s": time.perf_counter() - start}

    # one evaluation of both adapters on the same test split
    eval_overrides = [*overrides, "eval.models=[tuned, trl]",
                      f"eval.local_models=[{{name: trl, path: {work / 'trl-adapter'}, kind: adapter}}]"]
    if args.max_examples:
        eval_overrides.append(f"eval.max_examples={args.max_examples}")
    _cli("eval", str(cfg_path), *eval_overrides, env=env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sides = {"tunesmith": {"wall_s": ts_wall, "steps": ts_steps, "metrics": headline(metrics["tuned"])},
             "trl": {"wall_s": trl_run["wall_s"], "steps": trl_run["steps"], "metrics": headline(metrics["trl"])}}
    result = compare(sides, args.target, to_target=to_target, cap_factor=args.cap_factor)
    result["conditions"] = {"examples": args.n, "budget": args.budget, "trl_cap_s": cap, "max_steps": args.max_steps, "test_examples": metrics.get("test_examples"),
                            "trl_settings": settings, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"tiny settings to check the harness: {QUICK}")
    ap.add_argument("--n", type=int, default=None, help="emails generated (then split by the data stage)")
    ap.add_argument("--budget", default=None, help="tunesmith's training budget, e.g. 15m; TRL gets the same wall time")
    ap.add_argument("--max-steps", type=int, default=None, help="instead of --budget: tunesmith trains this many steps")
    ap.add_argument("--max-examples", type=int, default=None, help="score at most this many test examples")
    ap.add_argument("--task-eval-examples", type=int, default=None, help="tunesmith's validation examples per check")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per step for both sides (default: advise's)")
    ap.add_argument("--target", type=float, default=0.99, help="score that counts as reached (validation for tunesmith's "
                    "time, test field accuracy for both sides)")
    ap.add_argument("--cap-factor", type=float, default=None,
                    help=f"TRL's wall-clock cap as a multiple of tunesmith's time to the target (default {CAP_FACTOR:g}; "
                         "--quick: 1)")
    ap.add_argument("--model", default=None, help="model for both sides (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("--trl-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return 0
    missing = missing_packages()
    if missing:
        print(f"{NEEDS_TRL}\n(missing here: {', '.join(missing)}; nothing was run)")
        return 0
    defaults = QUICK if args.quick else FULL
    if args.budget is not None or args.max_steps is not None:  # the one the user gave decides
        defaults = {k: v for k, v in defaults.items() if k not in ("budget", "max_steps")}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    result = run(args)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
