"""Constrained decoding benchmark: greedy generation held to a grammar vs free greedy generation, same prompts.

For each constraint (a JSON Schema, any JSON object, a regex, a choice of labels, text with tool calls) the same support-ticket
prompts are generated with tunesmith's batched greedy generator twice, free and constrained, alternating
for ``--repeats`` rounds after a warm-up; the median time of each side gives its generated tokens per
second (end tokens counted), and the ratio constrained / free is printed; the **cpu ratio** is the same with
the process's CPU time instead of wall time (steadier on a machine shared with other jobs, with one torch thread).

That ratio also reflects that the two sides write answers of different lengths: a batch decodes until
its longest row ends, and a short answer (a label) spends most of its time in the prompt's prefill.
Two measures do not depend on that: the **decode step ratio** (time per decode step, prefill excluded:
one forward for every row of the batch + choosing the next tokens, + the grammar on the constrained
side; free / constrained, 1.0 = no cost) and the **grammar share** (time inside the grammar's logits
processor: accepting tokens, filling and applying masks, over the constrained run's time).

    OMP_NUM_THREADS=1 python benchmarks/constrained_generation.py --n 32 --batch-size 16 --repeats 3

The model defaults to the embedded SmolLM2-135M-Instruct (offline). Results go to stdout and, with
--out, to a JSON file. Every constrained output is checked (parses and validates / matches / is a label).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
URGENCIES = ["Critical", "High", "Medium", "Low"]
CATEGORIES = ["Billing", "Technical", "Account", "Shipping", "Security"]
SCHEMA = {"type": "object", "properties": {
    "urgency": {"enum": URGENCIES}, "category": {"enum": CATEGORIES},
    "reasoning": {"type": "string", "maxLength": 100}}, "required": ["urgency", "category", "reasoning"]}
REGEX = (r"Urgency: (Critical|High|Medium|Low)\nCategory: (Billing|Technical|Account|Shipping|Security)\n"
         r"Reasoning: [^\n]{1,100}")
TOOLS = [{"type": "function", "function": {"name": "set_ticket", "description": "File the ticket's triage.",
                                           "parameters": {"type": "object", "properties": {
                                               "urgency": {"enum": URGENCIES}, "category": {"enum": CATEGORIES}},
                                               "required": ["urgency", "category"]}}}]
ASK = {"json_schema": "Reply with a JSON object with keys urgency, category and reasoning.",
       "json": "Reply with a JSON object with keys urgency, category and reasoning.",
       "regex": "", "choice": "Reply with the category only.",
       "tool_calls": "Call set_ticket with the ticket's urgency and category."}


def _eval_generation():
    spec = importlib.util.spec_from_file_location("eval_generation", ROOT / "benchmarks" / "eval_generation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def constraints():
    from tunesmith.constrained_decoding import OutputConstraint
    from tunesmith.tool_call_grammar import auto_tool_calls

    return {"json_schema": OutputConstraint.json_schema(SCHEMA), "json": OutputConstraint.json(object_only=True),
            "regex": OutputConstraint.regex(REGEX), "choice": OutputConstraint.choice(CATEGORIES),
            "tool_calls": auto_tool_calls([t["function"] for t in TOOLS])}


def valid(kind: str, text: str) -> bool:
    import jsonschema

    if kind == "tool_calls":  # plain text, or calls that parse and validate
        from tunesmith.evaluate.tool_call_scoring import score_tool_calls

        return score_tool_calls(text, "", TOOLS).compliant
    try:
        if kind == "json_schema":
            jsonschema.validate(json.loads(text), SCHEMA)
            return True
        if kind == "json":
            return isinstance(json.loads(text), dict)
    except ValueError:
        return False
    except jsonschema.ValidationError:
        return False
    if kind == "regex":
        return re.fullmatch(REGEX, text) is not None
    return text in CATEGORIES


class GrammarTimer:
    """Adds up the seconds spent in GrammarLogitsProcessor.__call__ (accept tokens, fill and apply masks)."""

    def __init__(self):
        from tunesmith import constrained_decoding as cd

        self.cd, self.seconds, self.calls = cd, 0.0, 0
        self._orig = cd.GrammarLogitsProcessor.__call__

    def __enter__(self):
        orig, timer = self._orig, self

        def timed(proc, input_ids, scores):
            t0 = time.perf_counter()
            try:
                return orig(proc, input_ids, scores)
            finally:
                timer.seconds += time.perf_counter() - t0
                timer.calls += 1

        self.cd.GrammarLogitsProcessor.__call__ = timed
        return self

    def __exit__(self, *exc):
        self.cd.GrammarLogitsProcessor.__call__ = self._orig


class ForwardClock:
    """Times the model's prefill forwards (more than one new position) and counts its decode steps (one)."""

    def __init__(self, model):
        self.model, self.prefill_seconds, self.decode_steps, self._t0 = model, 0.0, 0, 0.0

    def __enter__(self):
        def pre(_m, args, kwargs):
            self._t0 = time.perf_counter()

        def post(_m, args, kwargs, _out):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None and ids.shape[1] > 1:
                self.prefill_seconds += time.perf_counter() - self._t0
            else:
                self.decode_steps += 1

        self._hooks = [self.model.register_forward_pre_hook(pre, with_kwargs=True),
                       self.model.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()


def measure(kind, compiled, model, tokenizer, prompts, args) -> dict:
    from tunesmith.evaluate.generate import generate_token_ids

    def run(constrained: bool):
        with ForwardClock(model) as clock:
            t0, c0 = time.perf_counter(), time.process_time()
            ids = generate_token_ids(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                     batch_size=args.batch_size,
                                     constraints=[compiled] * len(prompts) if constrained else None)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        # a decode step: one forward for every row of the batch + picking the next tokens (+ the grammar)
        return seconds, cpu, ids, (seconds - clock.prefill_seconds) / max(1, clock.decode_steps)

    n_tokens = lambda ids: sum(len(i) + (len(i) < args.max_new_tokens) for i in ids)  # noqa: E731  + end token
    warm = prompts[: args.batch_size]
    for constrained in (False, True):  # warm-up: first forward passes, xgrammar's thread pool
        generate_token_ids(model, tokenizer, warm, max_new_tokens=4, batch_size=args.batch_size,
                           constraints=[compiled] * len(warm) if constrained else None)
    free_t, cons_t, grammar_s, steps, step_s = [], [], [], 0, {False: [], True: []}
    cpu_s = {False: [], True: []}
    for r in range(args.repeats):
        for constrained in ((False, True) if r % 2 == 0 else (True, False)):
            with GrammarTimer() as gt:
                seconds, cpu, ids, per_step = run(constrained)
            step_s[constrained].append(per_step)
            cpu_s[constrained].append(cpu)
            (cons_t if constrained else free_t).append(seconds)
            if constrained:
                grammar_s.append(gt.seconds)
                cons_ids, steps = ids, gt.calls
            else:
                free_ids = ids
        print(f"{kind}: round {r + 1}/{args.repeats}: free {free_t[-1]:.1f}s, constrained {cons_t[-1]:.1f}s",
              flush=True)
    texts = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in cons_ids]
    free_tps = n_tokens(free_ids) / statistics.median(free_t)
    cons_tps = n_tokens(cons_ids) / statistics.median(cons_t)
    return {
        "constraint": kind, "free_tokens": n_tokens(free_ids), "constrained_tokens": n_tokens(cons_ids),
        "free_seconds": [round(t, 2) for t in free_t], "constrained_seconds": [round(t, 2) for t in cons_t],
        "free_tokens_per_s": round(free_tps, 1), "constrained_tokens_per_s": round(cons_tps, 1),
        "ratio": round(cons_tps / free_tps, 3),
        "cpu_ratio": round(n_tokens(cons_ids) / statistics.median(cpu_s[True])
                           / (n_tokens(free_ids) / statistics.median(cpu_s[False])), 3),
        "free_decode_step_ms": round(1000 * statistics.median(step_s[False]), 2),
        "constrained_decode_step_ms": round(1000 * statistics.median(step_s[True]), 2),
        "decode_step_ratio": round(statistics.median(step_s[False]) / statistics.median(step_s[True]), 3),
        "grammar_share_of_constrained_time": round(statistics.median(
            g / t for g, t in zip(grammar_s, cons_t, strict=True)), 4),
        "grammar_ms_per_step": round(1000 * statistics.median(grammar_s) / max(1, steps), 3),
        "valid_outputs": sum(valid(kind, t) for t in texts), "outputs": len(texts),
        "ended_by_grammar": sum(len(i) < args.max_new_tokens for i in cons_ids),
        "example": texts[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--constraints", nargs="+", choices=list(ASK), default=list(ASK))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from tunesmith.constrained_decoding import GrammarCompiler, model_vocab_size
    from tunesmith.evaluate.generate import render_prompts, stop_token_ids
    from tunesmith.models.config import ModelConfig
    from tunesmith.models.loading import load_model, load_tokenizer

    cfg = ModelConfig(name_or_path=args.model, device="cpu", dtype="float32")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg).eval()
    t0 = time.perf_counter()
    compiler = GrammarCompiler(tokenizer, vocab_size=model_vocab_size(model),
                               stop_token_ids=stop_token_ids(tokenizer, model))
    setup_s = time.perf_counter() - t0
    convs = _eval_generation().ticket_conversations(args.n)
    results = []
    for kind in args.constraints:
        t0 = time.perf_counter()
        compiled = compiler.compile(constraints()[kind])
        compile_s = time.perf_counter() - t0
        asked = [[{**m, "content": f"{m['content']}\n\n{ASK[kind]}".strip()} for m in c] for c in convs]
        tools = [TOOLS] * len(asked) if kind == "tool_calls" else None  # the functions in the prompt (both sides)
        res = measure(kind, compiled, model, tokenizer, render_prompts(tokenizer, asked, tools), args)
        res["compile_seconds"] = round(compile_s, 3)
        results.append(res)
        print(json.dumps(res, ensure_ascii=False), flush=True)
    summary = {"model": args.model, "prompts": args.n, "batch_size": args.batch_size,
               "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
               "grammar_compiler_setup_seconds": round(setup_s, 3), "results": results}
    print("\nconstraint    free tok/s  constrained tok/s  ratio  cpu ratio | decode step ms free / constrained  "
          "ratio | grammar share  valid  ended by grammar")
    for r in results:
        print(f"{r['constraint']:<12}  {r['free_tokens_per_s']:>10}  {r['constrained_tokens_per_s']:>17}  "
              f"{r['ratio']:>5.3f}  {r['cpu_ratio']:>9.3f} | {r['free_decode_step_ms']:>20.1f} / "
              f"{r['constrained_decode_step_ms']:<11.1f}"
              f"{r['decode_step_ratio']:>5.3f} | {100 * r['grammar_share_of_constrained_time']:>12.1f}%  "
              f"{r['valid_outputs']:>2}/{r['outputs']:<2}  {r['ended_by_grammar']:>2}/{r['outputs']}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
