"""Time to quality: tunesmith's zero-config run vs the plain TRL script a user would write from TRL's docs.

Task: examples/order-emails (email -> JSON with five fields, 12% of emails lacking one). Both sides train
the same model (the embedded SmolLM2-135M-Instruct unless --model) on the same prepared train split and are
scored by the same evaluation (tunesmith's json_fields scorer, on the same held-out test split, in one
`tunesmith eval`), so the only difference is how each trains:

* ``tunesmith`` - `tunesmith advise --data` writes the run config (recipe, scorer, schema) and
  `tunesmith train CONFIG train.time_budget=B` trains to the budget: a probe sets the number of steps
  that fit and fits the LR schedule to them; checkpoints are chosen by the task score on validation.
* ``trl``       - `SFTTrainer` + `peft_config=LoraConfig(...)` on prompt/completion conversations (TRL's
  completion-only loss), with the settings of TRL's docs (PEFT integration page: learning_rate 2e-4,
  "~10x the full fine-tuning rate for LoRA"; the SFTConfig defaults otherwise: linear schedule, no warm-up)
  and what is held equal: LoRA rank, alpha, dropout and target modules, rows per micro-batch, gradient
  accumulation, sequence length, packing (so the same tokens per optimizer step), the number of optimizer
  steps tunesmith took (so TRL's schedule ends where the budget ends), and a wall-clock cap of tunesmith's
  training wall time. Exceptions as on CPU in benchmarks/train_throughput.py: fp32 (``bf16=False``) and no
  gradient checkpointing.

Time is the wall time of each side's training process (model load, tokenising and training, tunesmith's
validations included); evaluation is outside it and the same for both. The comparison is "what each reaches
in the same time" (field accuracy, fully-right rate, valid JSON, invented values on the test split), and the
ratio of wall times; `--target` says whether each reached a field accuracy.

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
TRL_LEARNING_RATE = 2e-4  # TRL docs, PEFT integration: "~10x the full fine-tuning rate for LoRA"
NEEDS_TRL = ("time_to_quality.py compares tunesmith with TRL's SFTTrainer and needs TRL and PEFT: "
             "pip install trl peft   (or: pip install -e \".[bench]\")")
# --quick checks the harness, not quality: a fixed few steps (a short budget would be refused on a loaded machine,
# whose probe alone can take minutes), few examples scored
QUICK = {"n": 120, "budget": None, "max_steps": 3, "max_examples": 20, "task_eval_examples": 8, "batch_size": 1}
FULL = {"n": 900, "budget": "15m", "max_steps": None, "max_examples": None, "task_eval_examples": None, "batch_size": None}


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


def trl_settings(run_config: dict, steps: int, wall_cap_s: float) -> dict:
    """What the TRL side trains with, from tunesmith's run config: the held-equal values and TRL's own."""
    t = run_config["train"]
    lora = t["lora"]
    return {
        "lora": {"r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
                 "target_modules": lora["target_modules"], "bias": "none", "task_type": "CAUSAL_LM"},
        "sft": {"per_device_train_batch_size": t["batch_size"], "gradient_accumulation_steps": t["grad_accum"],
                "max_length": t["max_seq_length"], "packing": t["packing"], "max_steps": steps,
                "learning_rate": TRL_LEARNING_RATE, "seed": run_config.get("seed", 0),
                "bf16": False, "fp16": False, "gradient_checkpointing": False,
                "report_to": "none", "save_strategy": "no", "logging_steps": 10},
        "wall_cap_s": wall_cap_s,
    }


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


def compare(sides: dict[str, dict], target: float) -> dict:
    """Per side: its headline numbers, wall time and whether it reached ``target`` field accuracy; and the ratios
    tunesmith / TRL (field accuracy, wall time)."""
    out = {"target_field_accuracy": target, "sides": {}}
    for name, s in sides.items():
        acc = s["metrics"]["field_accuracy"]
        out["sides"][name] = {**s, "reached_target": acc is not None and acc >= target}
    ts, trl = sides.get("tunesmith"), sides.get("trl")
    if ts and trl:
        a, b = ts["metrics"]["field_accuracy"], trl["metrics"]["field_accuracy"]
        out["field_accuracy_ratio"] = a / b if a is not None and b else None
        out["wall_time_ratio"] = ts["wall_s"] / trl["wall_s"] if trl["wall_s"] else None
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

    class WallClockCap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() - launched >= s["wall_cap_s"]:
                control.should_training_stop = True

    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(prompt_completion(records)),
                         args=SFTConfig(output_dir=s["output_dir"], **s["sft"]),
                         peft_config=LoraConfig(**s["lora"]), callbacks=[WallClockCap()])
    trainer.train()
    trainer.model.save_pretrained(s["adapter_dir"])
    Path(s["result"]).write_text(json.dumps({"steps": trainer.state.global_step}))


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
    _cli("advise", "--data", str(data), *model, "--no-interactive", "-o", str(cfg_path), env=env)
    overrides = ["name=ttq", f"output_dir={work}", "eval.adversarial.enabled=false", "eval.regression.enabled=false"]
    if args.task_eval_examples:
        overrides.append(f"train.task_eval_examples={args.task_eval_examples}")
    if args.batch_size:  # both sides: TRL's settings are read from the config tunesmith trained with
        overrides += [f"train.batch_size={args.batch_size}", "train.grad_accum=1"]
    _cli("data", "prepare", str(cfg_path), *overrides, env=env)  # outside the timed training, as for TRL
    ts_wall = _timed_cli("train", str(cfg_path), *overrides, *train_limit(args.budget, args.max_steps), env=env)
    run_dir = work / "ttq"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    ts_steps = json.loads((run_dir / "train_summary.json").read_text())["steps"]

    # TRL: same prepared train split, same model, same LoRA, tokens per step and steps; capped at tunesmith's wall
    settings = {"train_file": str(run_dir / "data" / "train.jsonl"), "model_dir": _model_dir(cfg["model"]["name_or_path"]),
                "output_dir": str(work / "trl-out"), "adapter_dir": str(work / "trl-adapter"),
                "result": str(work / "trl-result.json"), **trl_settings(cfg, ts_steps, ts_wall)}
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
    result = compare(sides, args.target)
    result["conditions"] = {"examples": args.n, "budget": args.budget, "max_steps": args.max_steps, "test_examples": metrics.get("test_examples"),
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
    ap.add_argument("--target", type=float, default=0.99, help="field accuracy that counts as reached")
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
