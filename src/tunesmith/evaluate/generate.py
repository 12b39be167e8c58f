"""Batched greedy generation: length-sorted batches, left padding, KV cache, per-sequence stop on EOS.

Outputs come back in the order of the prompts. Greedy decoding makes the result a function of the
model and the prompt alone, so base, tuned and exported models are compared on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """Chat-template token ids of each conversation, ending with the assistant generation prompt."""
    out = []
    for msgs in conversations:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
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


@torch.no_grad()
def generate_greedy(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy completions (decoded, special tokens stripped) for token-id prompts."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_token_ids(tokenizer, model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        length = max(len(prompts[i]) for i in idx)
        input_ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), length), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompts[i]
            input_ids[row, length - len(p) :] = torch.tensor(p)
            attention[row, length - len(p) :] = 1
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=pad_id,
        )
        for row, i in enumerate(idx):
            new = out[row, length:].tolist()
            cut = next((k for k, t in enumerate(new) if t in eos), len(new))
            results[i] = tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
        if on_batch:
            on_batch(len(idx))
    model.train(was_training)
    return results
