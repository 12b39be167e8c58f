"""The canonical example record every input format becomes.

A record is a plain JSON-able dict::

    {"id": "train.jsonl:12",                      # where it came from (file:line)
     "messages": [{"role": "system"|"user"|"assistant", "content": str, "weight": 0|1 (optional)}],
     "label": str | None}                         # optional, for stratified splits and label stats

``weight`` follows OpenAI's fine-tuning format: an assistant turn with weight 0 is context, not a
training target. Without it, every assistant turn is trained on.
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
