"""The summary table and the JSON results."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from gpucheck.context import Context
from gpucheck.device import GIB, flops_text
from gpucheck.shapes import METHODS


def summary_rows(ctx: Context) -> list[dict]:
    rows = []
    for key in ctx.models_run:
        for method in METHODS:
            r = ctx.runner.get(f"train {key} {method}")
            if r is None:
                continue
            m = r.metrics
            row = {"config": f"{key} {method}", "status": r.status, "tokens_per_s": m.get("tokens_per_s"),
                   "mfu": m.get("mfu"), "peak_gib": m["peak_bytes"] / GIB if "peak_bytes" in m else None,
                   "estimate_gib": m["estimate_bytes"] / GIB if "estimate_bytes" in m else None,
                   "estimate_over_measured": m.get("estimate_over_measured")}
            for label, name in (("trl", f"trl {key}"), ("trl_liger", f"trl+liger {key}")):
                t = ctx.runner.get(name)
                if method == "lora" and t is not None and t.status == "ok":
                    row[f"over_{label}"] = t.metrics.get("tunesmith_over_trl")
            rows.append(row)
        for name in (f"trl {key}", f"trl+liger {key}"):
            r = ctx.runner.get(name)
            if r is not None:
                m = r.metrics
                rows.append({"config": f"{key} lora ({name.split()[0].upper()})", "status": r.status,
                             "tokens_per_s": m.get("tokens_per_s"), "mfu": m.get("mfu"),
                             "peak_gib": m["peak_bytes"] / GIB if "peak_bytes" in m else None})
    return rows


def print_summary(ctx: Context) -> None:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    print("\n== summary ==")
    head = (f"{'config':<28} {'status':<8} {'tokens/s':>10} {'MFU%':>6} {'peak GiB':>9} {'est GiB':>8} "
            f"{'est/meas':>9} {'x TRL':>6} {'x Liger':>8}")
    print(head)
    print("-" * len(head))
    for r in summary_rows(ctx):
        print(f"{r['config']:<28} {r['status']:<8} {f(r.get('tokens_per_s'), ',.0f'):>10} "
              f"{f(r['mfu'] * 100 if r.get('mfu') is not None else None, '.1f'):>6} {f(r.get('peak_gib'), '.2f'):>9} "
              f"{f(r.get('estimate_gib'), '.2f'):>8} {f(r.get('estimate_over_measured'), '.2f'):>9} "
              f"{f(r.get('over_trl'), '.2f'):>6} {f(r.get('over_trl_liger'), '.2f'):>8}")
    peak = flops_text(ctx.peak_flops) if ctx.peak_flops else "?"
    print(f"(MFU against {peak}; peak GiB on a GPU = peak reserved + CUDA context, on the CPU the process's peak "
          "RSS; est GiB = tunesmith's pre-flight estimate; x TRL = tunesmith tokens/s over TRL's, same model, data, "
          "batch)")
    print("\nsections:")
    for r in ctx.runner.results:
        print(f"  {r.status:<8} {r.name:<28} {r.seconds:6.1f}s  {r.reason[:150]}")
    print(f"total {time.monotonic() - ctx.runner.start:.0f}s; {len(ctx.runner.failed)} failed")


def write_json(ctx: Context, path: Path | None) -> None:
    if not path:
        return
    out = {"mode": "cpu-dry-run" if ctx.cpu else "gpu", "env": ctx.env, "seconds": time.monotonic() - ctx.runner.start,
           "workloads": {k: asdict(v) for k, v in ctx.workloads.items()}, "summary": summary_rows(ctx),
           "sections": [asdict(r) for r in ctx.runner.results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(path)
    print(f"wrote {path}")
