"""Shared-prefix training (``train.shared_prefix``): a prefix that every row of a micro-batch starts with is
encoded once, not once per row.

In tool-calling data every row opens with the same long system prompt (the tool definitions), masked out of
the loss. When the rows of a batch share a token prefix of at least :data:`MIN_SHARED_PREFIX_TOKENS` tokens
that carries no loss, the decoder runs that prefix once (batch dimension 1, gradients on), its key/value
cache (transformers' ``DynamicCache``) is repeated to the suffix rows (``batch_repeat_interleave``: an autograd
op, so the gradients of every row flow back into the one prefix forward), and only the conversations'
suffixes run against it, their position ids continuing after the prefix. The suffixes are packed into rows
(:func:`_pack_suffixes`: each attends to the prefix and to itself through a 4-D mask; suffixes of different
lengths pay for no padding) when the model's attention takes such a mask (SDPA, eager:
:func:`suffixes_packable`), else one right-padded row each (a 2-D mask over prefix + suffix). The loss
(:mod:`tunesmith.train.loss`) is then taken over the suffixes' labels only; since no prefix position predicts a
labelled token (the prefix stops one token before the first label of any row), it is the same sum as the full
rows' loss, up to float rounding.

The batch is taken as the list of its trained conversations: a padded row is one (right-padded, position ids
0, 1, ...); a packed row holds one per run of position ids 0, 1, ... (the runs restart at 0: that is how
packed examples are kept from attending to each other, :mod:`tunesmith.train.batching`), each becoming a
row of its own. That is exact: a packed conversation attends only to itself, and its first token's label,
which the normal path would predict from the conversation before, must be masked (``collate_packed``
masks it; a label there leaves no label-free prefix, so the batch falls back). Conversations without a
label (the padding run of a packed row) add nothing to the loss and are left out. So batches qualify with
``train.packing`` on or off.

When a batch qualifies (:func:`split_shared_prefix`; anything else goes the normal way):

* at least two trained conversations, laid out as above (any other position ids: fall back);
* their common prefix (the same token ids in every conversation, no label on it nor on the token after it,
  every conversation keeping at least one token after it) is at least ``min_tokens`` long. One conversation
  without the prefix (e.g. a general row mixed in by ``data.mix``) makes the batch fall back.

When the model qualifies (:func:`prefix_cache_usable`): no gradient checkpointing (transformers drops the
cache inside checkpointed layers), and the model's cache is plain full attention (``DynamicLayer`` in every
layer; sliding-window or other cache layers fall back). Sharded strategies (FSDP, ZeRO-3) never turn it on
(``TrainConfig.uses_shared_prefix``): ranks whose batches qualify would run more decoder forwards, and so
more parameter gathers, than the others.

Dropout (LoRA's ``dropout``) draws one mask for the shared prefix instead of one per row.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from tunesmith.train.batching import Batch
from tunesmith.train.tokenize import IGNORE_INDEX

MIN_SHARED_PREFIX_TOKENS = 32


@dataclass(frozen=True)
class PrefixSplit:
    """A batch as a shared prefix and its conversations' suffixes (S = the longest suffix, or the widest row of
    packed suffixes)."""

    prefix_ids: torch.Tensor  # [1, P]
    input_ids: torch.Tensor  # [B, S] the suffixes, right-padded (B: the batch's trained conversations), or [R, S]
    # with the suffixes packed into R rows
    labels: torch.Tensor  # [B, S]
    position_ids: torch.Tensor  # [B, S]: each suffix's P, P+1, ...
    # padded suffixes: [B, P + S], prefix and suffix tokens 1, padding 0; packed suffixes: [R, 1, S, P + S] bool,
    # True where a query token (a suffix's) may attend a key (the prefix, and its own suffix up to itself)
    attention_mask: torch.Tensor
    general: torch.Tensor | None  # [B, S] or None
    conversations: int  # B: the trained conversations, one suffix each

    @property
    def prefix_length(self) -> int:
        return int(self.prefix_ids.shape[1])


def _first(flags: torch.Tensor) -> int:
    """Index of the first True in a 1-D bool tensor, or its length when there is none."""
    hits = flags.nonzero()
    return int(hits[0]) if len(hits) else int(flags.numel())


def _conversations(batch: Batch) -> list[tuple[int, int, int]] | None:
    """(row, start, end) of each conversation of ``batch`` that is trained on; None when the layout is not one
    this module understands (see the module docstring)."""
    pos, labels = batch.position_ids, batch.labels
    steps = torch.arange(pos.shape[1], device=pos.device)
    if batch.attention_mask is not None:  # padded rows: right-padded, positions 0, 1, ...
        n = batch.attention_mask.sum(-1)
        inside = steps < n[:, None]
        if not torch.equal(batch.attention_mask.bool(), inside) or not bool(((pos == steps) | ~inside).all()):
            return None
        spans = [(r, 0, int(n[r])) for r in range(pos.shape[0])]
    else:  # packed rows: a conversation is a run of positions 0, 1, ...; the next one starts at 0 again
        if not bool((pos[:, 0] == 0).all()) or not bool(((pos[:, 1:] == pos[:, :-1] + 1) | (pos[:, 1:] == 0)).all()):
            return None
        spans = []
        for r in range(pos.shape[0]):
            starts = (pos[r] == 0).nonzero().flatten().tolist() + [pos.shape[1]]
            spans += [(r, a, b) for a, b in zip(starts, starts[1:])]
    # a label on a conversation's first token counts (it keeps the conversation, and leaves it no prefix)
    return [(r, a, b) for r, a, b in spans if bool((labels[r, a:b] != IGNORE_INDEX).any())]


def split_shared_prefix(batch: Batch, min_tokens: int = MIN_SHARED_PREFIX_TOKENS,
                        pack_suffixes: bool = False) -> PrefixSplit | None:
    """The batch's trained conversations as a shared prefix + suffixes, or None when it does not qualify (see
    the module docstring). ``pack_suffixes``: the suffixes packed into rows (:func:`_pack_suffixes`) instead of
    one right-padded row each."""
    spans = _conversations(batch)
    if spans is None or len(spans) < 2:
        return None
    n = torch.tensor([b - a for _, a, b in spans], device=batch.input_ids.device)
    width = int(n.max())
    ids = torch.zeros((len(spans), width), dtype=batch.input_ids.dtype, device=n.device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    general = None if batch.general is None else torch.zeros_like(ids, dtype=torch.bool)
    for k, (r, a, b) in enumerate(spans):  # each conversation a row of its own, right-padded
        ids[k, : b - a], labels[k, : b - a] = batch.input_ids[r, a:b], batch.labels[r, a:b]
        if general is not None:
            general[k, : b - a] = batch.general[r, a:b]
    steps = torch.arange(width, device=n.device)
    differs = ((ids != ids[:1]) & (steps < n.min())).any(0)
    labelled = (labels != IGNORE_INDEX).any(0)
    # prefix positions 0..P-1 predict tokens 1..P: none of them may be a label; every row keeps a token. (A label
    # on a conversation's first token, which a packed row predicts from the conversation before, leaves no prefix.)
    prefix = min(_first(differs), _first(labelled) - 1, int(n.min()) - 1)
    if prefix < min_tokens:
        return None
    if pack_suffixes:
        return _pack_suffixes(ids, labels, general, n, prefix)
    suffix = slice(prefix, width)
    return PrefixSplit(
        prefix_ids=ids[:1, :prefix],
        input_ids=ids[:, suffix],
        labels=labels[:, suffix],
        position_ids=steps[suffix].expand(len(spans), -1),
        attention_mask=(steps < n[:, None]).long(),
        general=None if general is None else general[:, suffix],
        conversations=len(spans),
    )


def _rows_of_suffixes(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the suffixes (by index) in as few rows of ``capacity`` tokens as it finds."""
    rows: list[list[int]] = []
    room: list[int] = []
    for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        fit = next((i for i, free in enumerate(room) if free >= lengths[k]), None)
        if fit is None:
            rows.append([])
            room.append(capacity)
            fit = len(rows) - 1
        rows[fit].append(k)
        room[fit] -= lengths[k]
    return rows


