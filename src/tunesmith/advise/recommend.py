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

from tunesmith.advise.config import AdviseConfig
from tunesmith.advise.dataset import DatasetFacts
from tunesmith.advise.evalplan import Pick
from tunesmith.advise.machine import Machine
from tunesmith.estimate.arch import Architecture
from tunesmith.estimate.cost import (
    DAYS_PER_MONTH,
    DEFAULT_MFU,
    BreakEven,
    TrainingTime,
    break_even,
    estimate_eval_seconds,
    estimate_seconds_at,
    estimate_training_time,
)
from tunesmith.estimate.hardware import GPU
from tunesmith.estimate.memory import GIB, MemoryEstimate, estimate_memory, fits
from tunesmith.estimate.recipe import Recipe

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
class LocalEstimate:
    """Training time and memory on the machine advise runs on (:mod:`tunesmith.advise.machine`)."""

    machine: Machine
    method: str
    tokens: float
    seconds: float | None  # None: the device's peak is unknown
    mfu: float
    memory: MemoryEstimate
    fits: bool | None  # None: the device's memory is unknown


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
    local: LocalEstimate | None = None  # this machine
    recipe: Recipe | None = None  # the training recipe the run config gets
    eval_picks: list[Pick] = field(default_factory=list)  # the evaluation the run config gets (advise.evalplan)
    picks: list[Pick] = field(default_factory=list)  # every value the run config gets, with its reason (runconfig)
    kept: list[str] = field(default_factory=list)  # keys of picks the base config sets itself (its value stays)

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


# ---------------------------------------------------------------------------- signals


@dataclass
class Signals:
    """What the answers and the measured dataset say, before anything is decided."""

    examples: int | None  # measured (unique, after de-duplication) when a dataset is given, else declared
    consistent: bool | None  # one output format: declared, else measured
    enough: bool  # examples >= the minimum for the kind of tuning
    rag: list[str]  # reasons for retrieval
    ft: list[str]  # reasons for fine-tuning
    against: list[str]  # reasons against fine-tuning
    tokens_per_example: float


def read_signals(a: AdviseConfig, facts: DatasetFacts | None) -> Signals:
    examples, consistent = a.examples, a.consistent_format
    if facts is not None:  # measured beats declared
        examples = facts.unique
        if consistent is None:
            consistent = facts.format_consistency >= CONSISTENT_FORMAT_SHARE
    rag = []
    if a.knowledge_changes_often:
        rag.append("the knowledge changes often, and a fine-tune freezes what it learned while retrieval serves today's documents")
    if a.needs_citations:
        rag.append("answers must cite sources, which retrieval provides and fine-tuning cannot")
    if a.documents_exceed_context:
        rag.append("the documents exceed the context window, so they must be retrieved, not memorised")
    ft = []
    if a.narrow_task:
        ft.append("the task is narrow and consistent")
    if consistent:
        ft.append("the output format is consistent")
    if (a.monthly_inference_tokens or 0) >= HIGH_VOLUME_TOKENS:
        ft.append(f"volume is high ({_fmt_int(a.monthly_inference_tokens)} tokens/month)")
    if a.latency_sensitive:
        ft.append("latency matters (a small tuned model answers faster than a large prompted one)")
    against = []
    if a.narrow_task is False:
        against.append("the task is broad")
    if consistent is False:
        against.append("the output format varies")
    tokens = facts.token_mean if facts is not None else a.avg_tokens_per_example or DEFAULT_TOKENS_PER_EXAMPLE
    enough = examples is not None and examples >= MIN_EXAMPLES[a.data_kind]
    return Signals(examples, consistent, enough, rag, ft, against, tokens)


# ---------------------------------------------------------------------------- the verdict

TUNING_RULES = ("fine-tune", "both", "no-saving")  # the rules that would fine-tune before the cost is weighed


