"""`tunesmith eval`: every model on the test split, the adversarial set and the regression set; one report.

Models: ``base``; ``few_shot`` (base + k train examples in the prompt); ``base_structured`` (base
held to the answer format by constrained decoding, see structured.py); ``tuned`` (base + this
run's adapter, or the full fine-tuned model); ``eval.local_models`` (merged folders or extra
adapters); ``eval.endpoints`` (OpenAI-compatible HTTP APIs). Local models share one loaded base.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunesmith.config import RunConfig
from tunesmith.constrained_decoding import CompiledConstraint, ConstraintError, GrammarCompiler, model_vocab_size
from tunesmith.console import console
from tunesmith.data.prepared import PreparedData
from tunesmith.data.records import prompt_messages, reference_answer
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.evaluate import adversarial as adv
from tunesmith.evaluate.endpoint import Answer, EndpointClient
from tunesmith.evaluate.fewshot import few_shot_conversation, few_shot_tools, pick_shots
from tunesmith.evaluate.gates import GateFailed, check_gates
from tunesmith.evaluate.drift import (
    drift_scores, drift_summary, parse_preference, preference_messages, preference_summary, preferred, tuned_first,
)
from tunesmith.evaluate.general import general_prompts, general_text
from tunesmith.evaluate.generate import decode_answer, generate_token_ids, render_prompts, stop_token_ids
from tunesmith.evaluate.history import Finished, abandon_evaluation, finish_evaluation, start_evaluation
from tunesmith.evaluate.instructions import check_answers, instruction_change, instruction_prompts, instruction_summary
from tunesmith.evaluate.lm_eval_tasks import LmEvalTasks, resolve_tasks
from tunesmith.evaluate.parity import Side, certificate
from tunesmith.evaluate.parity_cost import check_gpu_name, endpoint_cost, hourly_price, local_cost
from tunesmith.evaluate.regression import (
    change_vs_base, general_prompt_scores, general_prompt_summary, perplexity, window_losses, with_flags,
)
from tunesmith.evaluate.report_content import build_report
from tunesmith.evaluate.report_html import render_html
from tunesmith.evaluate.report_markdown import render_markdown
from tunesmith.evaluate.report_terminal import print_summary
from tunesmith.evaluate.structured import StructuredOutput, structured_output
from tunesmith.evaluate.task_scoring import (
    ExampleScore, aggregate, pairwise_comparisons, task_scorer_from_config, user_text,
)
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.utils.io import write_jsonl
from tunesmith.utils.quiet import model_loading_noise_silenced

# gen(conversations, max_new_tokens, label, tools=None): tools[i] = the functions conversation i declares (or None)
Generate = Callable[..., list[Answer]]
Tools = list[list[dict] | None] | None
BASE_WEIGHTS = ("base", "few_shot", "base_structured")  # models that run on the loaded base as it is


@dataclass
class ModelResult:
    metrics: dict[str, Any]
    examples: list[dict[str, Any]]
    scores: dict[str, ExampleScore] = field(default_factory=dict)  # by example id, successful answers only
    adversarial: dict[str, Any] | None = None
    adversarial_examples: list[dict[str, Any]] = field(default_factory=list)
    regression: dict[str, Any] | None = None
    general_scores: dict[str, float] = field(default_factory=dict)
    instruction_rows: list[dict[str, Any]] = field(default_factory=list)  # verifiable instructions, checked
    regression_answers: dict[str, str | None] = field(default_factory=dict)  # "general:<id>" / "instruction:<id>"
    drift: dict[str, float] = field(default_factory=dict)  # per prompt, vs base's answer (models other than base)
    preference: dict[str, Any] | None = None  # eval.regression.judge's preference vs base
    regression_examples: list[dict[str, Any]] = field(default_factory=list)


def load_tuned(cfg: RunConfig, base_model):
    """The tuned model: the base with the run's adapter (plain PEFT), or the full fine-tuned model."""
    adapter = cfg.run_dir / "adapter"
    full = cfg.run_dir / "model"
    if adapter.is_dir():
        from peft import PeftModel

        with model_loading_noise_silenced():  # peft's use of a deprecated transformers property
            return PeftModel.from_pretrained(base_model, str(adapter))
    if full.is_dir():
        return load_model_folder(cfg, full)
    raise TunesmithError(f"no trained adapter or model in {cfg.run_dir}", hint="run `tunesmith train` first")


