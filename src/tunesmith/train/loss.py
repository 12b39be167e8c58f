"""The training loss: token-level cross-entropy, summed, normalised by the caller.

Only positions that have a label go through the LM head: with completion-only loss most
positions are prompt tokens, and skipping their vocab projection saves a large share of the
compute and the memory of full [tokens x vocab] logits.

Normalisation is the caller's job (see :mod:`tunesmith.train.loop`): the sum over every
micro-batch of an optimizer step is divided by the number of label tokens in the whole step, so
gradient accumulation gives the same gradient as one large batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.train.batching import Batch
from tunesmith.train.tokenize import IGNORE_INDEX


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def summed_token_loss(model, batch: Batch) -> torch.Tensor:
    """Sum of next-token cross-entropy over label positions of ``batch``."""
    base = _unwrap(model)
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    out = decoder(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state[:, :-1]
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[keep]).float()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets[keep], reduction="sum")


class CausalLMLoss(torch.nn.Module):
    """``summed_token_loss`` as a module: the one way the training loop computes the loss, so that
    DDP/FSDP/DeepSpeed wrap the forward they must hook (a single process uses it unwrapped)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, position_ids, attention_mask=None) -> torch.Tensor:
        return summed_token_loss(self.model, Batch(input_ids, labels, position_ids, attention_mask))