def decide(a: AdviseConfig, s: Signals, breakeven: BreakEven | None) -> tuple[str, str]:
    """(verdict, the rule that gave it): the seed's rules in order, the first that applies decides."""
    if a.prompt_engineering_tried is False:
        return "prompt-engineer-first", "untried"
    if s.rag and not (s.enough and s.ft):
        return "rag", "rag"
    if not s.enough:
        return "not-yet", "too-few"
    if not s.ft and s.against:
        return "prompt-engineer-first", "broad"
    if s.rag:
        return "both", "both"
    if breakeven is not None and not breakeven.pays_off and not (a.narrow_task or s.consistent or a.latency_sensitive):
        return "prompt-engineer-first", "no-saving"
    return "fine-tune", "fine-tune"


# ---------------------------------------------------------------------------- method, time and cost


@dataclass
class Costs:
    """The plan for ``arch`` and what it costs (computed whatever the verdict: the method is shown either way)."""

    options: list[MethodOption]
    plan: MethodOption | None
    n_examples: int
    tokens: float  # training tokens over all epochs
    eval_seconds: float | None = None
    eval_usd: float | None = None
    breakeven: BreakEven | None = None
    assumptions: list[str] = field(default_factory=list)


def plan_costs(a: AdviseConfig, s: Signals, arch: Architecture, gpus: dict[str, GPU], *, batch_size: int, seq_len: int,
               epochs: float, lora_r: int, lora_targets: list[str] | str | None, eval_fraction: float,
               eval_new_tokens: int) -> Costs:
    n_examples = s.examples if s.examples else max(MIN_EXAMPLES[a.data_kind], 1000)
    assumptions = [] if s.examples else [f"{_fmt_int(n_examples)} examples for the time estimate"]
    train_examples = n_examples * (1 - 2 * eval_fraction)
    tokens = train_examples * s.tokens_per_example * epochs
    chosen = [gpus[a.gpu.lower()]] if a.gpu else sorted(gpus.values(), key=lambda g: g.usd_per_hour)
    options = plan_options(arch, chosen, batch_size=batch_size, seq_len=seq_len, tokens=tokens, lora_r=lora_r,
                           lora_targets=lora_targets, num_gpus=a.num_gpus, mfu=a.mfu, price_per_hour=a.price_per_hour)
    plan = choose_plan(options, kind=a.data_kind, examples=s.examples)
    mfus = {o.method: o.time.mfu for o in options}
    assumptions.append("MFU " + ", ".join(f"{m} {v:.0%}" for m, v in mfus.items())
                       + (" (given)" if a.mfu else " (defaults: typical single-GPU Hugging Face training)"))
    assumptions.append(f"{_fmt_int(tokens)} training tokens = {_fmt_int(train_examples)} train examples x "
                       f"{s.tokens_per_example:.0f} tokens x {epochs:g} epochs; bf16 compute, AdamW, "
                       f"batch {batch_size} x {seq_len} tokens")
    costs = Costs(options, plan, n_examples, tokens, assumptions=assumptions)
    if plan is None:
        return costs
    n_eval = max(1, int(n_examples * eval_fraction))
    costs.eval_seconds = estimate_eval_seconds(arch, plan.gpu, examples=n_eval, prompt_tokens=s.tokens_per_example,
                                               new_tokens=eval_new_tokens)
    costs.eval_usd = costs.eval_seconds / 3600 * (a.price_per_hour or plan.gpu.usd_per_hour)
    if a.monthly_inference_tokens is not None and a.api_price_per_m is not None:
        costs.breakeven = _break_even(a, arch, gpus, one_off=plan.time.usd + costs.eval_usd)
    return costs


def _break_even(a: AdviseConfig, arch: Architecture, gpus: dict[str, GPU], *, one_off: float) -> BreakEven:
    """Against the API: serving at the given per-token price, else on the cheapest GPU that holds the model."""
    if a.ft_price_per_m is not None:
        return break_even(monthly_tokens=a.monthly_inference_tokens, api_usd_per_m=a.api_price_per_m,
                          one_off_usd=one_off, ft_usd_per_m=a.ft_price_per_m)
    host = serving_gpu(arch, gpus)
    be = break_even(monthly_tokens=a.monthly_inference_tokens, api_usd_per_m=a.api_price_per_m,
                    one_off_usd=one_off, hosting_usd_per_hour=host.usd_per_hour,
                    hosting_hours_per_month=a.hosting_hours_per_month)
    be.serve_basis += f" ({host.name}, the cheapest GPU that holds the model in bf16)"
    return be


