"""Batched greedy generation (shared prefix, left padding, KV cache) equals one-prompt-at-a-time generate."""

from __future__ import annotations

import torch

from tunesmith.evaluate.generate import common_prefix_len, generate_greedy, render_prompts, stop_token_ids


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5], [6]]) == 0


def test_batched_equals_one_at_a_time(tiny_model, tokenizer):
    system = {"role": "system", "content": "You sort support tickets into categories. Answer with one word only."}
    texts = ["printer broken", "my invoice is wrong and I was charged twice", "hi", "login fails after reset",
             "parcel never arrived, tracking says delivered", "?"]
    prompts = render_prompts(tokenizer, [[system, {"role": "user", "content": t}] for t in texts])
    assert common_prefix_len(prompts) >= 16  # the shared-prefix path is taken
    model = tiny_model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights: varied outputs that depend on every context token
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.3)
    eos = stop_token_ids(tokenizer, model)
    shared = generate_greedy(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    plain = generate_greedy(model, tokenizer, prompts, max_new_tokens=12, batch_size=4, share_prefix=False)
    single = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            new = out[0, len(p):].tolist()
            cut = next((k for k, t in enumerate(new) if t in eos), len(new))
            single.append(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())
    assert shared == single
    assert plain == single
    assert len(set(single)) >= 4 and all(single)  # varied, non-empty outputs
