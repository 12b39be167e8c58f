"""The training loss: token-level cross-entropy, summed, normalised by the caller; plus the forgetting
guard's KL term on general rows.

Only positions that have a label go through the LM head: with completion-only loss most
positions are prompt tokens, and skipping their vocab projection saves a large share of the
compute and the memory of full [tokens x vocab] logits.

Normalisation is the caller's job (see :mod:`tunesmith.train.loop`): the sum over every
micro-batch of an optimizer step is divided by the number of label tokens in the whole step, so
gradient accumulation gives the same gradient as one large batch.

The forgetting guard (``train.forgetting_guard``, :mod:`tunesmith.train.guard`): every token carries a
``general`` flag (its example is mixed-in general data, not a task row). With ``kl_weight`` > 0 the
labelled tokens of general rows get ``kl_weight * KL(base || tuned)`` instead of cross-entropy, the base
being the same model with its adapter disabled; task rows only ever get cross-entropy. Packing gives general
examples rows of their own, and a batch holding both runs as two parts (:func:`loss_parts`): its task rows, and
its general rows, the only ones the extra no-grad base forward runs on.

Shared prefix (``train.shared_prefix``, :mod:`tunesmith.train.shared_prefix`): when the rows of a part open
with the same label-free prefix (the task rows of tool-calling data: the system prompt and tool definitions;
general rows do not open with it, hence the parts), the decoder encodes it once and runs only the suffixes; the labels, the
``general`` flags and so the sums below are the suffixes', the same terms as the full rows'. The KL term's
base forward takes the same way (the prefix encoded again, adapter off, without gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.train.batching import Batch
from tunesmith.train.shared_prefix import (
    PrefixSplit,
    prefix_cache_usable,
    split_shared_prefix,
    suffix_hidden_states,
    suffixes_packable,
)
from tunesmith.train.tokenize import IGNORE_INDEX


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _label_logits(model, batch: Batch, keep: torch.Tensor, split: PrefixSplit | None = None) -> torch.Tensor:
    """LM-head logits (fp32, softcapped like the model) at the positions ``keep`` of the shifted sequence (of the
    suffixes, given ``split``)."""
    base = _unwrap(model)
    if split is not None:
        hidden = suffix_hidden_states(base, split)
    else:
        hidden = base.get_decoder()(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def shared_prefix_split(model, batch: Batch) -> PrefixSplit | None:
    """``batch`` as a shared prefix + suffixes when it and ``model`` qualify, else None (the normal way)."""
    base = _unwrap(model)
    if not prefix_cache_usable(base):
        return None
    return split_shared_prefix(batch, pack_suffixes=suffixes_packable(base))


def loss_parts(batch: Batch) -> list[Batch]:
    """The parts of ``batch`` the loss runs one by one: the rows holding general (mixed-in) tokens apart from the
    task rows, when it has both, else the whole batch. Packing gives general examples rows of their own
    (:func:`tunesmith.train.batching.epoch_batches`), so the task rows can still share their prompt's prefix
    (general rows do not open with it) and the KL term's base forward runs on the general rows only."""
    if batch.general is None:
        return [batch]
    general_rows = batch.general.any(dim=1)
    if bool(general_rows.all()):
        return [batch]
    return [batch.select_rows(~general_rows), batch.select_rows(general_rows)]


def summed_token_loss(model, batch: Batch, kl_weight: float = 0.0, shared_prefix: bool = False,
                      kl_on: str = "answers") -> torch.Tensor:
    """Sum of next-token cross-entropy over label positions of ``batch``; with ``kl_weight`` > 0, general
    rows get ``kl_weight`` x KL(base || tuned) instead, on their answer tokens (``kl_on="answers"``) or on every
    token of theirs (``"all"``: prompts too); with ``shared_prefix``, a prefix common to the rows of a part
    (:func:`loss_parts`) is encoded once when the part qualifies (see the module docstring)."""
    return sum(_part_loss(model, part, kl_weight, shared_prefix, kl_on) for part in loss_parts(batch))


def shared_prefix_spared_tokens(model, batch: Batch) -> int:
    """Tokens the shared prefix spares ``batch``: each qualifying part's P prefix tokens x (conversations - 1)."""
    splits = [shared_prefix_split(model, part) for part in loss_parts(batch)]
    return sum(s.prefix_length * (s.conversations - 1) for s in splits if s is not None)


def _part_loss(model, batch: Batch, kl_weight: float, shared_prefix: bool, kl_on: str) -> torch.Tensor:
    split = shared_prefix_split(model, batch) if shared_prefix else None
    rows = split if split is not None else batch
    labelled = rows.labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    if kl_weight <= 0 or rows.general is None:
        return F.cross_entropy(_label_logits(model, batch, labelled, split), rows.labels[:, 1:][labelled], reduction="sum")
    general = rows.general[:, 1:]
    # the KL's positions: a general row's answer tokens, or each of its tokens that continues the same example (its
    # position follows the one before: a packed row's next example, or a packed suffix's, starts over)
    continues = rows.position_ids[:, 1:] == rows.position_ids[:, :-1] + 1
    kl_at = general & (labelled if kl_on == "answers" else continues)
    ce_at = labelled & ~general
    keep = ce_at | kl_at
    logits = _label_logits(model, batch, keep, split)
    loss = F.cross_entropy(logits[ce_at[keep]], rows.labels[:, 1:][ce_at], reduction="sum")
    if not kl_at.any():
        return loss
    with torch.no_grad(), base_model(model):
        base_logits = _label_logits(model, batch, kl_at, split)
    kl = F.kl_div(F.log_softmax(logits[kl_at[keep]], -1), F.log_softmax(base_logits, -1), log_target=True,
                  reduction="sum")
    return loss + kl_weight * kl


def base_model(model):
    """Context in which ``model`` computes as its frozen base: the adapter disabled (peft)."""
    if not hasattr(model, "disable_adapter"):
        raise TypeError("the KL guard needs an adapter model (peft) to recover the frozen base")
    return model.disable_adapter()


class CausalLMLoss(torch.nn.Module):
    """``summed_token_loss`` as a module: the one way the training loop computes the loss, so that
    DDP/FSDP/DeepSpeed wrap the forward they must hook (a single process uses it unwrapped).
    ``kl_weight``: the forgetting guard's KL term on general rows (0 = off). ``shared_prefix``: encode a prefix
    common to a batch's rows once when the batch qualifies (``train.shared_prefix``)."""

    def __init__(self, model, kl_weight: float = 0.0, shared_prefix: bool = False, kl_on: str = "answers"):
        super().__init__()
        self.model = model
        self.kl_weight = kl_weight
        self.shared_prefix = shared_prefix
        self.kl_on = kl_on

    def forward(self, input_ids, labels, position_ids, attention_mask=None, general=None) -> torch.Tensor:
        batch = Batch(input_ids, labels, position_ids, attention_mask, general)
        return summed_token_loss(self.model, batch, self.kl_weight if self.training else 0.0, self.shared_prefix,
                                 self.kl_on)