# ---------------------------------------------------------------------------- the advice


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
    machine: Machine | None = None,
) -> Advice:
    """Signals -> the method and its cost (when the architecture is known) -> one verdict -> reasons.

    With ``machine`` (measured by advise.machine), the time and memory on it as well."""
    a = answers
    s = read_signals(a, facts)
    assumptions = []
    if facts is None and a.avg_tokens_per_example is None:
        assumptions.append(f"{DEFAULT_TOKENS_PER_EXAMPLE} tokens per example (no dataset given; set avg_tokens_per_example)")
    costs = None
    if arch is not None:
        costs = plan_costs(a, s, arch, gpus, batch_size=batch_size, seq_len=seq_len, epochs=epochs, lora_r=lora_r,
                           lora_targets=lora_targets, eval_fraction=eval_fraction, eval_new_tokens=eval_new_tokens)
        assumptions += costs.assumptions
    verdict, rule = decide(a, s, costs.breakeven if costs else None)
    reasons = ([UNTRIED_REASON] if rule == "untried" else []) + (dataset_reasons(facts) if facts is not None else [])
    reasons += [count_reason(a.data_kind, s.examples)] + [f"RAG: {r[0].upper()}{r[1:]}." for r in s.rag]
    reasons += verdict_reasons(rule, a, s)
    if arch is not None:
        reasons += method_reasons(costs, a, arch, examples=s.examples, batch_size=batch_size, tuning=rule in TUNING_RULES)
        reasons += breakeven_reasons(costs.breakeven)
    local = None
    if arch is not None and machine is not None:
        local = local_estimate(arch, machine, method=costs.plan.method if costs.plan else "lora", tokens=costs.tokens,
                               batch_size=batch_size, seq_len=seq_len, lora_r=lora_r, lora_targets=lora_targets)
        reasons.append(local_reason(local))
    if rule == "no-saving":
        reasons.append("With no narrow task, consistent format or latency need, and no saving, nothing argues "
                       "for fine-tuning yet: prompt-engineer first.")
    return Advice(verdict=verdict, reasons=reasons, answers=a, arch=arch, facts=facts, examples=s.examples,
                  tokens_per_example=s.tokens_per_example, epochs=epochs, seq_len=seq_len,
                  plan=costs.plan if costs else None, options=costs.options if costs else [],
                  eval_seconds=costs.eval_seconds if costs else None, eval_usd=costs.eval_usd if costs else None,
                  breakeven=costs.breakeven if costs else None, assumptions=assumptions, local=local)


def local_estimate(arch: Architecture, machine: Machine, *, method: str, tokens: float, batch_size: int, seq_len: int,
                   lora_r: int, lora_targets: list[str] | str | None) -> LocalEstimate:
    """The same training on ``machine``: fp32 on a CPU, bf16 on a GPU."""
    cpu = machine.device == "cpu"
    mem = estimate_memory(arch, method=method, batch_size=batch_size, seq_len=seq_len,
                          dtype="float32" if cpu else "bfloat16", lora_r=lora_r, lora_targets=lora_targets,
                          device=machine.device)
    mfu = machine.mfu(method)
    seconds = (estimate_seconds_at(arch, method, tokens=tokens, peak_flops=machine.peak_flops, mfu=mfu)
               if machine.peak_flops else None)
    ok = fits(mem, machine.memory_bytes) if machine.memory_bytes else None
    return LocalEstimate(machine, method, tokens, seconds, mfu, mem, ok)


