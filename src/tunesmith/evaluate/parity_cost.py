"""Cost per million tokens of each model in the parity certificate.

* An endpoint: its prices per million input and output tokens (``eval.endpoints[].usd_per_million_input_tokens``
  / ``..._output_tokens``) weighted by the tokens its responses reported (``usage``) on the test split.
* A local model: the hourly price of the hardware (``eval.parity.usd_per_hour``, else ``eval.parity.gpu``'s price
  in the estimate/ GPU catalogue, else the catalogue GPU this evaluation ran on) divided by the throughput
  measured on the test split (prompt + generated tokens per second of generation, batched as eval batches).

Both are "US dollars per million tokens processed (prompt + answer)", so they compare directly. A local price
is only as good as the match between the hardware measured and the hardware priced: the device it ran on is
kept beside the number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.estimate.hardware import load_gpu_catalog


def _token_sums(examples: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, examples counted) over the examples that report both."""
    counted = [e for e in examples if e.get("prompt_tokens") is not None and e.get("completion_tokens") is not None]
    return (sum(e["prompt_tokens"] for e in counted), sum(e["completion_tokens"] for e in counted), len(counted))


def endpoint_cost(examples: Sequence[dict[str, Any]], *, input_price: float | None,
                  output_price: float | None) -> dict[str, Any]:
    """Cost of an endpoint per million tokens, from its configured prices and the reported usage."""
    if input_price is None or output_price is None:
        return {"usd_per_million_tokens": None,
                "note": "set usd_per_million_input_tokens and usd_per_million_output_tokens on the endpoint"}
    prompt, completion, counted = _token_sums(examples)
    if prompt + completion == 0:
        return {"usd_per_million_tokens": None, "note": "the endpoint reported no token usage"}
    usd = (prompt * input_price + completion * output_price) / 1e6
    return {"usd_per_million_tokens": usd / (prompt + completion) * 1e6, "prompt_tokens": prompt,
            "completion_tokens": completion, "examples": counted,
            "basis": f"${input_price:g} / ${output_price:g} per million input / output tokens"}


def hourly_price(*, usd_per_hour: float | None, gpu: str | None, device_name: str | None,
                 catalog_file: str | None = None) -> tuple[float | None, str]:
    """(US dollars per hour, where the price comes from) of the hardware a local model runs on."""
    if usd_per_hour is not None:
        return usd_per_hour, "eval.parity.usd_per_hour"
    catalog = load_gpu_catalog(catalog_file)
    if gpu is not None:
        from tunesmith.estimate.hardware import get_gpu

        g = get_gpu(gpu, catalog)
        return g.usd_per_hour, f"{g.name} in the GPU catalogue"
    if device_name:
        squashed = device_name.lower().replace(" ", "").replace("-", "")
        for key, g in sorted(catalog.items(), key=lambda kv: -len(kv[0])):  # the longest name that matches
            if key.lower().split("-")[0].replace(" ", "") in squashed:
                return g.usd_per_hour, f"{g.name} in the GPU catalogue (this evaluation's {device_name})"
    return None, "set eval.parity.gpu (a GPU catalogue name) or eval.parity.usd_per_hour to price the local model"


def local_cost(examples: Sequence[dict[str, Any]], *, generation_seconds: float | None, usd_per_hour: float | None,
               price_source: str, device: str) -> dict[str, Any]:
    """Cost of a local model per million tokens: the hourly price over the measured throughput."""
    prompt, completion, counted = _token_sums(examples)
    if not generation_seconds or prompt + completion == 0:
        return {"usd_per_million_tokens": None, "note": "no generation measured", "measured_on": device}
    tokens_per_s = (prompt + completion) / generation_seconds
    out: dict[str, Any] = {"tokens_per_second": tokens_per_s, "prompt_tokens": prompt, "completion_tokens": completion,
                           "examples": counted, "measured_on": device}
    if usd_per_hour is None:
        return {**out, "usd_per_million_tokens": None, "note": price_source}
    return {**out, "usd_per_million_tokens": usd_per_hour / 3600 / tokens_per_s * 1e6,
            "basis": f"${usd_per_hour:g}/h ({price_source}) at {tokens_per_s:.0f} tokens/s measured on {device}"}


def check_gpu_name(gpu: str | None, catalog_file: str | None = None) -> None:
    """Fail early (before any model loads) on an unknown eval.parity.gpu."""
    if gpu is None:
        return
    from tunesmith.estimate.hardware import get_gpu

    try:
        get_gpu(gpu, load_gpu_catalog(catalog_file))
    except TunesmithError as e:
        raise TunesmithError(f"eval.parity.gpu: {e.message}", hint=e.hint) from None
