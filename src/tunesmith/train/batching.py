"""Turn tokenised examples into micro-batches: packed rows or padded rows.

Packed rows hold several examples back to back. Each example's ``position_ids`` restart at 0;
transformers derives per-example (block-diagonal) attention from those restarts when no
attention mask is given (SDPA/eager on CPU, flash-attention varlen on GPU), so packed examples
never attend to each other. The loss shifts labels (the label at position t is predicted from
position t-1), so an example's first label would be predicted from the previous example's last
token: :func:`collate_packed` masks every example's first label explicitly. (With completion-only
loss that token is a prompt token and already masked; plain-text records and
``completion_only_loss: false`` label every token, the first one included.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tunesmith.train.tokenize import IGNORE_INDEX, TokenizedExample


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], -100 where no loss
    position_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None  # [B, L] for padded batches; None for packed rows
    general: torch.Tensor | None = None  # [B, L] bool: the token's example is general (mixed-in) data; None: none is

    @property
    def n_label_tokens(self) -> int:
        # labels are shifted in the loss: position t predicts token t+1
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def n_tokens(self) -> int:
        if self.attention_mask is None:
            return int(self.input_ids.numel())
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            None if self.attention_mask is None else self.attention_mask.to(device),
            None if self.general is None else self.general.to(device),
        )

    def select_rows(self, rows: torch.Tensor) -> Batch:
        """The rows ``rows`` (a [B] bool mask) as a batch of their own."""
        general = None if self.general is None else self.general[rows]
        return Batch(self.input_ids[rows], self.labels[rows], self.position_ids[rows],
                     None if self.attention_mask is None else self.attention_mask[rows],
                     general if general is not None and general.any() else None)

    def loss_inputs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of the loss module (:class:`tunesmith.train.loss.CausalLMLoss`)."""
        return {"input_ids": self.input_ids, "labels": self.labels, "position_ids": self.position_ids,
                "attention_mask": self.attention_mask, "general": self.general}


def pack_examples(examples: list[TokenizedExample], row_length: int) -> list[list[TokenizedExample]]:
    """First-fit-decreasing bin packing of examples into rows of at most ``row_length`` tokens."""
    rows: list[list[TokenizedExample]] = []
    space: list[int] = []
    for ex in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        n = len(ex.input_ids)
        for i, free in enumerate(space):
            if n <= free:
                rows[i].append(ex)
                space[i] -= n
                break
        else:
            rows.append([ex])
            space.append(row_length - n)
    return rows


def collate_packed(rows: list[list[TokenizedExample]], pad_id: int) -> Batch:
    """Rows of packed examples -> one batch. Rows are right-padded to the longest row; padding gets
    its own position run so it forms a separate (ignored) block."""
    length = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    general = torch.zeros((len(rows), length), dtype=torch.bool)
    for r, row in enumerate(rows):
        t = 0
        for ex in row:
            n = len(ex.input_ids)
            ids[r, t : t + n] = torch.tensor(ex.input_ids)
            general[r, t : t + n] = ex.general
            labels[r, t : t + n] = torch.tensor(ex.labels)
            labels[r, t] = IGNORE_INDEX  # never predict an example's first token from the previous example
            pos[r, t : t + n] = torch.arange(n)
            t += n
        if t < length:
            pos[r, t:] = torch.arange(length - t)
    return Batch(ids, labels, pos, None, general if general.any() else None)


def collate_padded(examples: list[TokenizedExample], pad_id: int) -> Batch:
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    general = torch.zeros((len(examples), length), dtype=torch.bool)
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        general[i, :n] = ex.general
        labels[i, :n] = torch.tensor(ex.labels)
        mask[i, :n] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, labels, pos, mask, general if general.any() else None)


def epoch_batches(
    examples: list[TokenizedExample],
    *,
    batch_size: int,
    packing: bool,
    row_length: int,
    pad_id: int,
    seed: int,
    epoch: int,
) -> list[Batch]:
    """The micro-batches of one epoch, in a seeded order (same seed + epoch -> same batches)."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(examples)
    rng.shuffle(order)
    if packing:
        # general (mixed-in) examples get rows of their own: the forgetting guard's KL term then runs the base
        # forward on those rows only (train/loss.py), not on every row that happens to hold one
        rows = pack_examples([e for e in order if not e.general], row_length)
        rows += pack_examples([e for e in order if e.general], row_length)
        rng.shuffle(rows)
        return [collate_packed(rows[i : i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]
    # group similar lengths to waste little on padding, then shuffle the groups
    chunks = [order[i : i + batch_size * 50] for i in range(0, len(order), batch_size * 50)]
    batches = []
    for chunk in chunks:
        chunk.sort(key=lambda e: len(e.input_ids))
        batches += [collate_padded(chunk[i : i + batch_size], pad_id) for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
