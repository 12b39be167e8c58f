"""Batched greedy generation: length-sorted batches, left padding, KV cache, per-sequence stop on EOS.

Prompts of one batch usually share a long prefix (chat template, system prompt, task instruction).
With ``share_prefix`` that prefix is run through the model once, its KV cache is repeated for every
row, and each row continues as ``[prefix | padding | own suffix]``: padding is masked and position
ids come from the attention mask, so every row sees exactly the positions and context it would see
alone.

Outputs come back in the order of the prompts. Greedy decoding makes the result a function of the
model and the prompt alone, so base, tuned and exported models are compared on equal terms.

Rows may be held to a grammar (a JSON Schema, JSON, a regex, a choice; :mod:`tunesmith.constrained_decoding`):
their logits are masked at every step to what the row's grammar allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessorList
from transformers.generation import utils as _gen_utils

from tunesmith.chat_template import render_prompt_ids_batch
from tunesmith.constrained_decoding import CompiledConstraint, GrammarLogitsProcessor

# later transformers 5.x renamed `past_key_values` to `cache` (the old name still works but warns)
CACHE_KWARG = "cache" if "cache" in getattr(_gen_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def render_prompts(tokenizer, conversations: list[list[dict]], tools: Sequence[list[dict] | None] | None = None
                   ) -> list[list[int]]:
    """Chat-template token ids of each conversation, ending with the assistant generation prompt; ``tools``: each
    conversation's declared functions (None: none), rendered by the chat template (one call per distinct set)."""
    if not tools or not any(tools):
        return render_prompt_ids_batch(tokenizer, conversations)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tools):
        groups.setdefault(json.dumps(t, sort_keys=True) if t else "", []).append(i)
    out: list[list[int]] = [[] for _ in conversations]
    for idx in groups.values():
        ids = render_prompt_ids_batch(tokenizer, [conversations[i] for i in idx], tools=tools[idx[0]] or None)
        for i, row in zip(idx, ids, strict=True):
            out[i] = row
    return out


def stop_token_ids(tokenizer, model) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, list):
        ids.update(int(x) for x in gen_eos)
    return sorted(ids)


def common_prefix_len(seqs: list[list[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for k in range(n):
        if any(s[k] != first[k] for s in seqs):
            return k
    return n


@torch.no_grad()
def _prefix_cache(model, prefix: list[int], rows: int, device):
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    cache = out[CACHE_KWARG]
    cache.batch_repeat_interleave(rows)
    return cache


def generate_greedy(model, tokenizer, prompts: list[list[int]], **options) -> list[str]:
    """Greedy completions (decoded, special tokens stripped) for token-id prompts; ``options`` are
    :func:`generate_token_ids`'s (``max_new_tokens``, ``batch_size``, ``constraints``, ...)."""
    ids = generate_token_ids(model, tokenizer, prompts, **options)
    return [decode_answer(tokenizer, new) for new in ids]


def decode_answer(tokenizer, ids: list[int]) -> str:
    """The answer text of generated token ids (special tokens stripped), as every local model is scored."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def generate_token_ids(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    on_rows: Callable[[list[int]], None] | None = None,
    share_prefix: bool = True,
    min_shared_prefix: int = 16,
    constraints: Sequence[CompiledConstraint | None] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[list[int]]:
    """The generated token ids of each prompt, up to (not including) its end token, in prompt order.

    Greedy unless ``temperature`` > 0: then sampled from the model's distribution at that temperature (no
    top-k / top-p), from a generator seeded with ``seed`` (the same prompts and seed, the same answers; the
    global random state is left as it was).

    With ``constraints`` (one per prompt; None = free), each constrained row's logits are masked at every
    step to what its grammar allows, and the row ends when the grammar is complete and the end token is
    chosen (or at ``max_new_tokens``, possibly incomplete). Their stop tokens must be this generator's.
    ``on_rows`` is called with the prompt indices of each batch as it finishes (latency per prompt).
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_token_ids(tokenizer, model)
    if constraints is not None:
        _check_constraints(constraints, len(prompts), eos)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    sampling = temperature > 0
    # sampling draws from a generator of its own seed: the same answers each time, the caller's state untouched
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=sampling):
        if sampling:
            torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [prompts[i] for i in idx]
            # shared prefix (at least one own token per row stays outside it)
            shared = (min(common_prefix_len(batch), min(len(p) for p in batch) - 1) if share_prefix and len(idx) > 1
                      else 0)
            cache = None
            if shared >= min_shared_prefix:
                cache = _prefix_cache(model, batch[0][:shared], len(idx), device)
            else:
                shared = 0
            width = max(len(p) - shared for p in batch)
            length = shared + width
            input_ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), length), dtype=torch.long)
            for row, p in enumerate(batch):
                if shared:
                    input_ids[row, :shared] = torch.tensor(p[:shared])
                    attention[row, :shared] = 1
                suffix = p[shared:]
                input_ids[row, length - len(suffix) :] = torch.tensor(suffix)
                attention[row, length - len(suffix) :] = 1
            extra = {CACHE_KWARG: cache} if cache is not None else {}
            rows = [constraints[i] for i in idx] if constraints is not None else []
            if any(c is not None for c in rows):
                extra["logits_processor"] = LogitsProcessorList(
                    [GrammarLogitsProcessor([c.start() if c is not None else None for c in rows])])
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=1.0 if sampling else None,
                top_k=0 if sampling else None,
                eos_token_id=eos,
                pad_token_id=pad_id,
                **extra,
            )
            for row, i in enumerate(idx):
                new = out[row, length:].tolist()
                results[i] = new[: next((k for k, t in enumerate(new) if t in eos), len(new))]
            if on_rows:
                on_rows(list(idx))
            if on_batch:
                on_batch(len(idx))
    model.train(was_training)
    return results


def _check_constraints(constraints: Sequence[CompiledConstraint | None], n: int, eos: list[int]) -> None:
    if len(constraints) != n:
        raise ValueError(f"{len(constraints)} constraints for {n} prompts")
    for c in constraints:
        if c is not None and not set(c.stop_token_ids) <= set(eos):
            raise ValueError(f"the constraint's stop tokens {list(c.stop_token_ids)} are not all end tokens of the "
                             f"generator {eos}: compile it with stop_token_ids=stop_token_ids(tokenizer, model)")
