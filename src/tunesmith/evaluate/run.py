"""`tunesmith eval`: generate on the held-out test split with each model, score, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepare import PreparedData
from tunesmith.data.records import prompt_messages, reference_answer
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.generate import generate_greedy, render_prompts
from tunesmith.evaluate.report import print_table, write_report
from tunesmith.evaluate.scorers import aggregate, score_example
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.utils.io import write_jsonl


def load_tuned(cfg: RunConfig, base_model):
    """The tuned model: the base with the run's adapter (plain PEFT), or the full fine-tuned model."""
    adapter = cfg.run_dir / "adapter"
    full = cfg.run_dir / "model"
    if adapter.is_dir():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(adapter))
    if full.is_dir():
        from tunesmith.models.config import ModelConfig

        return load_model(ModelConfig(name_or_path=str(full), device=cfg.model.device, dtype=cfg.model.dtype))
    raise TunesmithError(f"no trained adapter or model in {cfg.run_dir}", hint="run `tunesmith train` first")


def evaluate_model(model, tokenizer, records: list[dict], cfg: RunConfig, name: str) -> dict[str, Any]:
    ec = cfg.eval
    convs = [prompt_messages(r) for r in records]
    prompts = render_prompts(tokenizer, convs)
    with Progress(TextColumn(f"[bold blue]generating ({name})"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(name, total=len(prompts))
        t0 = time.perf_counter()
        preds = generate_greedy(model, tokenizer, prompts, max_new_tokens=ec.max_new_tokens, batch_size=ec.batch_size,
                                on_batch=lambda n: progress.update(task, advance=n))
        seconds = time.perf_counter() - t0
    examples = []
    scores = []
    for r, conv, pred in zip(records, convs, preds, strict=True):
        ref = reference_answer(r)
        s = score_example(pred, ref, label_pattern=ec.label_pattern, format_pattern=ec.format_pattern)
        scores.append(s)
        examples.append({"id": r.get("id", ""), "prompt": conv[-1]["content"], "reference": ref, "prediction": pred,
                         "correct": s.correct, "format_ok": s.format_ok, "fields": s.fields})
    metrics = aggregate(scores)
    metrics["generation_seconds"] = round(seconds, 2)
    return {"metrics": metrics, "examples": examples}


def evaluate_from_config(cfg: RunConfig, prepared: PreparedData) -> dict[str, Any]:
    records = prepared.test[: cfg.eval.max_examples] if cfg.eval.max_examples else prepared.test
    if not records:
        raise TunesmithError("the test split is empty", hint="set data.test_fraction above 0")
    tokenizer = load_tokenizer(cfg.model)
    base = load_model(cfg.model)
    eval_dir: Path = cfg.run_dir / "eval"
    results: dict[str, dict[str, Any]] = {}
    for name in cfg.eval.models:
        model = base if name == "base" else load_tuned(cfg, base)
        results[name] = evaluate_model(model, tokenizer, records, cfg, name)
        write_jsonl(eval_dir / f"{name}.jsonl", results[name]["examples"])
        if model is not base and hasattr(model, "unload"):
            base = model.unload()  # give the clean base back for the next model
    extra = {"model": cfg.model.name_or_path, "method": cfg.train.method, "test_examples": len(records)}
    write_report(cfg.run_dir, results, title=f"tunesmith report: {cfg.name}", extra=extra,
                 show_failures=cfg.eval.show_failures)
    print_table(results)
    console.print(f"report: {cfg.run_dir / 'report.md'}  metrics: {cfg.run_dir / 'metrics.json'}")
    return results
