"""Rich output and the JSON form of an :class:`Advice`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.advise.recommend import Advice
from tunesmith.estimate.memory import GIB, MemoryEstimate

VERDICT_STYLE = {"fine-tune": "green", "both": "green", "rag": "cyan", "prompt-engineer-first": "yellow", "not-yet": "yellow"}


def _gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


def memory_table(est: MemoryEstimate, title: str | None = None) -> Table:
    t = Table(title=title or f"Memory: {est.method} on {est.arch_name}, batch {est.batch_size} x {est.seq_len}, "
              f"{est.dtype}{', checkpointing' if est.gradient_checkpointing else ''}", title_justify="left")
    t.add_column("component")
    t.add_column("size", justify="right")
    t.add_column(f"at peak ({est.peak_phase})", justify="center")
    t.add_column("what", overflow="fold")
    for c in est.components:
        t.add_row(c.name, _gib(c.bytes), "yes" if c.at_peak else "-", escape(c.note))
    t.add_row("[bold]peak total[/]", f"[bold]{_gib(est.total_bytes)}[/]", "", "")
    return t


def options_table(advice: Advice) -> Table:
    t = Table(title="Methods (cheapest GPU each fits on)", title_justify="left")
    for col, just in [("method", "left"), ("trainable", "right"), ("peak memory", "right"), ("GPU", "left"),
                      ("fits", "center"), ("time", "right"), ("cost", "right")]:
        t.add_column(col, justify=just)
    for o in advice.options:
        mark = "[bold]*[/] " if advice.plan is o else ""
        extra = (" +ckpt" if o.gradient_checkpointing else "") + (f" b{o.batch_size}" if o.batch_size != o.memory.batch_size else "")
        t.add_row(
            f"{mark}{o.method}{extra}", f"{o.memory.trainable_params / 1e6:,.1f}M ({o.memory.trainable_fraction:.2%})",
            _gib(o.memory.total_bytes), f"{o.gpu.name} ({o.gpu.memory_gib:g} GiB)", "yes" if o.fits else "[red]no[/]",
            f"{o.time.hours:.2f} h", "<$0.01" if 0 < o.time.usd < 0.005 else f"${o.time.usd:,.2f}",
        )
    return t


def show_value(value: Any, width: int = 60) -> str:
    if isinstance(value, dict):
        return f"JSON Schema ({len(value.get('properties', {}))} keys)" if "type" in value else f"{len(value)} entries"
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def choices_table(advice: Advice) -> Table:
    t = Table(title="Run config (what advise chose, and why)", title_justify="left")
    t.add_column("setting", no_wrap=True)
    t.add_column("value", overflow="fold")
    t.add_column("why", overflow="fold")
    for p in advice.picks:
        kept = p.key in advice.kept
        t.add_row(p.key + (" [dim](yours kept)[/]" if kept else ""), escape(show_value(p.value)), escape(p.reason))
    return t


def render(advice: Advice, console: Console) -> None:
    style = VERDICT_STYLE[advice.verdict]
    console.print(f"[bold {style}]{escape(advice.headline)}[/]  (verdict: {advice.verdict})")
    console.print()
    for r in advice.reasons:
        console.print(f" - {escape(r)}", soft_wrap=True)
    if advice.facts is not None:
        f = advice.facts
        t = Table(title="Dataset (measured)", title_justify="left")
        t.add_column("fact")
        t.add_column("value", overflow="fold")
        t.add_row("examples (unique / read / rejected)", f"{f.unique:,} / {f.rows:,} / {f.rejected:,}")
        t.add_row("answer shapes", escape(", ".join(f"{k} {v}" for k, v in sorted(f.answer_shapes.items(), key=lambda kv: -kv[1]))))
        t.add_row("format consistency", f"{f.format_consistency:.0%} {f.dominant_shape}")
        if f.labels:
            top = list(f.labels.items())[:8]
            more = f" (+{len(f.labels) - 8} more)" if len(f.labels) > 8 else ""
            t.add_row(f"labels ({escape(f.label_source or '')})", escape(", ".join(f"{k}: {v}" for k, v in top)) + more)
        t.add_row("tokens (p50 / p95 / max)", f"{f.token_p50} / {f.token_p95} / {f.token_max}  ({escape(f.token_counter)})")
        console.print()
        console.print(t)
    if advice.options:
        console.print()
        console.print(options_table(advice))
    if advice.plan is not None:
        console.print()
        console.print(memory_table(advice.plan.memory))
    if advice.breakeven is not None:
        be = advice.breakeven
        console.print()
        t = Table(title="Break-even", title_justify="left")
        t.add_column("")
        t.add_column("USD", justify="right")
        t.add_row(f"API per month ({be.monthly_tokens:,.0f} tokens x ${be.api_usd_per_m:g}/M)", f"{be.api_monthly_usd:,.2f}")
        t.add_row(f"fine-tune served per month ({escape(be.serve_basis)})", f"{be.serve_monthly_usd:,.2f}")
        t.add_row("monthly saving", f"{be.monthly_saving_usd:,.2f}")
        t.add_row("one-off: training + evaluation", f"{be.one_off_usd:,.2f}")
        t.add_row("days to break even", f"{be.days:.1f}" if be.days is not None else "never")
        console.print(t)
    if advice.picks:
        console.print()
        console.print(choices_table(advice))
    if advice.assumptions:
        console.print()
        console.print("[dim]Assumptions: " + escape("; ".join(advice.assumptions)) + ".[/]", soft_wrap=True)


def advice_to_dict(advice: Advice) -> dict[str, Any]:
    d: dict[str, Any] = {
        "verdict": advice.verdict,
        "headline": advice.headline,
        "method": advice.method,
        "reasons": advice.reasons,
        "assumptions": advice.assumptions,
        "examples": advice.examples,
        "answers": advice.answers.model_dump(mode="json"),
    }
    if advice.arch is not None:
        d["model"] = {"name": advice.arch.name, "params": advice.arch.total_params}
    if advice.plan is not None:
        p = advice.plan
        d["plan"] = {"method": p.method, "gpu": p.gpu.name, "batch_size": p.batch_size,
                     "gradient_checkpointing": p.gradient_checkpointing, "memory": p.memory.as_dict(),
                     "hours": p.time.hours, "usd": p.time.usd, "mfu": p.time.mfu,
                     "eval_hours": (advice.eval_seconds or 0) / 3600, "eval_usd": advice.eval_usd}
    d["options"] = [{"method": o.method, "gpu": o.gpu.name, "fits": o.fits, "total_bytes": o.memory.total_bytes,
                     "trainable_params": o.memory.trainable_params, "hours": o.time.hours, "usd": o.time.usd}
                    for o in advice.options]
    if advice.facts is not None:
        f = advice.facts
        d["dataset"] = {"source": f.source, "unique": f.unique, "rows": f.rows, "rejected": f.rejected,
                        "format_consistency": f.format_consistency, "dominant_shape": f.dominant_shape,
                        "labels": f.labels, "token_p50": f.token_p50, "token_p95": f.token_p95, "token_max": f.token_max}
    d["choices"] = [{"key": p.key, "value": p.value, "reason": p.reason, "kept_from_config": p.key in advice.kept}
                    for p in advice.picks]
    if advice.local is not None:
        e = advice.local
        d["this_machine"] = {"name": e.machine.name, "device": e.machine.device, "peak_flops": e.machine.peak_flops,
                             "peak_source": e.machine.peak_source, "method": e.method, "seconds": e.seconds,
                             "mfu": e.mfu, "memory_bytes": e.memory.total_bytes, "fits": e.fits}
    if advice.breakeven is not None:
        be = advice.breakeven
        d["break_even"] = {"api_monthly_usd": be.api_monthly_usd, "serve_monthly_usd": be.serve_monthly_usd,
                           "monthly_saving_usd": be.monthly_saving_usd, "one_off_usd": be.one_off_usd, "days": be.days}
    return d