def load_model_folder(cfg: RunConfig, path: Path):
    from tunesmith.models.config import ModelConfig

    if not path.is_dir():
        raise TunesmithError(f"model folder {path} does not exist", hint="check eval.local_models[].path")
    return load_model(ModelConfig(name_or_path=str(path), device=cfg.model.device, dtype=cfg.model.dtype))


def _progress(label: str, total: int):
    p = Progress(TextColumn(f"[bold blue]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 console=console, transient=False)
    return p, total


def local_generate(model, tokenizer, batch_size: int, constraint: CompiledConstraint | None = None, *,
                   temperature: float = 0.0, seed: int = 0) -> Generate:
    """A local model's generate function: greedy, or sampled at ``temperature`` > 0 from ``seed``."""
    def gen(convs: list[list[dict]], max_new_tokens: int, label: str, tools: Tools = None) -> list[Answer]:
        if not convs:
            return []
        prompts = render_prompts(tokenizer, convs, tools)
        latency: list[float | None] = [None] * len(prompts)
        clock = [time.perf_counter()]

        def rows_done(rows: list[int]) -> None:  # a batch's prompts all wait for the whole batch
            now = time.perf_counter()
            for i in rows:
                latency[i] = now - clock[0]
            clock[0] = now

        p, total = _progress(label, len(prompts))
        with p:
            task = p.add_task(label, total=total)
            ids = generate_token_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                     on_batch=lambda n: p.update(task, advance=n), on_rows=rows_done,
                                     constraints=[constraint] * len(prompts) if constraint is not None else None,
                                     temperature=temperature, seed=seed)
        return [Answer(decode_answer(tokenizer, new), latency_s=lat, prompt_tokens=len(prompt),
                       completion_tokens=len(new)) for new, lat, prompt in zip(ids, latency, prompts, strict=True)]

    return gen


def _endpoint_generate(client: EndpointClient) -> Generate:
    def gen(convs: list[list[dict]], max_new_tokens: int, label: str, tools: Tools = None) -> list[Answer]:
        if not convs:
            return []
        client.max_tokens = client.cfg.max_tokens or max_new_tokens
        p, total = _progress(label, len(convs))
        with p:
            task = p.add_task(label, total=total)
            return client.complete_many(convs, on_done=lambda n: p.update(task, advance=n), tools=tools)

    return gen


def _few_shot(gen: Generate, shots) -> Generate:
    def wrapped(convs, max_new_tokens, label, tools: Tools = None):
        shown = [few_shot_tools(t, shots) for t in (tools or [None] * len(convs))]
        return gen([few_shot_conversation(c, shots) for c in convs], max_new_tokens, label,
                   shown if any(shown) else None)

    return wrapped


class Evaluator:
    def __init__(self, cfg: RunConfig, prepared: PreparedData):
        self.cfg = cfg
        ec = self.ec = cfg.eval
        self.records = prepared.test[: ec.max_examples] if ec.max_examples else list(prepared.test)
        if not self.records:
            raise TunesmithError("the test split is empty", hint="set data.test_fraction above 0")
        self.prepared = prepared
        self.scorer = task_scorer_from_config(ec, Path(cfg.base_dir), records=[*prepared.train, *self.records])
        self.kind, self.fmt = self.scorer.kind, self.scorer.fmt
        self.fmt_schema = self.fmt.schema
        self.boot = {"n_resamples": ec.bootstrap_samples, "seed": cfg.seed}
        cache = cfg.resolve_path(cfg.output_dir) / ".endpoint-cache"
        self.clients = {e.name: EndpointClient(e, cache_dir=cfg.resolve_path(e.cache_dir) if e.cache_dir else cache / e.name,
                                               max_tokens=ec.max_new_tokens) for e in ec.endpoints}
        self.adv_items = self._adversarial_items()
        self.abstain_re = re.compile(ec.adversarial.abstain_pattern)
        self.structured: StructuredOutput | None = (
            structured_output(ec, self.fmt_schema, prepared.train, self.records) if "base_structured" in ec.models
            else None)
        self._tokenizer = None
        self.lm_eval = self._lm_eval_tasks()
        if ec.parity is not None:
            check_gpu_name(ec.parity.gpu)
        rc = ec.regression
        self.instruction_items = instruction_prompts(rc.instruction_prompts, cfg.seed) if rc.enabled else []
        self.base_answers: dict[str, str | None] | None = None  # base's regression answers, once it has given them
        self.drift_reference: dict[str, Any] | None = None  # base's own drift (sampled vs greedy), once measured

    # -- inputs ------------------------------------------------------------------------------

    def _adversarial_items(self) -> list[dict[str, Any]]:
        ac = self.ec.adversarial
        if not ac.enabled:
            return []
        items = adv.load_items(self.cfg.resolve_path(ac.file)) if ac.file else []
        room = max(0, ac.max_prompts - len(items))
        items = items[: ac.max_prompts] + adv.generate_items(self.records, list(ac.generate), room, self.cfg.seed)
        return items

    def _lm_eval_tasks(self) -> LmEvalTasks | None:
        """eval.regression.lm_eval's tasks, checked before any model loads; None when off or no model is local."""
        ec = self.ec
        lc = ec.regression.lm_eval
        if not (ec.regression.enabled and lc.tasks and any(m not in self.clients for m in ec.models)):
            return None
        return resolve_tasks(lc, [self.cfg.resolve_path(p) for p in lc.include_path], batch_size=ec.batch_size,
                             seed=self.cfg.seed, bootstrap_iters=ec.bootstrap_samples)

    def compile_structured(self, model) -> CompiledConstraint:
        """The base_structured constraint compiled for the tokenizer and ``model``'s vocabulary and end tokens."""
        assert self.structured is not None
        compiler = GrammarCompiler(self.tokenizer, vocab_size=model_vocab_size(model),
                                   stop_token_ids=stop_token_ids(self.tokenizer, model))
        try:
            return compiler.compile(self.structured.constraint)
        except ConstraintError as e:
            raise ConfigError(f"base_structured ({self.structured.source}): {e.message}",
                              hint="xgrammar's regex has no \\b, lookarounds or inline flags: write "
                              "eval.format_pattern without them, or set eval.structured_output") from None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.model)
        return self._tokenizer

    # -- measurements ------------------------------------------------------------------------

    def task(self, name: str, gen: Generate) -> ModelResult:
        convs = [prompt_messages(r) for r in self.records]
        tools = [r.get("tools") for r in self.records]
        t0 = time.perf_counter()
        answers = gen(convs, self.ec.max_new_tokens, f"{name}: test split", tools if any(tools) else None)
        seconds = time.perf_counter() - t0
        examples, scores, failed = [], {}, []
        for i, (r, conv, a, fns) in enumerate(zip(self.records, convs, answers, tools, strict=True)):
            rid = str(r.get("id", i))
            ref = reference_answer(r)
            ex: dict[str, Any] = {"id": rid, "prompt": conv[-1]["content"], "reference": ref, "prediction": a.text}
            ex.update({k: v for k, v in (("latency_s", a.latency_s), ("prompt_tokens", a.prompt_tokens),
                                         ("completion_tokens", a.completion_tokens)) if v is not None})
            if a.error is not None:
                ex.update({"error": a.error, "correct": None})
                failed.append({"id": rid, "error": a.error})
            else:
                s = self.scorer(a.text or "", ref, source=user_text(conv), tools=fns)
                scores[rid] = s
                ex.update({"correct": s.correct, "score": round(s.score, 4), "format_ok": s.format_ok,
                           "fields": s.fields, "values": {k: o.status for k, o in s.values.items()}})
                if s.tool is not None:
                    ex["tool_calls"] = {"expected_call": s.tool.expected_call, "predicted_call": s.tool.predicted_call,
                                        "names_right": s.tool.names_right, "arguments_right": s.tool.args_right,
                                        "arguments": s.tool.args_total}
                if s.format_ok is False:
                    ex["format_error"] = (s.tool.compliance_error if s.tool is not None and s.tool.compliance_error
                                          else self.fmt.reason(a.text or ""))
            examples.append(ex)
        metrics = aggregate(list(scores.values()), kind=self.kind, max_invented_value_rate=self.ec.max_invented_value_rate,
                            **self.boot)
        metrics["n_failed"] = len(failed)
        if failed:
            metrics["failed"] = failed[:20]
        metrics["generation_seconds"] = round(seconds, 2)
        return ModelResult(metrics, examples, scores)

    def adversarial(self, name: str, gen: Generate, res: ModelResult) -> None:
        if not self.adv_items:
            return
        ac = self.ec.adversarial
        answers = gen([it["messages"] for it in self.adv_items], self.ec.max_new_tokens, f"{name}: adversarial")
        rows = adv.verdicts(self.adv_items, answers, abstain_re=self.abstain_re, fmt=self.fmt, keep_format=ac.keep_format)
        if ac.judge:
            todo = [r for r in rows if "error" not in r]
            by_id = {it["id"]: it for it in self.adv_items}
            adv.add_judge_verdicts(todo, self.clients[ac.judge].complete_many(
                [adv.judge_messages(by_id[r["id"]]["messages"], r["prediction"] or "", r["expect"]) for r in todo]))
        res.adversarial = adv.hallucination_summary(rows, judge=ac.judge, **self.boot)
        res.adversarial_examples = rows

    def regression(self, name: str, model, gen: Generate, res: ModelResult, text: str, prompts: list[dict]) -> None:
        rc = self.ec.regression
        out: dict[str, Any] = {}
        if text:
            out.update(perplexity(window_losses(model, self.tokenizer, text), **self.boot))
        general, instructions = self._regression_answers(gen, prompts, name)
        if prompts:
            res.general_scores = general_prompt_scores(prompts, [a.text for a in general])
            out.update(general_prompt_summary(res.general_scores, **self.boot))
        if self.instruction_items:
            res.instruction_rows = check_answers(self.instruction_items, [a.text for a in instructions])
            out.update(instruction_summary(res.instruction_rows, **self.boot))
        res.regression_answers.update(self._answers_by_key(prompts, general, instructions))
        if self.lm_eval is not None:
            console.print(escape(f"{name}: lm-eval tasks {', '.join(self.lm_eval.names)}"))
            out["lm_eval"] = self.lm_eval.score(model, self.tokenizer)
        res.regression = out
        if name == "base":
            self.base_answers = res.regression_answers
            if rc.max_mean_drift is None:
                self.drift_reference = self._drift_reference(model, prompts)
        elif self.base_answers is not None:
            res.drift = drift_scores(self.base_answers, res.regression_answers)
            if rc.judge and prompts:
                res.preference = self._judge_preference(name, prompts, res.regression_answers)
        res.regression_examples = self._regression_rows(prompts, res)

    def _drift_reference(self, model, prompts: list[dict]) -> dict[str, Any] | None:
        """Base's own drift: its answers sampled at ``drift_reference_temperature`` (seeded) against its greedy ones.

        A greedy answer of a small model changes wording under almost any change of weights (a random
        perturbation that raises perplexity 1% moves the embedded model's answers 0.50), so a fixed threshold says
        little; a model whose answers are no further from base's than base's own sampled answers are has not
        changed more than base varies. The drift flag's threshold unless ``max_mean_drift`` is set.
        """
        rc, base_answers = self.ec.regression, self.base_answers
        assert base_answers is not None
        t = rc.drift_reference_temperature
        sample = local_generate(model, self.tokenizer, self.ec.batch_size, temperature=t, seed=self.cfg.seed)
        answers = self._answers_by_key(prompts, *self._regression_answers(sample, prompts, f"base sampled (T={t:g})"))
        summary, _ = drift_summary(drift_scores(base_answers, answers), changed_above=rc.drift_changed_above,
                                   max_mean_drift=None, **self.boot)
        return {"temperature": t, **summary} if summary else None

    def _regression_answers(self, gen: Generate, prompts: list[dict], label: str) -> tuple[list[Answer], list[Answer]]:
        """``gen``'s answers to the general prompts and to the verifiable-instruction prompts (each [] when none)."""
        rc = self.ec.regression
        general = gen([prompt_messages(r) for r in prompts], rc.max_new_tokens, f"{label}: general prompts")
        instructions = gen([it["messages"] for it in self.instruction_items], rc.instruction_max_new_tokens,
                           f"{label}: verifiable instructions")
        return general, instructions

    def _answers_by_key(self, prompts: list[dict], general: list[Answer],
                        instructions: list[Answer]) -> dict[str, str | None]:
        """Regression answers by ``general:<id>`` / ``instruction:<id>``, the keys drift pairs answers by."""
        out: dict[str, str | None] = {f"general:{r['id']}": a.text for r, a in zip(prompts, general, strict=True)}
        out.update({f"instruction:{it['id']}": a.text
                    for it, a in zip(self.instruction_items, instructions, strict=True)})
        return out

    def _judge_preference(self, name: str, prompts: list[dict], answers: dict[str, str | None]) -> dict[str, Any]:
        """eval.regression.judge's preference between base's and ``name``'s answers to the general prompts."""
        assert self.base_answers is not None
        judge = self.ec.regression.judge
        order = [tuned_first(r["id"], self.cfg.seed) for r in prompts]
        pairs = [(answers[f"general:{r['id']}"], self.base_answers[f"general:{r['id']}"]) for r in prompts]
        convs = [preference_messages(prompt_messages(r), *(pair if first else pair[::-1]))
                 for r, pair, first in zip(prompts, pairs, order, strict=True)]
        console.print(escape(f"{name}: {judge} judges base vs {name} on {len(convs)} general prompts"))
        replies = self.clients[judge].complete_many(convs)
        return preference_summary([preferred(parse_preference(a.text), first) for a, first in zip(replies, order, strict=True)],
                                  judge=judge, **self.boot)

    @staticmethod
    def _regression_rows(prompts: list[dict], res: ModelResult) -> list[dict[str, Any]]:
        """eval/<model>.regression.jsonl: every regression prompt, the answer, its check and its drift from base."""
        rows = [{"set": "general", "id": r["id"], "prompt": prompt_messages(r)[-1]["content"],
                 "prediction": res.regression_answers.get(f"general:{r['id']}"),
                 **({"rouge_l": round(res.general_scores[r["id"]], 4)} if r["id"] in res.general_scores else {})}
                for r in prompts]
        rows += [{"set": "instruction", **r} for r in res.instruction_rows]
        for row in rows:
            d = res.drift.get(f"{row['set']}:{row['id']}")
            if d is not None:
                row["drift_from_base"] = round(d, 4)
        return rows

    # -- the whole evaluation ---------------------------------------------------------------

    def run(self, generations_dir: Path) -> dict[str, ModelResult]:
        """Every model on every set; each model's generations are written to ``generations_dir`` as it finishes."""
        ec, cfg = self.ec, self.cfg
        local_names = [m for m in ec.models if m not in self.clients]
        text, text_src, prompts, prompts_src = "", None, [], None
        if ec.regression.enabled and local_names:
            rc = ec.regression
            text, text_src = general_text(cfg.resolve_path(rc.text_file), rc.max_text_chars)
            prompts, prompts_src = general_prompts(cfg.resolve_path(rc.prompts_file), cfg.run_dir / "data",
                                                   rc.max_prompts, cfg.resolve_path(rc.general_prompts_file))
        self.sources = {"text": text_src, "prompts": prompts_src, "text_chars": len(text),
                        "prompts_with_reference": sum(not r.get("no_reference") for r in prompts)}
        results: dict[str, ModelResult] = {}
        base = load_model(cfg.model) if local_names else None
        structured = self.compile_structured(base) if self.structured is not None else None
        # base-weight models first: the adapter of `tuned` is injected into the same loaded base
        order = sorted(ec.models, key=lambda m: (m not in BASE_WEIGHTS, ec.models.index(m)))
        local_specs = {m.name: m for m in ec.local_models}
        for name in order:
            model = None
            if name in self.clients:
                gen = _endpoint_generate(self.clients[name])
            else:
                if name in BASE_WEIGHTS:
                    model = base
                elif name == "tuned":
                    model = load_tuned(cfg, base)
                elif local_specs[name].kind == "adapter":
                    from peft import PeftModel

                    path = cfg.resolve_path(local_specs[name].path)
                    if not (path / "adapter_config.json").is_file():
                        raise TunesmithError(f"eval.local_models '{name}': {path} has no adapter_config.json")
                    with model_loading_noise_silenced():
                        model = PeftModel.from_pretrained(base, str(path))
                else:
                    model = load_model_folder(cfg, cfg.resolve_path(local_specs[name].path))
                gen = local_generate(model, self.tokenizer, ec.batch_size,
                                     structured if name == "base_structured" else None)
                if name == "few_shot":
                    shots = pick_shots(self.prepared.train, ec.few_shot_k, cfg.seed)
                    if not shots:
                        raise TunesmithError("few_shot needs train examples", hint="remove few_shot from eval.models")
                    gen = _few_shot(gen, shots)
            res = self.task(name, gen)
            if name == "base_structured" and self.structured is not None:
                res.metrics["structured_output"] = self.structured.describe()
            self.adversarial(name, gen, res)
            # few_shot and base_structured have base's weights: their perplexity is base's
            has_weights_of_its_own = name not in ("few_shot", "base_structured")
            if model is not None and has_weights_of_its_own and (text or prompts or self.instruction_items
                                                                 or self.lm_eval is not None):
                self.regression(name, model, gen, res, text, prompts)
            results[name] = res
            write_jsonl(generations_dir / f"{name}.jsonl", res.examples)
            if res.adversarial_examples:
                write_jsonl(generations_dir / f"{name}.adversarial.jsonl", res.adversarial_examples)
            if res.regression_examples:
                write_jsonl(generations_dir / f"{name}.regression.jsonl", res.regression_examples)
            if model is not None and model is not base:
                if hasattr(model, "unload"):
                    base = model.unload()  # give the clean base back for the next model
                del model
        return {m: results[m] for m in ec.models}

    def summary(self, results: dict[str, ModelResult]) -> dict[str, Any]:
        """The content of metrics.json."""
        metrics: dict[str, Any] = {name: r.metrics for name, r in results.items()}
        if "base" in results and "tuned" in results and results["base"].metrics["accuracy"] is not None \
                and results["tuned"].metrics["accuracy"] is not None:
            metrics["delta_accuracy_points"] = 100 * (results["tuned"].metrics["accuracy"] - results["base"].metrics["accuracy"])
        metrics["comparisons"] = pairwise_comparisons({n: r.scores for n, r in results.items()}, kind=self.kind,
                                                      **self.boot)
        if any(r.adversarial for r in results.values()):
            kinds = dict(Counter(it["kind"] for it in self.adv_items))
            metrics["adversarial"] = {"items": len(self.adv_items), "kinds": kinds,
                                      **{n: r.adversarial for n, r in results.items() if r.adversarial}}
        if any(r.regression for r in results.values()):
            metrics["regression"] = self._regression_summary(results)
        if self.ec.parity is not None:
            metrics["parity"] = self.parity(results)
        metrics.update({"model": self.cfg.model.name_or_path, "method": self.cfg.train.method,
                        "test_examples": len(self.records), "scorer": self.kind})
        return metrics

    def parity(self, results: dict[str, ModelResult]) -> dict[str, Any]:
        """eval.parity's certificate: the candidate against the reference on the same test examples."""
        pc = self.ec.parity
        assert pc is not None
        ref, cand = (self._side(n, results[n]) for n in (pc.reference, pc.candidate))
        return certificate(ref, cand, kind=self.kind, margin_points=pc.margin_points, confidence=pc.confidence,
                           power=pc.power, **self.boot)

    def _side(self, name: str, r: ModelResult) -> Side:
        answers = {e["id"]: e["prediction"] or "" for e in r.examples if e.get("error") is None}
        latencies = tuple(e["latency_s"] for e in r.examples if e.get("latency_s") is not None)
        if name in self.clients:
            e = self.clients[name].cfg
            cost = endpoint_cost(r.examples, input_price=e.usd_per_million_input_tokens,
                                 output_price=e.usd_per_million_output_tokens)
        else:
            pc = self.ec.parity
            assert pc is not None
            device = _device_name(self.cfg.model.device)
            price, source = hourly_price(usd_per_hour=pc.usd_per_hour, gpu=pc.gpu,
                                         device_name=None if device == "cpu" else device)
            cost = local_cost(r.examples, generation_seconds=r.metrics.get("generation_seconds"), usd_per_hour=price,
                              price_source=source, device=device)
        return Side(name, r.scores, answers, latencies, cost)

    def _regression_summary(self, results: dict[str, ModelResult]) -> dict[str, Any]:
        rc = self.ec.regression
        reg: dict[str, Any] = {"text_source": self.sources["text"], "text_chars": self.sources["text_chars"],
                               "prompts_source": self.sources["prompts"],
                               "prompts_with_reference": self.sources["prompts_with_reference"],
                               "instruction_prompts": len(self.instruction_items),
                               "thresholds": {"max_perplexity_increase_pct": rc.max_perplexity_increase_pct,
                                              "max_rouge_drop_points": rc.max_rouge_drop_points,
                                              "max_instruction_drop_points": rc.max_instruction_drop_points,
                                              "max_mean_drift": self._max_mean_drift()[0],
                                              "drift_changed_above": rc.drift_changed_above}}
        if self.drift_reference is not None:
            reg["drift_reference"] = self.drift_reference
        lm_eval_drop = None
        if self.lm_eval is not None:
            reg["lm_eval"] = self.lm_eval.describe()
            lm_eval_drop = reg["thresholds"]["max_lm_eval_drop_points"] = rc.lm_eval.max_drop_points
        base = results.get("base")
        for n, r in results.items():
            if not r.regression:
                continue
            if base is not None and base.regression and n != "base":
                entry = change_vs_base(base.regression, base.general_scores, r.regression, r.general_scores,
                                       max_ppl_increase_pct=rc.max_perplexity_increase_pct,
                                       max_rouge_drop_points=rc.max_rouge_drop_points,
                                       max_lm_eval_drop_points=lm_eval_drop, seed=self.cfg.seed)
                reg[n] = self._instructions_and_drift(entry, base, r)
            else:
                reg[n] = dict(r.regression)
        return reg

    def _max_mean_drift(self) -> tuple[float | None, str]:
        """The drift flag's threshold and where it came from: ``max_mean_drift`` if set (""), else base's own drift
        (None: not measured)."""
        rc = self.ec.regression
        if rc.max_mean_drift is not None:
            return rc.max_mean_drift, ""
        own = self.drift_reference["drift"] if self.drift_reference else None
        return own, f"base's own at temperature {rc.drift_reference_temperature:g}"

    def _instructions_and_drift(self, entry: dict[str, Any], base: ModelResult, r: ModelResult) -> dict[str, Any]:
        """A model's regression entry with its verifiable-instruction change and drift from base, and their flags."""
        rc = self.ec.regression
        instr, flags = instruction_change({x["id"]: x["passed"] for x in base.instruction_rows},
                                          {x["id"]: x["passed"] for x in r.instruction_rows},
                                          max_drop_points=rc.max_instruction_drop_points, **self.boot)
        limit, source = self._max_mean_drift()
        drift, drift_flags = drift_summary(r.drift, changed_above=rc.drift_changed_above,
                                           max_mean_drift=limit, threshold_source=source, **self.boot)
        if drift:
            drift["drift_by_set"] = {}
            for s in ("general", "instruction"):
                vals = [v for k, v in r.drift.items() if k.startswith(f"{s}:")]
                if vals:
                    drift["drift_by_set"][s] = {"n": len(vals), "drift": sum(vals) / len(vals)}
        if r.preference is not None:
            drift["judge_preference"] = r.preference
        return with_flags(entry, {**instr, **drift}, flags + drift_flags)


