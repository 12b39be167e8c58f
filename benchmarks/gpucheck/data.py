"""Synthetic chat records and a tokenizer trained on them: offline, the same on the CPU and the GPU."""

from __future__ import annotations

import math
import random


SPECIAL_TOKENS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|finetune_right_pad_id|>"]


# Llama-3 layout; prefix-stable, so completion-only labels are found in text as for any real chat model
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "gu", "ha", "ji", "ko", "la", "ma", "no",
             "pi", "qu", "re", "si", "to", "vu", "wa", "xe", "yo", "ze"]


SYSTEM_PROMPT = "You are a support assistant. Answer the customer's question briefly and accurately."


def make_records(n: int, *, seed: int = 0, scale: float = 1.0) -> list[dict]:
    """Chat records (system, user, assistant) over a made-up vocabulary; lengths vary (log-normal), so packing and
    padding matter, and answers are ~40% of the tokens, as in instruction data."""
    rng = random.Random(seed)
    vocab: set[str] = set()
    while len(vocab) < 2000:
        vocab.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    words = sorted(vocab)
    records = []
    for i in range(n):
        q = max(3, int(rng.lognormvariate(math.log(70 * scale), 0.5)))
        a = max(2, int(rng.lognormvariate(math.log(60 * scale), 0.8)))
        records.append({"id": f"ex-{i}", "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": " ".join(rng.choice(words) for _ in range(min(q, 400))) + "?"},
            {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(min(a, 500))) + "."},
        ]})
    return records


def build_tokenizer(records: list[dict], vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on the records, with special tokens and a chat template (ids stay below
    every model's vocabulary; what the models output beyond it decodes to nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((m["content"] for r in records for m in r["messages"]), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[1],
                                   pad_token=SPECIAL_TOKENS[4], chat_template=CHAT_TEMPLATE)