def _pack_suffixes(ids: torch.Tensor, labels: torch.Tensor, general: torch.Tensor | None, n: torch.Tensor,
                   prefix: int) -> PrefixSplit:
    """The suffixes (conversation k's tokens ``prefix:n[k]``) packed one after another into rows of at most
    max(longest suffix, prefix // 2) tokens, so that a batch pays for its suffixes' tokens, not for each padded to
    the longest. Each suffix attends to the whole prefix and causally to itself, never to another suffix (a 4-D
    boolean mask [R, 1, S, P + S]); its positions continue after the prefix. The first token of every suffix
    carries no label (the prefix stops before the token that predicts the first label), so the position before
    it, which ends the previous suffix, predicts nothing. A row is at most half the prefix long (unless one suffix
    is longer), so the attention the mask throws away stays small beside the prefix's. (When most suffixes are
    longer than a quarter of the prefix, few share a row and the mask's waste can outweigh the padding saved:
    benchmarks/shared_prefix.py measured 0.94x against padded suffixes of 25-190 tokens, 1.27x for 26-136.)"""
    lengths = (n - prefix).tolist()
    rows = _rows_of_suffixes(lengths, max(max(lengths), prefix // 2))
    width = max(sum(lengths[k] for k in row) for row in rows)
    shape = (len(rows), width)
    out_ids = torch.zeros(shape, dtype=ids.dtype, device=ids.device)
    out_labels = torch.full_like(out_ids, IGNORE_INDEX)
    positions = torch.full_like(out_ids, prefix)
    segment = torch.full_like(out_ids, -1)
    out_general = None if general is None else torch.zeros(shape, dtype=torch.bool, device=ids.device)
    for r, row in enumerate(rows):
        at = 0
        for k in row:
            m, cut = lengths[k], slice(prefix, prefix + lengths[k])
            out_ids[r, at : at + m], out_labels[r, at : at + m] = ids[k, cut], labels[k, cut]
            positions[r, at : at + m] = torch.arange(prefix, prefix + m, device=ids.device)
            segment[r, at : at + m] = k
            if out_general is not None:
                out_general[r, at : at + m] = general[k, cut]
            at += m
    causal = torch.ones(width, width, dtype=torch.bool, device=ids.device).tril()
    own = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] >= 0) & causal
    sees_prefix = torch.ones((len(rows), width, prefix), dtype=torch.bool, device=ids.device)
    return PrefixSplit(
        prefix_ids=ids[:1, :prefix],
        input_ids=out_ids,
        labels=out_labels,
        position_ids=positions,
        attention_mask=torch.cat([sees_prefix, own], dim=-1)[:, None],
        general=out_general,
        conversations=len(lengths),
    )


