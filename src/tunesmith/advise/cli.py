"""`tunesmith advise`: fine-tune or not, which method, memory, time, cost and break-even.

Answers come from the run config's ``advise:`` section, overridden by flags, and, when a terminal
is attached, from prompts for what is still unanswered. Without a terminal it never prompts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.errors import TunesmithError

app = typer.Typer(help="Decide before you spend: fine-tune or not, which method, memory, time, cost, break-even.")

Opt = typer.Option


def _flags_to_answers(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def _ask(answers: dict[str, Any], have_data: bool) -> dict[str, Any]:
    """Prompt for unanswered questions (only called with a terminal attached)."""
    out = dict(answers)
    typer.echo("A few questions (Enter keeps the default):")
    if out.get("prompt_engineering_tried") is None:
        out["prompt_engineering_tried"] = typer.confirm(
            "1. Have you tried prompt engineering (few-shot, chain-of-thought, structured output)?", default=False)
    if not have_data and out.get("examples") is None:
        n = typer.prompt("2. How many high-quality examples do you have?", default=0, type=int)
        out["examples"] = n or None
    while out.get("data_kind") not in ("instruction", "domain", "task"):
        out["data_kind"] = typer.prompt("   Which kind: instruction / domain / task?", default="task").strip().lower()
    if out.get("narrow_task") is None:
        out["narrow_task"] = typer.confirm("3. Is the task narrow and consistent (one job, one output format)?", default=True)
    for key, question in [("knowledge_changes_often", "   Does the knowledge it needs change often?"),
                          ("needs_citations", "   Must answers cite sources?"),
                          ("documents_exceed_context", "   Do the documents exceed the context window?")]:
        if key not in out:
            out[key] = typer.confirm(question, default=False)
    if out.get("monthly_inference_tokens") is None:
        v = typer.prompt("4. Tokens served per month (0 = unknown)", default=0.0, type=float)
        out["monthly_inference_tokens"] = v or None
    if out.get("monthly_inference_tokens") and out.get("api_price_per_m") is None:
        v = typer.prompt("   USD per million tokens of the API you use today (0 = unknown)", default=0.0, type=float)
        out["api_price_per_m"] = v or None
    return out


@app.callback(invoke_without_command=True)
def advise(
    config: Annotated[Path | None, Opt("--config", "-c", help="Run config YAML (its advise: section holds the answers).")] = None,
    data: Annotated[Path | None, Opt("--data", "-d", help="Dataset to measure: JSONL file or prepared data folder.")] = None,
    model: Annotated[str | None, Opt("--model", "-m", help="Architecture: catalogue name (llama-3.1-8b), folder, or embedded:...")] = None,
    gpu: Annotated[str | None, Opt(help="GPU to plan for (catalogue name); default: the cheapest that fits.")] = None,
    num_gpus: Annotated[int | None, Opt(help="GPUs (data parallel).")] = None,
    examples: Annotated[int | None, Opt(help="High-quality examples you have (measured when --data is given).")] = None,
    kind: Annotated[str | None, Opt(help="instruction | domain | task")] = None,
    prompt_engineering: Annotated[bool | None, Opt("--prompt-engineering-tried/--prompt-engineering-not-tried", help="Few-shot / CoT / structured output tried?")] = None,
    narrow: Annotated[bool | None, Opt("--narrow/--broad", help="Is the task narrow and consistent?")] = None,
    consistent_format: Annotated[bool | None, Opt("--consistent-format/--varied-format", help="One output format?")] = None,
    knowledge_changes_often: Annotated[bool | None, Opt("--knowledge-changes-often", help="The knowledge changes often.")] = None,
    needs_citations: Annotated[bool | None, Opt("--needs-citations", help="Answers must cite sources.")] = None,
    documents_exceed_context: Annotated[bool | None, Opt("--documents-exceed-context", help="Documents exceed the context window.")] = None,
    monthly_tokens: Annotated[float | None, Opt(help="Tokens served per month.")] = None,
    latency_sensitive: Annotated[bool | None, Opt("--latency-sensitive", help="Latency / per-call cost is critical.")] = None,
    api_price: Annotated[float | None, Opt(help="USD per million tokens of the API used today.")] = None,
    ft_price: Annotated[float | None, Opt(help="USD per million tokens to serve the fine-tune (default: a dedicated GPU).")] = None,
    price_per_hour: Annotated[float | None, Opt(help="Override the GPU's USD/hour.")] = None,
    mfu: Annotated[float | None, Opt(help="Model FLOP utilisation to assume (0-1).")] = None,
    gpu_catalog: Annotated[Path | None, Opt(help="JSON file with extra/corrected GPUs.")] = None,
    stratify_field: Annotated[str | None, Opt(help="Key of each input row holding its label.")] = None,
    recipe: Annotated[str | None, Opt(help="Training recipe of the written config: auto (by model, method and data) | seed (3 epochs, 4 x 4, lr 2e-4).")] = None,
    budget: Annotated[str | None, Opt("--budget", help="Time training may take, e.g. 15m (train.time_budget): the written "
                                      "config trains to it, and the recipe plans the most epochs the budget's probe "
                                      "then cuts.", show_default=False)] = None,
    this_machine: Annotated[bool, Opt("--this-machine/--no-this-machine", help="Measure this machine (a short matmul probe) and estimate the time on it.")] = True,
    output: Annotated[Path | None, Opt("--output", "-o", help="Write the ready run config YAML here.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the advice as JSON instead of tables.")] = False,
    interactive: Annotated[bool | None, Opt("--interactive/--no-interactive", help="Ask for missing answers (default: when a terminal is attached).")] = None,
    list_models: Annotated[bool, Opt("--list-models", help="List the architecture catalogue and exit.")] = False,
    list_gpus: Annotated[bool, Opt("--list-gpus", help="List the GPU catalogue and exit.")] = False,
) -> None:
    """Fine-tune or not (prompt engineering, RAG, both), which method, memory, time, cost and break-even."""
    from tunesmith.console import console

    if list_models or list_gpus:
        _list(console, list_models, list_gpus, gpu_catalog)
        return
    from tunesmith.config import load_config

    cfg = load_config(config, [f"train.time_budget={budget}"] if budget is not None else [])
    flags = _flags_to_answers(
        model=model, gpu=gpu, num_gpus=num_gpus, examples=examples, data_kind=kind,
        prompt_engineering_tried=prompt_engineering, narrow_task=narrow, consistent_format=consistent_format,
        knowledge_changes_often=knowledge_changes_often, needs_citations=needs_citations,
        documents_exceed_context=documents_exceed_context, monthly_inference_tokens=monthly_tokens,
        latency_sensitive=latency_sensitive, api_price_per_m=api_price, ft_price_per_m=ft_price,
        price_per_hour=price_per_hour, mfu=mfu, gpu_catalog=str(gpu_catalog) if gpu_catalog else None, recipe=recipe,
    )
    data_path = data.expanduser().resolve() if data is not None else _config_dataset(cfg)  # a flag: from where you stand
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not as_json
    answers = _answers({**cfg.advise.model_dump(exclude_unset=True), **flags}, ask=interactive, have_data=data_path is not None)
    # a relative catalogue path from the config file is relative to that file; from a flag, to the working directory
    catalog = answers.gpu_catalog
    if catalog and config and not Path(catalog).is_absolute() and "gpu_catalog" not in flags:
        catalog = str(cfg.resolve_path(catalog))
    field = stratify_field or cfg.data.stratify_field
    from tunesmith.advise.advisor import build_advice

    advice = build_advice(cfg, answers, data_path=data_path, gpu_catalog=catalog, stratify_field=field, probe=this_machine)
    from tunesmith.advise.render import advice_to_dict, render

    if as_json:
        typer.echo(json.dumps(advice_to_dict(advice), indent=2))
    else:
        render(advice, console)
    if output is not None:
        _write_run_config(output, advice, cfg, data_path=data_path, stratify_field=field, console=console if not as_json else _stderr())


def _config_dataset(cfg) -> Path | None:
    """The dataset the config points at: its prepared data, else its input file (None when neither exists)."""
    prepared = cfg.run_dir / "data"
    if (prepared / "train.jsonl").is_file():
        return prepared
    if cfg.data.train_file and cfg.resolve_path(cfg.data.train_file).is_file():
        return cfg.resolve_path(cfg.data.train_file)
    return None


def _answers(merged: dict[str, Any], *, ask: bool, have_data: bool):
    """The advise answers (config section overridden by flags, then prompts), validated: errors name the key."""
    from pydantic import ValidationError

    from tunesmith.advise.config import AdviseConfig
    from tunesmith.config import format_validation_error

    if ask:
        merged = _ask(merged, have_data=have_data)
    try:
        return AdviseConfig.model_validate(merged)
    except ValidationError as err:
        raise TunesmithError(format_validation_error(err, "advise answers", AdviseConfig)) from None


def _write_run_config(output: Path, advice, cfg, *, data_path: Path | None, stratify_field: str | None, console) -> None:
    from tunesmith.advise.runconfig import run_config_dict, write_run_config

    d = run_config_dict(advice, cfg, config_dir=output.expanduser().resolve().parent,
                        data_path=data_path if data_path and data_path.is_file() else None, stratify_field=stratify_field)
    write_run_config(output, d)
    note = "" if advice.verdict in ("fine-tune", "both") else " (for when you do fine-tune: the verdict is " + advice.verdict + ")"
    console.print(f"\nrun config written to {output}{note}")


def _stderr():
    from tunesmith.console import err_console

    return err_console


def _list(console, models: bool, gpus_: bool, gpu_catalog: Path | None) -> None:
    from rich.table import Table

    from tunesmith.estimate.arch import Architecture, load_architecture_catalog
    from tunesmith.estimate.hardware import load_gpu_catalog

    if models:
        t = Table(title="Architectures (--model)", title_justify="left")
        t.add_column("name", no_wrap=True)
        for c in ("params", "layers", "hidden", "heads / kv", "intermediate", "vocab", "tied"):
            t.add_column(c)
        for name in load_architecture_catalog():
            a = Architecture.from_catalog(name)
            t.add_row(name, f"{a.total_params / 1e9:.2f}B", str(a.num_layers), str(a.hidden_size),
                      f"{a.num_heads} / {a.num_kv_heads}", str(a.intermediate_size), str(a.vocab_size),
                      "yes" if a.tie_word_embeddings else "no")
        console.print(t)
    if gpus_:
        t = Table(title="GPUs (--gpu)", title_justify="left")
        t.add_column("name", no_wrap=True)
        for c in ("memory GiB", "bf16 TFLOP/s", "GB/s", "USD/h"):
            t.add_column(c)
        for g in load_gpu_catalog(gpu_catalog).values():
            t.add_row(g.name, f"{g.memory_gib:g}", f"{g.bf16_tflops:g}", f"{g.bandwidth_gbs:g}", f"{g.usd_per_hour:.2f}")
        console.print(t)
