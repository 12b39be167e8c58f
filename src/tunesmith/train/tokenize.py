"""Render records with the tokenizer's own chat template and build the loss mask.

This is where "loss on completions only" is decided. For every assistant turn that is trained
(``weight`` absent or non-zero), the tokens of its content *and the end-of-turn token right after
it* get labels; everything else (system, user, template markup, untrained turns) gets -100.

Spans are found in text, not token ids: the template is rendered for the conversation up to each
assistant turn (with the generation prompt) and the answer starts where that prefix ends; tokens
are then mapped to characters with the fast tokenizer's offsets. The pad token id never decides
what is masked, so tokenizers whose pad token equals EOS still learn to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.records import Record
from tunesmith.errors import DataError

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    id: str = ""

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class TokenizeReport:
    kept: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"id", "reason", "tokens"}
    truncated: int = 0


def _render(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)


def trained_char_spans(tokenizer, messages: list[dict[str, Any]], completion_only: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of every trained assistant answer.

    A span starts at the answer's first character and ends at the end of its content; the token
    that follows (the template's end-of-turn marker) is added when labels are built.
    """
    text = _render(tokenizer, messages)
    if not completion_only:
        return text, [(0, len(text))]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        if not text.startswith(prefix):
            raise DataError(
                "the chat template does not render conversations as a prefix of their continuation, "
                "so the answer's position cannot be found",
                hint="use a model whose chat template is prefix-stable, or set train.completion_only_loss: false",
            )
        start = len(prefix)
        content = m["content"]
        pos = text.find(content, start) if content else start
        if pos < 0:
            raise DataError("the chat template changed an assistant message's text (cannot locate the answer)")
        spans.append((pos, pos + len(content)))
    return text, spans


def tokenize_record(tokenizer, record: Record, *, completion_only: bool = True) -> TokenizedExample:
    if "text" in record and "messages" not in record:
        ids = tokenizer(record["text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        return TokenizedExample(ids, list(ids), record.get("id", ""))

    text, spans = trained_char_spans(tokenizer, record["messages"], completion_only)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        last = None
        for t, (a, b) in enumerate(offsets):
            if b > start and a < end and b > a:
                labels[t] = ids[t]
                last = t
            elif a >= end:
                break
        # The end-of-turn token right after the answer is what teaches the model to stop.
        nxt = (last + 1) if last is not None else next((t for t, (a, _) in enumerate(offsets) if a >= end), None)
        if completion_only and nxt is not None and nxt < len(ids):
            labels[nxt] = ids[nxt]
    return TokenizedExample(ids, labels, record.get("id", ""))


def tokenize_records(
    tokenizer, records: list[Record], *, max_seq_length: int, completion_only: bool = True, truncation: str = "reject"
) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Tokenise records; over-long examples are rejected or truncated per config, and always reported."""
    out: list[TokenizedExample] = []
    report = TokenizeReport()
    for r in records:
        ex = tokenize_record(tokenizer, r, completion_only=completion_only)
        n = len(ex.input_ids)
        if n > max_seq_length:
            if truncation == "reject":
                report.rejected.append({"id": ex.id, "tokens": n, "reason": f"{n} tokens > max_seq_length {max_seq_length}"})
                continue
            ex = TokenizedExample(ex.input_ids[:max_seq_length], ex.labels[:max_seq_length], ex.id)
            report.truncated += 1
        if ex.n_label_tokens == 0:
            report.rejected.append({"id": ex.id, "tokens": n, "reason": "no trained tokens left (answer truncated away or weight 0 everywhere)"})
            continue
        out.append(ex)
    report.kept = len(out)
    return out, report