def _cache_keyword(decoder) -> str:
    # transformers >= 5.2x renamed past_key_values -> cache (the old name still works but warns)
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _plain_cache(config):
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    n_layers = config.get_text_config(decoder=True).num_hidden_layers
    plain = len(cache.layers) == n_layers and all(type(layer) is DynamicLayer for layer in cache.layers)
    return cache if plain else None


def prefix_cache_usable(base) -> bool:
    """Can ``base`` (the transformers model, unwrapped from peft) run a batch as prefix + suffixes?"""
    # the layers' own switch, which GradientCheckpointingLayer reads before it drops the cache
    if any(getattr(module, "gradient_checkpointing", False) is True for module in base.modules()):
        return False
    return _plain_cache(base.config) is not None


def suffixes_packable(base) -> bool:
    """Can ``base`` take packed suffixes? Their 4-D mask goes to the attention as it is: SDPA takes it boolean,
    eager as an additive float mask; other kernels (flash, flex) get padded suffixes."""
    return getattr(base.config, "_attn_implementation", None) in ("sdpa", "eager")


def suffix_hidden_states(base, split: PrefixSplit) -> torch.Tensor:
    """The decoder's last hidden states [B or R, S] of the suffix rows: the prefix encoded once, its cache repeated
    to the rows (autograd intact), the suffixes run against it."""
    decoder = base.get_decoder()
    keyword = _cache_keyword(decoder)
    cache = _plain_cache(base.config)
    positions = torch.arange(split.prefix_length, device=split.prefix_ids.device)[None]
    decoder(input_ids=split.prefix_ids, position_ids=positions, use_cache=True, **{keyword: cache})
    cache.batch_repeat_interleave(split.input_ids.shape[0])
    mask = split.attention_mask
    if mask.dim() == 4 and base.config._attn_implementation == "eager":  # eager adds its mask to the scores
        blocked = torch.finfo(base.dtype).min
        mask = torch.zeros(mask.shape, dtype=base.dtype, device=mask.device).masked_fill(~mask, blocked)
    out = decoder(input_ids=split.input_ids, attention_mask=mask, position_ids=split.position_ids,
                  use_cache=True, **{keyword: cache})
    return out.last_hidden_state
