"""`tunesmith export merge|gguf|verify` and `tunesmith serve`: thin wrappers over deploy.merge, deploy.gguf_export,
deploy.server and deploy.vllm. Every command reads the run config (adapter, base model, serve section).
``--verify`` (and `export verify --endpoint`) checks the artifact against the adapter on the test split
(evaluate/verify.py, run through the pipeline): exit status 1 when its parity verdict is fail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.console import console
from tunesmith.errors import TunesmithError

export_app = typer.Typer(help="Merge adapters and export safetensors / GGUF.", no_args_is_help=True)

ConfigArg = Annotated[Path, typer.Argument(help="Run config YAML file.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Overrides as key.sub=value (e.g. serve.port=8080).", show_default=False)
]


VerifyOpt = Annotated[bool, typer.Option("--verify", help="Then answer the run's test split with it and with the "
                                       "adapter: agreement and parity verdict, written to <run_dir>/verify/; exit "
                                       "status 1 when the verdict is fail.")]
MarginOpt = Annotated[float | None, typer.Option("--margin", help="Parity margin in points of the task score "
                                                  "(default: eval.parity.margin_points, else 2).", show_default=False)]


def _load(config: Path, overrides: list[str] | None):
    from tunesmith.config import load_config

    return load_config(config, overrides or [])


def _adapter_dir(cfg, adapter: Path | None) -> Path:
    path = adapter or cfg.run_dir / "adapter"
    if not (path / "adapter_config.json").is_file():
        if cfg.train.method == "full" and (cfg.run_dir / "model").is_dir():
            raise TunesmithError(f"this run trained the full model: {cfg.run_dir / 'model'} is already merged",
                                 hint="export gguf with --model that folder")
        raise TunesmithError(f"no adapter at {path}", hint="run `tunesmith train` first, or pass --adapter")
    return path


def _verify(cfg, kind: str, location: str, margin: float | None, **endpoint) -> None:
    """Run the artifact's parity check (it prints its verdict and what changed); exit status 1 on fail."""
    from tunesmith.pipeline import run_verify

    if run_verify(cfg, kind, location, margin_points=margin, **endpoint)["verdict"] == "fail":
        raise typer.Exit(1)


@export_app.command()
def merge(
    config: ConfigArg,
    overrides: OverridesArg = None,
    adapter: Annotated[Path | None, typer.Option(help="Adapter folder (default: <run_dir>/adapter).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <run_dir>/merged).")] = None,
    dtype: Annotated[str, typer.Option(help="Saved dtype: float32, bfloat16 or float16.")] = "float32",
    verify: VerifyOpt = False,
    margin: MarginOpt = None,
) -> None:
    """Merge the run's LoRA/DoRA/QLoRA adapter into the base; save safetensors, tokenizer and a model card."""
    from tunesmith.deploy.merge import merge_adapter

    cfg = _load(config, overrides)
    path = merge_adapter(_adapter_dir(cfg, adapter), out or cfg.run_dir / "merged", base=cfg.model,
                         method=cfg.train.method, dtype=dtype, run_dir=cfg.run_dir)
    console.print(f"[bold]merged[/] ({cfg.train.method}, {dtype}): {path}")
    if verify:
        _verify(cfg, "merged", str(path), margin)


