"""`tunesmith data ...` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Prepare data: validate, clean, split. Data enters the pipeline here.", no_args_is_help=True)


@app.command()
def prepare(
    config: Annotated[Path, typer.Argument(help="Run config YAML file.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.", show_default=False)] = None,
) -> None:
    """Read every input file (alpaca, OpenAI chat, ShareGPT, prompt/completion, raw text; JSONL/JSON/CSV/Parquet, gzip'd too),
    validate each row, redact PII, remove exact and near duplicates, check token lengths and answer consistency,
    split train/validation/test (stratified, seeded), check leakage, mix general data, and write the prepared folder
    with rejected.jsonl, removed.jsonl, stats.json and report.md/html. See docs/data.md."""
    from tunesmith.config import load_config
    from tunesmith.pipeline import run_data

    run_data(load_config(config, overrides or []))


@app.command()
def capture(
    source: Annotated[Path, typer.Argument(help="Prompts: a .txt file (one per line), or a data file in any supported format "
                                           "(each conversation minus its final assistant turn is sent).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The training file to write (OpenAI chat JSONL).", show_default=False)],
    base_url: Annotated[str, typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The model to ask, e.g. ft:gpt-4o-mini-2024-07-18:acme::abc.")],
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key ('' for none).")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight at most.")] = 4,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Answer length limit (default: the endpoint's).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0: the model's most likely answer.")] = 0.0,
    timeout_s: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per request before it is retried.")] = 60.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429, 5xx and timeouts.")] = 6,
    backoff_s: Annotated[float, typer.Option("--backoff", min=0.0, help="First backoff in seconds (doubles; Retry-After wins).")] = 1.0,
    price_input: Annotated[float, typer.Option("--price-input", min=0.0, help="Price per million prompt tokens (cost estimate).")] = 0.0,
    price_output: Annotated[float, typer.Option("--price-output", min=0.0, help="Price per million answer tokens (cost estimate).")] = 0.0,
    json_schema: Annotated[Path | None, typer.Option("--json-schema", help="JSON Schema file every answer must satisfy.", show_default=False)] = None,
    send_schema: Annotated[bool, typer.Option("--send-schema", help="Also send --json-schema as a structured output (response_format).")] = False,
    regex: Annotated[str | None, typer.Option("--regex", help="Regex every answer must match in full.", show_default=False)] = None,
    format_check: Annotated[bool, typer.Option("--format-check/--no-format-check", help="Quarantine answers whose format class "
                                               "(json/code/list/short/prose) differs from the source data's answers.")] = True,
    fmt: Annotated[str, typer.Option("--format", help="Row format of SOURCE (auto, openai, alpaca, sharegpt, completion).")] = "auto",
) -> None:
    """Send prompts to an OpenAI-compatible endpoint and write its answers as a training file. Resumable: answers are
    journaled beside the output by request hash, so a re-run after a crash or Ctrl-C pays for none twice. Answers
    failing the format check go to OUTPUT.rejected.jsonl. See docs/data.md#capturing-a-models-answers."""
    import json

    from tunesmith.console import console
    from tunesmith.data.capture import CaptureOptions
    from tunesmith.data.capture import capture as run_capture
    from tunesmith.data.capture_progress import capture_progress
    from tunesmith.errors import ConfigError
    from tunesmith.utils.openai_http import api_key_from_env

    schema = None
    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--json-schema {json_schema}: cannot read a JSON Schema: {e}") from None
    opts = CaptureOptions(base_url=base_url, model=model, api_key=api_key_from_env(api_key_env or None, "capture"),
                          concurrency=concurrency, max_tokens=max_tokens, temperature=temperature, timeout_s=timeout_s,
                          max_retries=max_retries, backoff_s=backoff_s, price_input=price_input, price_output=price_output,
                          json_schema=schema, regex=regex, send_schema=send_schema, check_answer_format=format_check)
    with capture_progress(opts) as progress:
        result = run_capture(source, output, opts, fmt=fmt, progress=progress)
    t = result.tally
    console.print(f"{result.written} answers written to {result.output}; {result.rejected} rejected ({result.rejected_path}); "
                  f"{t.sent} requests paid now, {t.cached} from the journal, {t.failed} failed; "
                  f"tokens {t.prompt_tokens} in / {t.completion_tokens} out, about ${t.cost(opts):.4f}",
                  soft_wrap=True, markup=False)
    if t.throttled:
        lowered = (f"; requests in flight lowered from {concurrency} to {t.lowest_concurrency}"
                   if t.lowest_concurrency is not None else "")
        console.print(f"the server answered 429 (too many requests) {t.throttled} times, each retried{lowered}: "
                      "--concurrency at or below its per-key limit avoids the waits", soft_wrap=True, markup=False)
    if t.failed:
        console.print(f"first error: {t.errors[0]}; re-run the same command to retry the failed requests", soft_wrap=True, markup=False)
