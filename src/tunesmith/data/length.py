"""Token lengths with the run's real tokenizer and chat template, counted in batches.

A chat record's length is that of ``apply_chat_template(messages, tokenize=True)``; we render the
template for a whole batch (``tokenize=False``) and tokenize the strings in one call of the fast
tokenizer, which gives the same ids (the template already holds the special tokens). Text records
count ``tokenizer(text)`` plus one EOS token.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.records import Record, is_text_record


class TokenCounter:
    def __init__(self, tokenizer: Any, max_len: int, policy: str = "reject"):
        self.tok = tokenizer
        self.max_len = max_len
        self.policy = policy

    def _render(self, records: list[Record]) -> list[str]:
        chats = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in records]
        out = self.tok.apply_chat_template(chats, tokenize=False)
        return [out] if isinstance(out, str) else list(out)

    def count(self, records: list[Record]) -> list[int]:
        lengths = [0] * len(records)
        chat_idx = [i for i, r in enumerate(records) if not is_text_record(r)]
        text_idx = [i for i, r in enumerate(records) if is_text_record(r)]
        if chat_idx:
            texts = self._render([records[i] for i in chat_idx])
            ids = self.tok(texts, add_special_tokens=False)["input_ids"]
            for i, x in zip(chat_idx, ids, strict=True):
                lengths[i] = len(x)
        if text_idx:
            ids = self.tok([records[i]["text"] for i in text_idx], add_special_tokens=False)["input_ids"]
            for i, x in zip(text_idx, ids, strict=True):
                lengths[i] = len(x) + 1
        return lengths

    def truncate(self, record: Record, length: int) -> tuple[Record | None, int, int]:
        """Cut the start of the first user turn (text records: the end of the text) until it fits.

        Returns (record or None if it cannot fit, new length, tokens cut)."""
        excess = length - self.max_len
        if is_text_record(record):
            ids = self.tok(record["text"], add_special_tokens=False)["input_ids"]
            keep = self.max_len - 1
            rec = dict(record, text=self.tok.decode(ids[:keep]), truncated_tokens=len(ids) - keep)
            return rec, self.count([rec])[0], len(ids) - keep
        msgs = [dict(m) for m in record["messages"]]
        first_user = next((i for i, m in enumerate(msgs) if m["role"] == "user"), None)
        if first_user is None:
            return None, length, 0
        cut_total = 0
        for _ in range(4):
            ids = self.tok(msgs[first_user]["content"], add_special_tokens=False)["input_ids"]
            cut = excess + 2
            if cut >= len(ids):
                return None, length, cut_total
            msgs[first_user]["content"] = self.tok.decode(ids[cut:])
            cut_total += cut
            rec = dict(record, messages=msgs, truncated_tokens=cut_total)
            length = self.count([rec])[0]
            if length <= self.max_len:
                return rec, length, cut_total
            excess = length - self.max_len
        return None, length, cut_total
