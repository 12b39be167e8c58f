"""The `tunesmith` command line. Each command loads one run config and calls one pipeline stage."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunesmith.console import err_console
from tunesmith.errors import TunesmithError

app = typer.Typer(
    name="tunesmith",
    help="From 'should we fine-tune?' to a served, evaluated, fine-tuned LLM: one tool, one config file.\n\n"
    "Every command takes a run config (YAML) and optional key.sub=value overrides, e.g.\n\n"
    "  tunesmith run examples/support-tickets/config.yaml train.epochs=1",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="Run config YAML file.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Overrides as key.sub=value (e.g. train.lr=1e-4).", show_default=False)
]
BudgetOpt = Annotated[
    str | None, typer.Option("--budget", help="Time training may take, e.g. 15m, 90s, 1h30m or seconds "
                             "(train.time_budget): a probe of the first steps sets how many fit.", show_default=False)
]


def _load(config: Path, overrides: list[str] | None):
    from tunesmith.config import load_config

    return load_config(config, overrides or [])


def _with_budget(overrides: list[str] | None, budget: str | None) -> list[str]:
    """The overrides, with ``--budget`` as train.time_budget (last, so it wins over an override)."""
    return [*(overrides or []), *([f"train.time_budget={budget}"] if budget is not None else [])]


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="Run config YAML file (omit it with --data).", show_default=False)] = None,
    overrides: OverridesArg = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Zero config: advise writes the run config for this data file "
                                  "into runs/<name>/config.yaml (the file stem, after its folder if the stem is generic: order-emails-train), then the whole pipeline runs.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="With --data: the model (default: the embedded SmolLM2-135M-Instruct).")] = None,
    recipe: Annotated[str, typer.Option(help="With --data: training recipe auto | seed (see tunesmith advise).")] = "auto",
    budget: BudgetOpt = None,
) -> None:
    """Run the whole pipeline: prepare data, fine-tune, evaluate base vs tuned, write the report.

    `tunesmith run --data FILE [--model M] [key=value ...]` needs no config: advise chooses one for the data
    (recipe, evaluation) and writes it into the run folder, so the next run can repeat or change it.
    """
    from tunesmith.errors import ConfigError
    from tunesmith.pipeline import run_all, zero_config

    if data is None:
        if config is None:
            raise ConfigError("tunesmith run needs a run config, or --data FILE to let advise write one",
                              hint="tunesmith run config.yaml, or tunesmith run --data train.jsonl")
        if model is not None:
            raise ConfigError("--model goes with --data; with a config, override model.name_or_path=...")
        run_all(_load(config, _with_budget(overrides, budget)))
        return
    overrides = _with_budget(overrides, budget)
    if config is not None:
        if "=" in str(config) and not config.exists():  # `run --data f.jsonl train.epochs=1`: an override, not a config
            overrides.insert(0, str(config))
        else:
            raise ConfigError("give a run config or --data, not both",
                              hint=f"to run {config} on this data: tunesmith run {config} data.train_file={data}")
    run_all(zero_config(data, model=model, overrides=overrides, recipe=recipe))


@app.command()
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last complete checkpoint.")] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes per machine (GPUs); >1 launches torchrun.")] = 1,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Machines taking part (multi-node).")] = 1,
    rdzv_endpoint: Annotated[
        str | None, typer.Option("--rdzv-endpoint", help="host:port of node 0 for multi-node runs.")
    ] = None,
    distributed: Annotated[
        str | None,
        typer.Option("--distributed", help="ddp | fsdp | deepspeed (same as train.distributed=...)."),
    ] = None,
    zero_stage: Annotated[
        int | None, typer.Option("--zero-stage", help="DeepSpeed ZeRO stage 2 or 3 (train.zero_stage).")
    ] = None,
    budget: BudgetOpt = None,
) -> None:
    """Fine-tune the model on the prepared train split (prepares the data first if needed).

    Several processes (GPUs, machines) go through torchrun with PyTorch DDP, FSDP2 or DeepSpeed
    ZeRO-2/3 (--distributed); the same config runs on one CPU or many GPUs.
    """
    overrides = _with_budget(overrides, budget)
    if distributed is not None:
        overrides.append(f"train.distributed={distributed}")
    if zero_stage is not None:
        overrides.append(f"train.zero_stage={zero_stage}")
    cfg = _load(config, overrides)
    if nproc > 1 or nnodes > 1:
        from tunesmith.train.launch import launch_torchrun

        if cfg.train.distributed == "deepspeed":  # one clear message here, not one per rank
            from tunesmith.train.parallel import require_deepspeed

            require_deepspeed()
        from tunesmith.pipeline import prepare_for_launch

        prepare_for_launch(cfg)
        raise typer.Exit(launch_torchrun(config, overrides, nproc=nproc, nnodes=nnodes,
                                         rdzv_endpoint=rdzv_endpoint, resume=resume))
    from tunesmith.pipeline import run_train

    run_train(cfg, resume=resume)


@app.command("eval")
def evaluate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under",
            help="CI gate KEY=VALUE on a metrics.json path (repeatable), e.g. tuned.accuracy=0.8 or "
            "adversarial.tuned.pass_rate=0.5; exit status 1 when a metric is below its value. `parity` alone: "
            "the eval.parity verdict must be pass.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate base, few-shot, tuned (and API) models: task accuracy, format, hallucination, regression."""
    from tunesmith.evaluate.gates import GateFailed, parse_gates
    from tunesmith.pipeline import run_eval

    cfg = _load(config, overrides)
    gates = parse_gates(fail_under or [])
    if gates:
        cfg.eval.fail_under = {**cfg.eval.fail_under, **gates}
    try:
        run_eval(cfg)
    except GateFailed as e:
        err_console.print(f"[bold red]gate missed:[/] {escape(e.message)}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command("import-job")
def import_job(
    job: Annotated[Path, typer.Argument(help="The fine-tuning job's JSON, as GET /v1/fine_tuning/jobs/{id} returns it.",
                                        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the run config.")] = Path("config.yaml"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="The open model to fine-tune instead of the job's "
                                              "OpenAI model (default: the embedded SmolLM2-135M-Instruct).")] = None,
    files: Annotated[list[str] | None, typer.Option("--files", help="FILE_ID=PATH: the local copy of a file the job names "
                                                    "(repeatable), e.g. --files file-abc123=train.jsonl.", show_default=False)] = None,
    files_dir: Annotated[Path | None, typer.Option("--files-dir", help="A folder of the job's downloaded files named by id "
                                                   "(file-abc123.jsonl).", show_default=False)] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="Evaluate the job's ft: model (an OpenAI "
                                            "endpoint) beside the tuned one, as the parity certificate's reference.")] = True,
    reference_base_url: Annotated[str, typer.Option("--reference-base-url", help="Where the ft: model answers (an Azure "
                                                    "OpenAI deployment, a proxy, a stand-in server).")] = "https://api.openai.com/v1",
    reference_model: Annotated[str | None, typer.Option("--reference-model", help="The model name to ask there "
                                                        "(default: the job's fine_tuned_model).", show_default=False)] = None,
    reference_key_env: Annotated[str, typer.Option("--reference-key-env", help="Environment variable holding its API key "
                                                   "('' for none).")] = "OPENAI_API_KEY",
    price_input: Annotated[float | None, typer.Option("--price-input", min=0.0, help="USD per million prompt tokens you "
                                                      "pay for the ft: model (the parity certificate's cost column).",
                                                      show_default=False)] = None,
    price_output: Annotated[float | None, typer.Option("--price-output", min=0.0, help="USD per million answer tokens "
                                                       "you pay for it.", show_default=False)] = None,
) -> None:
    """Bring an OpenAI fine-tuning job over: write a run config for its files and settings, and print what each job
    setting became (or why it cannot map). Preference (DPO) jobs are recognised and refused: not yet trainable."""
    from tunesmith.console import console
    from tunesmith.migrate.openai_job import import_job as run_import
    from tunesmith.migrate.openai_job import ReferenceEndpoint, mapping_line, parse_file_map

    cfg, rows = run_import(job, output, files=parse_file_map(files or []), files_dir=files_dir, model=model,
                           reference=reference,
                           reference_endpoint=ReferenceEndpoint(reference_base_url, reference_model, reference_key_env,
                                                                price_input, price_output))
    console.print(f"[bold]job {escape(str(job))} -> {escape(str(output))}[/]")
    for row in rows:
        console.print(mapping_line(row), soft_wrap=True, markup=False)
    console.print(f"run it: tunesmith run {output}", soft_wrap=True, markup=False)


def _register_stage_apps() -> None:
    """Stages with several commands own a typer sub-app in ``tunesmith.<stage>.cli``."""
    from tunesmith.advise.cli import app as advise_app
    from tunesmith.data.cli import app as data_app
    from tunesmith.deploy.cli import export_app, serve

    app.add_typer(data_app, name="data")
    app.add_typer(advise_app, name="advise")
    app.add_typer(export_app, name="export")
    app.command("serve")(serve)


_register_stage_apps()


def main() -> None:
    logging.basicConfig(level=os.environ.get("TUNESMITH_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except TunesmithError as e:
        err_console.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
