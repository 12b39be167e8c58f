"""The decision: prompt-engineer first / RAG / fine-tune / both, the method and the GPU, with reasons.

The rules are the seed's decision framework, made explicit:

* prompt engineering (few-shot, chain-of-thought, structured output) comes first: if it has not
  been tried, try it;
* enough high-quality examples for the kind of tuning: instruction tuning >= 500 (1-5k
  recommended), domain adaptation >= 10k, task-specific 500-2k consistent examples; fewer: not yet;
* knowledge that changes often, answers that must cite sources, documents beyond the context
  window -> RAG; with a narrow, consistent-format task and enough data as well -> both;
* consistent format, narrow task, high volume / latency sensitivity -> fine-tune;
* method: the cheapest (training cost) option that fits among LoRA and QLoRA, or full
  fine-tuning for domain adaptation with >= 10k examples when it fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.estimate.arch import Architecture
from tunesmith.advise.config import AdviseConfig
from tunesmith.estimate.cost import (
    DAYS_PER_MONTH,
    DEFAULT_MFU,
    BreakEven,
    TrainingTime,
    break_even,
    estimate_eval_seconds,
    estimate_training_time,
)
from tunesmith.advise.dataset import DatasetFacts
from tunesmith.estimate.hardware import GPU
from tunesmith.estimate.memory import GIB, MemoryEstimate, estimate_memory, fits

MIN_EXAMPLES = {"instruction": 500, "domain": 10_000, "task": 500}
RECOMMENDED = {"instruction": (1_000, 5_000), "domain": (10_000, None), "task": (500, 2_000)}
KIND_NAMES = {"instruction": "instruction tuning", "domain": "domain adaptation", "task": "task-specific fine-tuning"}
HIGH_VOLUME_TOKENS = 10_000_000  # tokens/month from which serving a small fine-tune usually beats an API
CONSISTENT_FORMAT_SHARE = 0.9
DEFAULT_TOKENS_PER_EXAMPLE = 512
VERDICTS = ("fine-tune", "rag", "both", "prompt-engineer-first", "not-yet")
HEADLINES = {
    "fine-tune": "Fine-tune",
    "rag": "Use retrieval (RAG), not fine-tuning",
    "both": "RAG for the knowledge + a fine-tune for the task and format",
    "prompt-engineer-first": "Prompt-engineer first",
    "not-yet": "Not yet: collect data and prompt-engineer first",
}


@dataclass
class MethodOption:
    method: str
    gpu: GPU
    batch_size: int
    gradient_checkpointing: bool
    memory: MemoryEstimate
    time: TrainingTime
    fits: bool


@dataclass
class Advice:
    verdict: str
    reasons: list[str]
    answers: AdviseConfig
    arch: Architecture | None = None
    facts: DatasetFacts | None = None
    examples: int | None = None
    tokens_per_example: float = DEFAULT_TOKENS_PER_EXAMPLE
    epochs: float = 3.0
    seq_len: int = 1024
    plan: MethodOption | None = None
    options: list[MethodOption] = field(default_factory=list)
    eval_seconds: float | None = None
    eval_usd: float | None = None
    breakeven: BreakEven | None = None
    assumptions: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        h = HEADLINES[self.verdict]
        if self.plan is not None and self.verdict in ("fine-tune", "both"):
            h += f" with {self.plan.method.upper() if self.plan.method != 'full' else 'full fine-tuning'} on {self.plan.gpu.name}"
        return h

    @property
    def method(self) -> str | None:
        return self.plan.method if self.plan else None


def _fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def _gib(b: float) -> str:
    return f"{b / GIB:.1f} GiB"


def _days(d: float) -> str:
    if d < 1:
        return f"{d * 24:.1f} hours"
    return f"{d:.1f} days" if d < 60 else f"{d / DAYS_PER_MONTH:.1f} months"


def _usd(x: float) -> str:
    return "<$0.01" if 0 < x < 0.005 else f"${x:,.2f}"


def _hours(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def plan_options(
    arch: Architecture,
    gpus: list[GPU],
    *,
    methods: tuple[str, ...] = ("full", "lora", "qlora"),
    batch_size: int,
    seq_len: int,
    tokens: float,
    lora_r: int = 16,
    lora_targets: list[str] | str | None = None,
    num_gpus: int = 1,
    mfu: float | None = None,
    price_per_hour: float | None = None,
) -> list[MethodOption]:
    """For each method, the cheapest GPU (by training cost) it fits on, trying checkpointing and batch 1.

    A method that fits nowhere is returned with ``fits=False`` on the largest GPU, so the caller can
    say by how much it misses.
    """
    out = []
    tries = [(batch_size, False), (batch_size, True)] + ([(1, True)] if batch_size > 1 else [])
    for method in methods:
        best: MethodOption | None = None
        for gpu in gpus:
            for b, gc in tries:
                mem = estimate_memory(arch, method=method, batch_size=b, seq_len=seq_len, dtype="bfloat16",
                                      optimizer="adamw", gradient_checkpointing=gc, lora_r=lora_r,
                                      lora_targets=lora_targets, device="cuda")
                if fits(mem, gpu.memory_bytes):
                    t = estimate_training_time(arch, method, tokens=tokens, gpu=gpu, num_gpus=num_gpus, mfu=mfu,
                                               gradient_checkpointing=gc, price_per_hour=price_per_hour)
                    opt = MethodOption(method, gpu, b, gc, mem, t, True)
                    if best is None or not best.fits or opt.time.usd < best.time.usd:
                        best = opt
                    break
        if best is None:
            gpu = max(gpus, key=lambda g: g.memory_gib)
            mem = estimate_memory(arch, method=method, batch_size=1, seq_len=seq_len, dtype="bfloat16",
                                  gradient_checkpointing=True, lora_r=lora_r, lora_targets=lora_targets, device="cuda")
            t = estimate_training_time(arch, method, tokens=tokens, gpu=gpu, num_gpus=num_gpus, mfu=mfu,
                                       gradient_checkpointing=True, price_per_hour=price_per_hour)
            best = MethodOption(method, gpu, 1, True, mem, t, False)
        out.append(best)
    return out


def choose_plan(options: list[MethodOption], *, kind: str, examples: int | None) -> MethodOption | None:
    fitting = {o.method: o for o in options if o.fits}
    if kind == "domain" and (examples or 0) >= MIN_EXAMPLES["domain"] and "full" in fitting:
        return fitting["full"]
    adapters = [fitting[m] for m in ("lora", "qlora") if m in fitting]
    if adapters:
        return min(adapters, key=lambda o: (o.time.usd, o.method != "lora"))
    return fitting.get("full")


def advise(
    answers: AdviseConfig,
    *,
    arch: Architecture | None,
    gpus: dict[str, GPU],
    facts: DatasetFacts | None = None,
    batch_size: int = 4,
    seq_len: int = 1024,
    epochs: float = 3.0,
    lora_r: int = 16,
    lora_targets: list[str] | str | None = None,
    eval_fraction: float = 0.1,
    eval_new_tokens: int = 64,
) -> Advice:
    a = answers
    reasons: list[str] = []
    assumptions: list[str] = []
    kind = a.data_kind
    kind_name = KIND_NAMES[kind]

    # ---- data: measured beats declared
    examples = a.examples
    consistent = a.consistent_format
    if facts is not None:
        examples = facts.unique
        dup = f" after removing {facts.duplicates} duplicates" if facts.duplicates else ""
        rej = f" ({facts.rejected} rows rejected)" if facts.rejected else ""
        reasons.append(f"The dataset {facts.source} has {_fmt_int(facts.unique)} unique examples{dup}{rej} (measured).")
        consistent_measured = facts.format_consistency >= CONSISTENT_FORMAT_SHARE
        reasons.append(
            f"{facts.format_consistency:.0%} of answers share one shape ({facts.dominant_shape}): the output format is "
            + ("consistent (measured)." if consistent_measured else "not consistent (measured); fine-tuning learns a format best when one is used throughout.")
        )
        if consistent is None:
            consistent = consistent_measured
        if facts.labels and len(facts.labels) >= 2:
            top = max(facts.labels, key=facts.labels.get)
            ratio = facts.imbalance or 1.0
            msg = (f"{len(facts.labels)} labels ({facts.label_source}); the largest, '{top}', is {facts.majority_share:.0%} "
                   f"of examples, {ratio:.1f}x the smallest")
            if ratio > 5:
                msg += ": imbalanced, so collect more of the rare labels and read per-label accuracy, not just the total."
            else:
                msg += ": balanced enough."
            reasons.append(msg)
        reasons.append(
            f"Examples are {facts.token_p50} tokens at the median, {facts.token_p95} at the 95th percentile, "
            f"{facts.token_max} at most ({facts.token_counter})."
        )
    tokens_per_example = (facts.token_mean if facts is not None else a.avg_tokens_per_example or DEFAULT_TOKENS_PER_EXAMPLE)
    if facts is None and a.avg_tokens_per_example is None:
        assumptions.append(f"{DEFAULT_TOKENS_PER_EXAMPLE} tokens per example (no dataset given; set avg_tokens_per_example)")

    minimum = MIN_EXAMPLES[kind]
    low, high = RECOMMENDED[kind]
    rec_range = f"{_fmt_int(low)}-{_fmt_int(high)}" if high else f"{_fmt_int(low)}+"
    enough = examples is not None and examples >= minimum
    if examples is None:
        reasons.append(f"The number of high-quality examples is unknown: {kind_name} needs at least {_fmt_int(minimum)} "
                       f"({rec_range} recommended); count them or pass --data.")
    elif not enough:
        reasons.append(f"{_fmt_int(examples)} examples are fewer than the {_fmt_int(minimum)} {kind_name} needs "
                       f"({rec_range} recommended): collect {_fmt_int(minimum - examples)}+ more before fine-tuning.")
    else:
        where = "within" if (examples <= high if high else True) and examples >= low else ("above" if high and examples > high else "below")
        reasons.append(f"{_fmt_int(examples)} examples meet the {_fmt_int(minimum)} minimum for {kind_name} "
                       f"({where} the recommended {rec_range}).")

    # ---- RAG signals
    rag = []
    if a.knowledge_changes_often:
        rag.append("the knowledge changes often, and a fine-tune freezes what it learned while retrieval serves today's documents")
    if a.needs_citations:
        rag.append("answers must cite sources, which retrieval provides and fine-tuning cannot")
    if a.documents_exceed_context:
        rag.append("the documents exceed the context window, so they must be retrieved, not memorised")
    for r in rag:
        reasons.append(f"RAG: {r[0].upper()}{r[1:]}.")

    # ---- fine-tuning signals
    ft = []
    if a.narrow_task:
        ft.append("the task is narrow and consistent")
    if consistent:
        ft.append("the output format is consistent")
    high_volume = (a.monthly_inference_tokens or 0) >= HIGH_VOLUME_TOKENS
    if high_volume:
        ft.append(f"volume is high ({_fmt_int(a.monthly_inference_tokens)} tokens/month)")
    if a.latency_sensitive:
        ft.append("latency matters (a small tuned model answers faster than a large prompted one)")
    against = []
    if a.narrow_task is False:
        against.append("the task is broad")
    if consistent is False:
        against.append("the output format varies")

    # ---- verdict
    if a.prompt_engineering_tried is False:
        verdict = "prompt-engineer-first"
        reasons.insert(0, "Prompt engineering (few-shot examples, chain-of-thought, structured output) has not been tried: "
                          "it costs hours, not GPU dollars, and sets the baseline a fine-tune must beat.")
    elif rag and not (enough and ft):
        verdict = "rag"
    elif not enough:
        verdict = "not-yet"
    elif not ft and against:
        verdict = "prompt-engineer-first"
        reasons.append(f"Fine-tuning pays off for narrow, consistent tasks; here {' and '.join(against)}: "
                       "improve the prompt (or split the task) first.")
    else:
        verdict = "both" if rag else "fine-tune"
        if ft:
            reasons.append(f"Fine-tune: {'; '.join(ft)}.")
        else:
            reasons.append("Nothing says the task is narrow, the format consistent or the volume high (answer --narrow/--broad, "
                           "give --data or --monthly-tokens): the verdict rests on the data count alone.")
        if a.prompt_engineering_tried is None:
            reasons.append("Check first that prompt engineering (few-shot, chain-of-thought, structured output) "
                           "falls short: it is the baseline the fine-tune must beat.")
    if verdict == "not-yet" and a.prompt_engineering_tried is not False:
        reasons.append("Until then, prompt-engineer (few-shot with your best examples, structured output) and keep "
                       "collecting and labelling examples.")

    advice = Advice(verdict=verdict, reasons=reasons, answers=a, arch=arch, facts=facts, examples=examples,
                    tokens_per_example=tokens_per_example, epochs=epochs, seq_len=seq_len, assumptions=assumptions)

    # ---- method, memory, time, cost
    if arch is not None:
        n_examples = examples if examples else max(minimum, 1000)
        if not examples:
            assumptions.append(f"{_fmt_int(n_examples)} examples for the time estimate")
        train_examples = n_examples * (1 - 2 * eval_fraction)
        tokens = train_examples * tokens_per_example * epochs
        chosen = [gpus[a.gpu.lower()]] if a.gpu else sorted(gpus.values(), key=lambda g: g.usd_per_hour)
        options = plan_options(arch, chosen, batch_size=batch_size, seq_len=seq_len, tokens=tokens, lora_r=lora_r,
                               lora_targets=lora_targets, num_gpus=a.num_gpus, mfu=a.mfu, price_per_hour=a.price_per_hour)
        advice.options = options
        plan = choose_plan(options, kind=kind, examples=examples)
        advice.plan = plan
        mfus = {o.method: o.time.mfu for o in options}
        assumptions.append("MFU " + ", ".join(f"{m} {v:.0%}" for m, v in mfus.items())
                           + (" (given)" if a.mfu else " (defaults: typical single-GPU Hugging Face training)"))
        assumptions.append(f"{_fmt_int(tokens)} training tokens = {_fmt_int(train_examples)} train examples x "
                           f"{tokens_per_example:.0f} tokens x {epochs:g} epochs; bf16 compute, AdamW, "
                           f"batch {batch_size} x {seq_len} tokens")
        if plan is None:
            o = min(options, key=lambda o: o.memory.total_bytes)
            reasons.append(
                f"No method fits {'the ' + a.gpu if a.gpu else 'any catalogue GPU'}: the smallest, {o.method.upper()} with "
                f"checkpointing at batch 1, needs {_gib(o.memory.total_bytes)} and the largest GPU has "
                f"{o.gpu.memory_gib:g} GiB; use a smaller model, shorter sequences or several GPUs with sharding."
            )
        else:
            p = plan
            gc = " with gradient checkpointing" if p.gradient_checkpointing else ""
            bs = f" at batch {p.batch_size}" if p.batch_size != batch_size else ""
            why = {
                "full": f"full fine-tuning (domain adaptation with {_fmt_int(examples or 0)} examples benefits from updating every weight)",
                "lora": f"LoRA (trains {p.memory.trainable_fraction:.2%} of {arch.name}'s {arch.total_params / 1e9:.2f}B parameters; "
                        "close to full fine-tuning in quality for a fraction of the memory)",
                "qlora": f"QLoRA (the base in 4-bit NF4 so {arch.name} fits one {p.gpu.name}; "
                         f"trains {p.memory.trainable_fraction:.2%} of the parameters)",
            }[p.method]
            lead = "Method" if verdict in ("fine-tune", "both") else "If you fine-tune later, the method"
            reasons.append(
                f"{lead}: {why}. It needs {_gib(p.memory.total_bytes)} on one {p.gpu.name} ({p.gpu.memory_gib:g} GiB){gc}{bs}, "
                f"and takes ~{_hours(p.time.seconds)} for {_usd(p.time.usd)} at {p.time.mfu:.0%} MFU."
            )
            others = [o for o in options if o is not p]
            for o in others:
                if o.fits:
                    reasons.append(f"Alternative: {o.method.upper()} on {o.gpu.name} needs {_gib(o.memory.total_bytes)}, "
                                   f"~{_hours(o.time.seconds)}, {_usd(o.time.usd)}.")
                else:
                    reasons.append(f"{o.method.upper()} does not fit: it needs {_gib(o.memory.total_bytes)} even at batch 1 with "
                                   f"checkpointing, more than one {o.gpu.name} has ({o.gpu.memory_gib:g} GiB).")
            n_eval = max(1, int(n_examples * eval_fraction))
            advice.eval_seconds = estimate_eval_seconds(arch, p.gpu, examples=n_eval, prompt_tokens=tokens_per_example,
                                                        new_tokens=eval_new_tokens)
            price = a.price_per_hour or p.gpu.usd_per_hour
            advice.eval_usd = advice.eval_seconds / 3600 * price
            if a.monthly_inference_tokens is not None and a.api_price_per_m is not None:
                one_off = p.time.usd + advice.eval_usd
                if a.ft_price_per_m is not None:
                    be = break_even(monthly_tokens=a.monthly_inference_tokens, api_usd_per_m=a.api_price_per_m,
                                    one_off_usd=one_off, ft_usd_per_m=a.ft_price_per_m)
                else:
                    host = serving_gpu(arch, gpus)
                    be = break_even(monthly_tokens=a.monthly_inference_tokens, api_usd_per_m=a.api_price_per_m,
                                    one_off_usd=one_off, hosting_usd_per_hour=host.usd_per_hour,
                                    hosting_hours_per_month=a.hosting_hours_per_month)
                    be.serve_basis += f" ({host.name}, the cheapest GPU that holds the model in bf16)"
                advice.breakeven = be
                if be.pays_off:
                    reasons.append(
                        f"Break-even: {_fmt_int(be.monthly_tokens)} tokens/month cost ${be.api_monthly_usd:,.2f} on the API at "
                        f"${be.api_usd_per_m:g}/M and ${be.serve_monthly_usd:,.2f} served as a fine-tune ({be.serve_basis}); "
                        f"the {_usd(be.one_off_usd)} of training and evaluation pays for itself in {_days(be.days)}."
                    )
                else:
                    reasons.append(
                        f"Break-even: never at this volume: the API costs ${be.api_monthly_usd:,.2f}/month and serving the "
                        f"fine-tune ${be.serve_monthly_usd:,.2f}/month ({be.serve_basis}); fine-tune for quality or latency, not cost."
                    )
                    if verdict == "fine-tune" and not (a.narrow_task or consistent or a.latency_sensitive):
                        advice.verdict = "prompt-engineer-first"
                        reasons.append("With no narrow task, consistent format or latency need, and no saving, nothing argues "
                                       "for fine-tuning yet: prompt-engineer first.")
    advice.assumptions = assumptions
    return advice


def recommended_seq_len(facts: DatasetFacts | None, max_seq_length: int) -> int:
    """Rows as long as the longest example (rounded up to 64 tokens), capped by the config's maximum."""
    if facts is None:
        return max_seq_length
    return int(min(max_seq_length, max(64, -(-facts.token_max // 64) * 64)))


def serving_gpu(arch: Architecture, gpus: dict[str, GPU]) -> GPU:
    """Cheapest GPU that holds the bf16 weights plus 20% for the KV cache and 1 GiB of runtime."""
    need = arch.total_params * 2 * 1.2 + GIB
    fitting = [g for g in gpus.values() if g.memory_bytes >= need]
    if not fitting:
        return max(gpus.values(), key=lambda g: g.memory_gib)
    return min(fitting, key=lambda g: g.usd_per_hour)


__all__ = ["DEFAULT_MFU", "VERDICTS", "Advice", "MethodOption", "advise", "choose_plan", "plan_options", "serving_gpu"]