def local_reason(e: LocalEstimate) -> str:
    m = e.machine
    peak = f"{m.peak_flops / 1e9:,.0f} GFLOP/s, {m.peak_source}" if m.peak_flops else m.peak_source
    time = (f"~{_hours(e.seconds)} for {_fmt_int(e.tokens)} tokens at {e.mfu:.0%} of that peak" if e.seconds is not None
            else "time unknown (no peak for this device)")
    room = ""
    if m.memory_bytes:
        room = (f", needing {_gib(e.memory.total_bytes)} of its {_gib(m.memory_bytes)}" + ("" if e.fits else " (does NOT fit)"))
    return f"On this machine ({m.name}; {peak}): {e.method.upper()} would take {time}{room}."


# ---------------------------------------------------------------------------- reasons, section by section

UNTRIED_REASON = ("Prompt engineering (few-shot examples, chain-of-thought, structured output) has not been tried: "
                  "it costs hours, not GPU dollars, and sets the baseline a fine-tune must beat.")


def dataset_reasons(facts: DatasetFacts) -> list[str]:
    dup = f" after removing {facts.duplicates} duplicates" if facts.duplicates else ""
    rej = f" ({facts.rejected} rows rejected)" if facts.rejected else ""
    out = [f"The dataset {facts.source} has {_fmt_int(facts.unique)} unique examples{dup}{rej} (measured)."]
    consistent_measured = facts.format_consistency >= CONSISTENT_FORMAT_SHARE
    out.append(
        f"{facts.format_consistency:.0%} of answers share one shape ({facts.dominant_shape}): the output format is "
        + ("consistent (measured)." if consistent_measured else "not consistent (measured); fine-tuning learns a format best when one is used throughout.")
    )
    if facts.labels and len(facts.labels) >= 2:
        top = max(facts.labels, key=facts.labels.get)
        ratio = facts.imbalance or 1.0
        msg = (f"{len(facts.labels)} labels ({facts.label_source}); the largest, '{top}', is {facts.majority_share:.0%} "
               f"of examples, {ratio:.1f}x the smallest")
        if ratio > 5:
            msg += ": imbalanced, so collect more of the rare labels and read per-label accuracy, not just the total."
        else:
            msg += ": balanced enough."
        out.append(msg)
    out.append(
        f"Examples are {facts.token_p50} tokens at the median, {facts.token_p95} at the 95th percentile, "
        f"{facts.token_max} at most ({facts.token_counter})."
    )
    return out


def count_reason(kind: str, examples: int | None) -> str:
    minimum, (low, high), kind_name = MIN_EXAMPLES[kind], RECOMMENDED[kind], KIND_NAMES[kind]
    rec_range = f"{_fmt_int(low)}-{_fmt_int(high)}" if high else f"{_fmt_int(low)}+"
    if examples is None:
        return (f"The number of high-quality examples is unknown: {kind_name} needs at least {_fmt_int(minimum)} "
                f"({rec_range} recommended); count them or pass --data.")
    if examples < minimum:
        return (f"{_fmt_int(examples)} examples are fewer than the {_fmt_int(minimum)} {kind_name} needs "
                f"({rec_range} recommended): collect {_fmt_int(minimum - examples)}+ more before fine-tuning.")
    where = "within" if (examples <= high if high else True) and examples >= low else ("above" if high and examples > high else "below")
    return (f"{_fmt_int(examples)} examples meet the {_fmt_int(minimum)} minimum for {kind_name} "
            f"({where} the recommended {rec_range}).")


def verdict_reasons(rule: str, a: AdviseConfig, s: Signals) -> list[str]:
    """Why the rule that decided applies (the untried and no-saving rules say it first and last in :func:`advise`)."""
    if rule == "broad":
        return [f"Fine-tuning pays off for narrow, consistent tasks; here {' and '.join(s.against)}: "
                "improve the prompt (or split the task) first."]
    if rule == "too-few":
        return ["Until then, prompt-engineer (few-shot with your best examples, structured output) and keep "
                "collecting and labelling examples."]
    if rule not in TUNING_RULES:
        return []
    out = [f"Fine-tune: {'; '.join(s.ft)}." if s.ft else
           "Nothing says the task is narrow, the format consistent or the volume high (answer --narrow/--broad, "
           "give --data or --monthly-tokens): the verdict rests on the data count alone."]
    if a.prompt_engineering_tried is None:
        out.append("Check first that prompt engineering (few-shot, chain-of-thought, structured output) "
                   "falls short: it is the baseline the fine-tune must beat.")
    return out