@export_app.command()
def gguf(
    config: ConfigArg,
    overrides: OverridesArg = None,
    model: Annotated[Path | None, typer.Option(help="Merged model folder (default: <run_dir>/merged, "
                                                   "merged first if missing).")] = None,
    out: Annotated[Path | None, typer.Option(help="GGUF file (default: <run_dir>/gguf/<name>-<type>.gguf).")] = None,
    outtype: Annotated[str, typer.Option("--type", help="f32, f16 or q8_0.")] = "f16",
    verify: VerifyOpt = False,
    margin: MarginOpt = None,
) -> None:
    """Write a GGUF file (chat template in its metadata) and an Ollama Modelfile beside it."""
    from transformers import AutoTokenizer

    from tunesmith.deploy.gguf_export import export_gguf, write_modelfile
    from tunesmith.deploy.merge import merge_adapter

    cfg = _load(config, overrides)
    src = model
    if src is None:
        src = cfg.run_dir / ("model" if cfg.train.method == "full" else "merged")
        if not (src / "config.json").is_file() and cfg.train.method != "full":
            merge_adapter(_adapter_dir(cfg, None), src, base=cfg.model, method=cfg.train.method,
                          run_dir=cfg.run_dir)
    target = out or cfg.run_dir / "gguf" / f"{cfg.name}-{outtype}.gguf"
    f = export_gguf(src, target, outtype=outtype, name=cfg.name)
    mf = write_modelfile(f, AutoTokenizer.from_pretrained(src))
    console.print(f"[bold]gguf[/] ({outtype}): {f}\n  Ollama: cd {f.parent} && ollama create {cfg.name} -f {mf.name}")
    if verify:
        _verify(cfg, "gguf", str(f), margin)


@export_app.command("verify")
def verify_endpoint(
    config: ConfigArg,
    overrides: OverridesArg = None,
    endpoint: Annotated[str, typer.Option(help="Base URL of the running server, e.g. http://127.0.0.1:8000/v1.",
                                          show_default=False)] = ...,
    served_model: Annotated[str | None, typer.Option(help="Model name to request (default: the run name, which "
                                                          "`tunesmith serve` gives the run's adapter).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the server's API key.")] = None,
    margin: MarginOpt = None,
) -> None:
    """Answer the run's test split through a running `tunesmith serve` (openai client) and with the adapter:
    agreement and parity verdict, written to <run_dir>/verify/serve.json; exit status 1 when the verdict is fail."""
    import os

    cfg = _load(config, overrides)
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise TunesmithError(f"--api-key-env {api_key_env}: the variable is not set", hint=f"export {api_key_env}=...")
    _verify(cfg, "endpoint", endpoint, margin, served_model=served_model or cfg.name, api_key=key)


def serve(
    config: Annotated[Path | None, typer.Argument(help="Run config YAML file.", show_default=False)] = None,
    overrides: OverridesArg = None,
    engine: Annotated[str | None, typer.Option(help="transformers (this server) or vllm (print its command).")] = None,
    launch: Annotated[bool, typer.Option(help="With --engine vllm: run the command instead of printing it.")] = False,
    new_key: Annotated[bool, typer.Option("--new-key", help="Print a new API key and its digest, then exit.")] = False,
) -> None:
    """Serve the base model and its adapters over an OpenAI-compatible HTTP API (keys, limits, batching)."""
    from tunesmith.deploy.server.auth import new_key as make_key

    if new_key:
        key, digest = make_key()
        typer.echo(f"API key (give it to the client; it is not stored): {key}")
        typer.echo(f"sha256 digest (put it in serve.api_key_hashes or serve.api_keys_file): {digest}")
        return
    if config is None:
        raise TunesmithError("tunesmith serve needs a run config", hint="tunesmith serve config.yaml")
    cfg = _load(config, overrides)
    sc = cfg.serve
    adapters: dict[str, Path] = {k: cfg.resolve_path(v) for k, v in sc.adapters.items()}
    run_adapter = cfg.run_dir / "adapter"
    if not adapters and (run_adapter / "adapter_config.json").is_file():
        adapters = {cfg.name: run_adapter}
    if (engine or sc.engine) == "vllm":
        from tunesmith.deploy import vllm
        from tunesmith.models.loading import resolve_model_path

        argv = vllm.vllm_command(sc, resolve_model_path(cfg.model), adapters, qlora=cfg.train.method == "qlora")
        for note in vllm.notes(sc):
            console.print(f"[yellow]note:[/] {note}")
        if launch:
            raise typer.Exit(vllm.launch(argv))
        typer.echo(vllm.format_command(argv))
        return
    from tunesmith.deploy.server.runner import build_state, run_server

    state = build_state(sc, cfg.model, base_dir=cfg.base_dir, method=cfg.train.method, adapters=adapters)
    console.print(f"[bold]serving[/] {', '.join(state.registry.names())} on http://{sc.host}:{sc.port}/v1")
    run_server(state)