def _device_name(configured: str | None) -> str:
    """The accelerator local models ran on (its CUDA name), or "cpu"."""
    import torch

    if str(configured or "auto").startswith("cpu") or not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name(0)


def _print_where(run_dir: Path, saved: Finished) -> None:
    if saved.earlier is not None:
        console.print(f"results of an earlier evaluation kept in {escape(str(saved.earlier))}/", soft_wrap=True)
    console.print(f"this evaluation: {escape(str(saved.folder))}/ (report.html, report.md, metrics.json, config.yaml, "
                  "eval/)", soft_wrap=True)
    latest = "  ".join(escape(f"{run_dir / f}") for f in ("report.html", "report.md", "metrics.json")) + \
        "  " + escape(f"{run_dir / 'eval'}/")
    console.print(f"latest evaluation of the run (same files): {latest}", soft_wrap=True)


def evaluate_from_config(cfg: RunConfig, prepared: PreparedData) -> dict[str, Any]:
    """Evaluate; keep the evaluation in its own folder and make it the run's latest; print the table.

    ``<run_dir>/evaluations/<UTC start>/`` gets metrics.json, report.md, report.html, config.yaml and
    eval/*.jsonl; the same files are then the latest at the top of the run folder (see
    :mod:`tunesmith.evaluate.history`). Raises :class:`GateFailed` (after writing everything) when a
    gate of ``eval.fail_under`` (the config's and ``--fail-under``'s) is missed.
    """
    ev = Evaluator(cfg, prepared)
    evaluation = start_evaluation(cfg.run_dir)
    try:
        results = ev.run(evaluation.generations)
    except BaseException:
        left = abandon_evaluation(evaluation)
        if left is not None:
            console.print(f"evaluation stopped; its generations so far are in {escape(str(left))}/", soft_wrap=True)
        raise
    metrics = ev.summary(results)
    gate_rows = check_gates(metrics, cfg.eval.fail_under) if cfg.eval.fail_under else []
    if gate_rows:
        metrics["gates"] = gate_rows
    metrics["evaluation"] = evaluation.describe()
    report = build_report(results, metrics, title=f"tunesmith report: {cfg.name}", show_failures=cfg.eval.show_failures)
    saved = finish_evaluation(evaluation, metrics=metrics, report_md=render_markdown(report),
                              report_html=render_html(report), config_yaml=cfg.to_yaml())
    print_summary(report)
    _print_where(cfg.run_dir, saved)
    missed = [g for g in gate_rows if not g["passed"]]
    for g in gate_rows:
        mark = "[green]pass[/]" if g["passed"] else "[red]FAIL[/]"
        console.print(f"gate {g['key']} >= {g['threshold']:g}: {g['value']} {mark}")
    if missed:
        raise GateFailed("missed gate(s): " + ", ".join(f"{g['key']}={g['value']} < {g['threshold']:g}" for g in missed),
                         hint=f"see 'gates' in {saved.folder / 'metrics.json'} and report.md")
    return metrics
