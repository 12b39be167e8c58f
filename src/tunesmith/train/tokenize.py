"""Tokenise records for training and build the loss mask.

Records are rendered by ``tunesmith.chat_template`` (the tokenizer's own chat template for chat
records; text records as they are, with the tokenizer's special tokens and EOS), the same rendering
length counting, evaluation and serving use.

This is where "loss on completions only" is decided. For every assistant turn that is trained
(``weight`` absent or non-zero), the tokens of its content *and the end-of-turn token right after
it* get labels; everything else (system, user, template markup, untrained turns, tool definitions and
tool results) gets -100. A turn that calls tools is trained on its calls too: in the fallback format
(:mod:`tunesmith.tool_calls`) its text is the ``<tool_call>`` blocks; with a template that writes calls
itself, it is everything the template writes for the turn, up to and including its end-of-turn token.

Spans are found in text, not token ids: the template is rendered for the conversation up to each
assistant turn (with the generation prompt) and the answer starts where that prefix ends; tokens
are then mapped to characters with the fast tokenizer's offsets. The pad token id never decides
what is masked, so tokenizers whose pad token equals EOS still learn to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.chat_template import encode_rendered, render_conversation, render_record, rendered_answer
from tunesmith.data.records import Record
from tunesmith.errors import DataError

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    id: str = ""
    general: bool = False  # mixed-in general data (record "source": "general"), not a task row: the guard's rows

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class TokenizeReport:
    kept: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"id", "reason", "tokens"}
    truncated: int = 0


@dataclass(frozen=True)
class TrainedSpan:
    """Characters of the rendered conversation that carry loss."""

    start: int
    end: int
    add_end_of_turn: bool  # True: the token right after the span (the end-of-turn marker) is trained too


_PREFIX_HINT = "use a model whose chat template is prefix-stable, or set train.completion_only_loss: false"


def trained_char_spans(tokenizer, messages: list[dict[str, Any]], text: str, completion_only: bool = True,
                       tools: list[dict[str, Any]] | None = None) -> list[TrainedSpan]:
    """The character spans in ``text`` (the rendered conversation) of every trained assistant answer.

    A span starts at the answer's first character and ends at the end of its content; the token
    that follows (the template's end-of-turn marker) is added when labels are built. When the
    template writes a turn's tool calls itself, the span is the whole turn as rendered, end-of-turn
    marker included (trailing whitespace left out).
    """
    if not completion_only:
        return [TrainedSpan(0, len(text), False)]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        prefix = render_conversation(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
        if not text.startswith(prefix):
            raise DataError("the chat template does not render conversations as a prefix of their continuation, "
                            "so the answer's position cannot be found", hint=_PREFIX_HINT)
        start = len(prefix)
        answer = rendered_answer(tokenizer, m)
        if answer is None:  # the template writes the calls: the turn is what rendering it adds
            through = render_conversation(tokenizer, messages[: i + 1], tools=tools)
            if not text.startswith(through) or len(through) <= start:
                raise DataError("the chat template does not render a tool-calling turn as a prefix of the conversation, "
                                "so the turn's position cannot be found", hint=_PREFIX_HINT)
            spans.append(TrainedSpan(start, len(through.rstrip()), False))
            continue
        pos = text.find(answer, start) if answer else start
        if pos < 0:
            raise DataError("the chat template changed an assistant message's text (cannot locate the answer)")
        spans.append(TrainedSpan(pos, pos + len(answer), True))
    return spans


def is_general(record: Record) -> bool:
    """Mixed-in general data (``data.mix``), not a task example."""
    return record.get("source") == "general"


def tokenize_record(tokenizer, record: Record, *, completion_only: bool = True) -> TokenizedExample:
    rendered = render_record(tokenizer, record)
    enc = encode_rendered(tokenizer, [rendered], return_offsets=rendered.is_chat)[0]
    ids: list[int] = enc.input_ids
    if not rendered.is_chat:  # text records train on every token
        return TokenizedExample(ids, list(ids), record.get("id", ""), is_general(record))

    spans = trained_char_spans(tokenizer, record["messages"], rendered.text, completion_only, record.get("tools"))
    offsets: list[tuple[int, int]] = enc.offsets
    labels = [IGNORE_INDEX] * len(ids)
    for span in spans:
        start, end = span.start, span.end
        last = None
        for t, (a, b) in enumerate(offsets):
            if b > start and a < end and b > a:
                labels[t] = ids[t]
                last = t
            elif a >= end:
                break
        if not span.add_end_of_turn:
            continue
        # The end-of-turn token right after the answer is what teaches the model to stop.
        nxt = (last + 1) if last is not None else next((t for t, (a, _) in enumerate(offsets) if a >= end), None)
        if nxt is not None and nxt < len(ids):
            labels[nxt] = ids[nxt]
    return TokenizedExample(ids, labels, record.get("id", ""), is_general(record))


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
            ex = TokenizedExample(ex.input_ids[:max_seq_length], ex.labels[:max_seq_length], ex.id, ex.general)
            report.truncated += 1
        if ex.n_label_tokens == 0:
            report.rejected.append({"id": ex.id, "tokens": n, "reason": "no trained tokens left (answer truncated away or weight 0 everywhere)"})
            continue
        out.append(ex)
    report.kept = len(out)
    return out, report