def method_reasons(costs: Costs, a: AdviseConfig, arch: Architecture, *, examples: int | None, batch_size: int,
                   tuning: bool) -> list[str]:
    """The chosen method and the alternatives; ``tuning``: the rules would fine-tune (before weighing the cost)."""
    options, p = costs.options, costs.plan
    if p is None:
        o = min(options, key=lambda o: o.memory.total_bytes)
        return [f"No method fits {'the ' + a.gpu if a.gpu else 'any catalogue GPU'}: the smallest, {o.method.upper()} with "
                f"checkpointing at batch 1, needs {_gib(o.memory.total_bytes)} and the largest GPU has "
                f"{o.gpu.memory_gib:g} GiB; use a smaller model, shorter sequences or several GPUs with sharding."]
    gc = " with gradient checkpointing" if p.gradient_checkpointing else ""
    bs = f" at batch {p.batch_size}" if p.batch_size != batch_size else ""
    why = {
        "full": f"full fine-tuning (domain adaptation with {_fmt_int(examples or 0)} examples benefits from updating every weight)",
        "lora": f"LoRA (trains {p.memory.trainable_fraction:.2%} of {arch.name}'s {arch.total_params / 1e9:.2f}B parameters; "
                "close to full fine-tuning in quality for a fraction of the memory)",
        "qlora": f"QLoRA (the base in 4-bit NF4 so {arch.name} fits one {p.gpu.name}; "
                 f"trains {p.memory.trainable_fraction:.2%} of the parameters)",
    }[p.method]
    lead = "Method" if tuning else "If you fine-tune later, the method"
    out = [f"{lead}: {why}. It needs {_gib(p.memory.total_bytes)} on one {p.gpu.name} ({p.gpu.memory_gib:g} GiB){gc}{bs}, "
           f"and takes ~{_hours(p.time.seconds)} for {_usd(p.time.usd)} at {p.time.mfu:.0%} MFU."]
    for o in options:
        if o is p:
            continue
        if o.fits:
            out.append(f"Alternative: {o.method.upper()} on {o.gpu.name} needs {_gib(o.memory.total_bytes)}, "
                       f"~{_hours(o.time.seconds)}, {_usd(o.time.usd)}.")
        else:
            out.append(f"{o.method.upper()} does not fit: it needs {_gib(o.memory.total_bytes)} even at batch 1 with "
                       f"checkpointing, more than one {o.gpu.name} has ({o.gpu.memory_gib:g} GiB).")
    return out


def breakeven_reasons(be: BreakEven | None) -> list[str]:
    if be is None:
        return []
    if be.pays_off:
        return [f"Break-even: {_fmt_int(be.monthly_tokens)} tokens/month cost ${be.api_monthly_usd:,.2f} on the API at "
                f"${be.api_usd_per_m:g}/M and ${be.serve_monthly_usd:,.2f} served as a fine-tune ({be.serve_basis}); "
                f"the {_usd(be.one_off_usd)} of training and evaluation pays for itself in {_days(be.days)}."]
    return [f"Break-even: never at this volume: the API costs ${be.api_monthly_usd:,.2f}/month and serving the "
            f"fine-tune ${be.serve_monthly_usd:,.2f}/month ({be.serve_basis}); fine-tune for quality or latency, not cost."]


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


__all__ = ["DEFAULT_MFU", "VERDICTS", "Advice", "MethodOption", "Signals", "advise", "choose_plan", "decide", "plan_options",
           "read_signals", "serving_gpu"]
