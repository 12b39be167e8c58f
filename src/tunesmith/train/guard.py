"""The forgetting guard's replay rows (``train.forgetting_guard: replay | replay+kl``).

The general rows mixed into train (``data.mix``, ``"source": "general"``) get the BASE model's own
greedy answers to their first prompt instead of the corpus' answers, so training on them keeps the
model's own general behaviour rather than teaching it a corpus' style. The answers are generated once,
before training, with the adapter disabled (= the base), and cached in ``<run>/guard/base_answers.json``
under a key of (model, prompts, answer length): a second run with the same key reuses them, a change
of model or prompts generates them again.

The KL term (``kl``, ``replay+kl``) lives in the loss module, :mod:`tunesmith.train.loss`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tunesmith.data.records import Record
from tunesmith.utils.io import write_json

Conversation = list[dict]


def replay_prompt(record: Record) -> Conversation:
    """The first question of a general conversation (its system turn kept): what the base is asked."""
    msgs = record["messages"]
    first_user = next(i for i, m in enumerate(msgs) if m["role"] == "user")
    return [{"role": m["role"], "content": m["content"]} for m in msgs[: first_user + 1]]


def cache_key(model_id: str, prompts: list[Conversation], max_new_tokens: int) -> str:
    blob = json.dumps({"model": model_id, "prompts": prompts, "max_new_tokens": max_new_tokens}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def base_answers(cache_file: Path, model_id: str, prompts: list[Conversation], max_new_tokens: int,
                 generate: Callable[[list[Conversation]], list[str]]) -> tuple[list[str], bool]:
    """(the base's answer to each prompt, True when they came from the cache). ``generate`` is called only
    when the cache is missing or was made for another model, other prompts or another answer length."""
    key = cache_key(model_id, prompts, max_new_tokens)
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = None
    if isinstance(cached, dict) and cached.get("key") == key and len(cached.get("answers", [])) == len(prompts):
        return cached["answers"], True
    answers = generate(prompts)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache_file, {"key": key, "model": model_id, "max_new_tokens": max_new_tokens, "answers": answers})
    return answers, False


def replay_records(general: list[Record], answers: list[str]) -> list[Record]:
    """Each general record as (its first prompt, the base's answer). An empty answer is kept: stopping at once
    is the base's behaviour there too (its end-of-turn token is trained), and the row count stays the same."""
    return [{"id": r["id"], "source": "general", "messages": replay_prompt(r) + [{"role": "assistant", "content": a}]}
            for r, a in zip(general, answers, strict=True)]


def base_generator(model, tokenizer, *, max_new_tokens: int, batch_size: int) -> Callable[[list[Conversation]], list[str]]:
    """Greedy answers of the base: ``model`` with its adapter disabled (a full model before training is the base)."""
    from tunesmith.evaluate.generate import generate_greedy, render_prompts

    def generate(prompts: list[Conversation]) -> list[str]:
        ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
        with ctx:
            return generate_greedy(model, tokenizer, render_prompts(tokenizer, prompts), max_new_tokens=max_new_tokens,
                                   batch_size=batch_size)

    return generate
