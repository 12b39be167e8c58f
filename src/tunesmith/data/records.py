"""The canonical example record every input format becomes.

A record is a plain JSON-able dict::

    {"id": "train.jsonl:12",                      # where it came from (file:line)
     "messages": [{"role": "system"|"user"|"assistant", "content": str, "weight": 0|1 (optional)}],
     "label": str | None}                         # optional, for stratified splits and label stats

``weight`` follows OpenAI's fine-tuning format: an assistant turn with weight 0 is context, not a
training target. Without it, every assistant turn is trained on.

Raw-text rows for domain adaptation (input format ``text``) become ``{"id": ..., "text": str}``
instead: no messages, trained on every token.

Records may carry extra keys the trainer ignores: ``source`` (``"general"`` for mixed-in general
instruction data) and ``truncated_tokens`` (how many prompt tokens ``train.truncation: truncate``
cut from the start of the first user turn).
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def prompt_messages(record: Record) -> list[dict[str, str]]:
    """Every message before the last assistant turn: what a model is asked at evaluation time."""
    msgs = record["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:last]]


def reference_answer(record: Record) -> str:
    """The last assistant turn: the answer a model is scored against."""
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")


def is_text_record(record: Record) -> bool:
    return "text" in record and "messages" not in record


def example_text(record: Record) -> str:
    """The whole example as one string (system turns left out: they are usually shared by all rows)."""
    if is_text_record(record):
        return record["text"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"] if m["role"] != "system")


def prompt_text(record: Record) -> str:
    """The prompt side: every non-system turn before the last assistant turn ('' for text records)."""
    if is_text_record(record):
        return ""
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt_messages(record) if m["role"] != "system")
