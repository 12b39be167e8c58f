"""Token lengths with the run's real tokenizer and chat template, counted in batches.

A record's length is the number of token ids training feeds for it: both come from
``tunesmith.chat_template`` (chat records: the template rendered for a whole batch, tokenized in one
call without adding special tokens; text records: the tokenizer's own special tokens plus EOS).
"""

from __future__ import annotations

from typing import Any

from tunesmith.chat_template import count_record_tokens
from tunesmith.data.records import Record, is_text_record


class TokenCounter:
    def __init__(self, tokenizer: Any, max_len: int, policy: str = "reject"):
        self.tok = tokenizer
        self.max_len = max_len
        self.policy = policy

    def count(self, records: list[Record]) -> list[int]:
        return count_record_tokens(self.tok, records)

    def truncate(self, record: Record, length: int) -> tuple[Record | None, int, int]:
        """Cut the start of the first user turn (text records: the end of the text) until it fits.

        Returns (record or None if it cannot fit, new length, tokens cut)."""
        excess = length - self.max_len
        if is_text_record(record):
            ids = self.tok(record["text"], add_special_tokens=False)["input_ids"]
            keep = self.max_len - (length - len(ids))  # room left by the special tokens and EOS training adds
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
