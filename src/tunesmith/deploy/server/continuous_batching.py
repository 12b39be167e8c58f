"""Dynamic (continuous) batching: concurrent requests share forward passes.

One worker thread owns the model. Between two decode steps it admits the requests that arrived
(up to ``max_batch_size`` rows in flight), prefills their left-padded prompts in one forward, and
splices their KV cache into the running batch (both sides left-padded to a common length; padding
is masked). Every decode step then advances all rows at once; a finished row is dropped from the
batch (and from the cache) at once, so a long request never blocks short ones behind it.

Adapters: rows for different LoRA adapters (and the base, ``__base__``) share one *lane* — PEFT's
``adapter_names=`` routes each row through its own weights. PEFT refuses ``adapter_names`` for DoRA,
so each DoRA adapter gets a lane of its own, run with that adapter active; lanes step in turn.
Each row keeps its own sampling settings, random generator (``seed``), stop strings and budget.

Scoring (``prompt_top_logprobs`` set: echo with logprobs): such rows are prefilled in forwards of their own
that keep the logits of every prompt position (at most ``SCORING_TOKENS_PER_FORWARD`` padded tokens each), which
give the prompt's token log-probabilities; then, like any row, they join the running batch to generate, or
finish at once when ``max_new_tokens`` is 0. A row with ``top_logprobs`` set records each sampled token's
log-probability (the end-of-sequence token included) as it decodes.

Constrained rows (``grammar`` set: a :class:`~tunesmith.constrained_decoding.RowGrammar`, for tool calls and
``response_format``): before each sampling step the tokens a row's grammar does not allow next are masked out of
that row's logits (rows without a grammar are left as they are), and the grammar advances by the sampled token.
A grammar allows the end-of-sequence token only where the output is complete, so a constrained row ends
exactly then (or at its budget, ``length``). Logprobs are those of the model's own distribution (before masking).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tunesmith.constrained_decoding import RowGrammar, mask_logits
from tunesmith.deploy.server.logprobs import TokenLogprob, prompt_logprobs, token_logprobs

log = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch (same as registry.BASE)
MIN_TEMPERATURE = 1e-4  # below this, sampling is greedy (dividing by ~0 would overflow to inf/nan)
# Scoring prefills keep every position's logits ([rows, width, vocab]): rows are grouped so that rows x width stays
# under this (one longer prompt still runs alone). 4096 x a 49k vocabulary is 0.8 GB of fp32 logits.
SCORING_TOKENS_PER_FORWARD = 4096


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class GenRequest:
    prompt_ids: list[int]
    adapter: str
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int | None = None  # record each sampled token's logprob with this many alternatives; None: no
    prompt_top_logprobs: int | None = None  # score the prompt's tokens with this many alternatives; None: no
    grammar: RowGrammar | None = None  # the output's grammar (masks the logits, advances per token); None: free
    on_delta: Callable[[str], None] | None = None  # called on the worker thread with new text
    on_done: Callable[[GenRequest], None] | None = None  # called on the worker thread once
    output_ids: list[int] = field(default_factory=list)  # the end-of-sequence token is not among them
    output_logprobs: list[TokenLogprob] = field(default_factory=list)  # one per sampled token, end token included
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # of prompt_ids[1:]
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    cancelled: bool = False
    emitted: int = 0
    max_batch: int = 0  # most rows in one forward pass this request took part in


@dataclass(eq=False)
class Lane:
    """Rows decoded together: their KV cache, attention mask, positions and next-token logits."""

    active: str | None  # adapter to activate (a DoRA lane), or None: mixed rows via adapter_names
    rows: list[GenRequest]
    gens: list[torch.Generator]
    cache: object
    attn: torch.Tensor  # [B, T] 1 = real token
    pos: torch.Tensor  # [B, 1] position id of the last token fed
    logits: torch.Tensor  # [B, V] logits for each row's next token


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


class BatchEngine:
    def __init__(self, registry, tokenizer, *, max_batch_size: int = 16, batch_wait_ms: float = 5.0,
                 max_queue: int = 256, observe_batch: Callable[[int], None] | None = None):
        self.registry = registry
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait_ms / 1000.0
        self.queue: queue.Queue[GenRequest] = queue.Queue(maxsize=max_queue)
        self.observe_batch = observe_batch
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(registry.model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = {e for e in eos if e is not None}
        base = registry.model.get_base_model() if hasattr(registry.model, "get_base_model") else registry.model
        # transformers >= 5.2x renamed past_key_values -> cache
        self._cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        self.lanes: dict[str | None, Lane] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tunesmith-batcher", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(self, req: GenRequest) -> None:
        try:
            self.queue.put_nowait(req)
        except queue.Full:
            raise QueueFull from None

    @property
    def in_flight(self) -> int:
        return sum(len(lane.rows) for lane in self.lanes.values())

    # -- worker ---------------------------------------------------------------------------------

    def _admit(self) -> list[GenRequest]:
        """Requests to start now: blocks briefly only when nothing is running (then waits to fill a batch)."""
        room = self.max_batch_size - self.in_flight
        out: list[GenRequest] = []
        if room <= 0:
            return out
        if not self.lanes:
            try:
                out.append(self.queue.get(timeout=0.05))
            except queue.Empty:
                return out
            deadline = time.monotonic() + self.batch_wait
            while len(out) < room:
                remaining = deadline - time.monotonic()
                try:
                    out.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
                except queue.Empty:
                    break
            return out
        while len(out) < room:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return out

    def _fail(self, rows: list[GenRequest], e: Exception) -> None:
        log.exception("generation of %d rows failed", len(rows))
        for r in rows:
            if r.finish_reason is None:
                r.error = f"generation failed: {type(e).__name__}"
                self._finish(r, "error")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()

    def tick(self) -> None:
        """Admit waiting requests (prefill + splice), then advance every lane by one token."""
        new = []
        for r in self._admit():
            if r.cancelled:
                self._finish(r, "cancelled")
            elif r.max_new_tokens == 0 and r.prompt_top_logprobs is None:
                self._finish(r, "length")  # an echo of the prompt: nothing to compute
            else:
                new.append(r)
        if new:
            try:
                with self.registry.lock:
                    lanes = self.registry.lanes([r.adapter for r in new]) if self.registry.is_peft else {
                        None: list(range(len(new)))}
            except Exception as e:  # noqa: BLE001  # pragma: no cover - registry bug
                self._fail(new, e)
                lanes = {}
            for key, idx in lanes.items():
                for rows, score in prefill_groups([new[i] for i in idx]):
                    try:
                        self._start(key, rows, score=score)
                    except Exception as e:  # noqa: BLE001 - a bug must fail these requests, never kill the worker
                        self._fail(rows, e)
        for key, lane in list(self.lanes.items()):
            try:
                self._step(lane)
            except Exception as e:  # noqa: BLE001 - as above
                self._fail(lane.rows, e)
                lane.rows = []
            if not lane.rows:
                del self.lanes[key]

    def _start(self, active: str | None, rows: list[GenRequest], *, score: bool) -> None:
        """Prefill ``rows``: those with tokens to generate join their lane, the others (scoring only) finish."""
        generates = any(r.max_new_tokens > 0 for r in rows)  # prefill_groups never mixes the two
        lane = self._prefill(active, rows, score=score, cache=generates)
        if generates:
            self._add(lane)
        else:
            for r in rows:
                self._finish(r, "length")

    # -- text and sampling ----------------------------------------------------------------------

    def _finish(self, r: GenRequest, reason: str) -> None:
        if r.finish_reason is not None:
            return
        r.finish_reason = reason
        if r.on_delta and reason in ("stop", "length") and len(r.text) > r.emitted:
            r.on_delta(r.text[r.emitted :])
            r.emitted = len(r.text)
        if r.on_done:
            r.on_done(r)

    def _append(self, r: GenRequest, token: int) -> None:
        if token in self.eos_ids:
            self._finish(r, "stop")
            return
        r.output_ids.append(token)
        text = self.tokenizer.decode(r.output_ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in r.stop) if i >= 0]
        if hits:
            r.text = text[: min(hits)]
            self._finish(r, "stop")
            return
        r.text = text
        if len(r.output_ids) >= r.max_new_tokens:
            self._finish(r, "length")
            return
        if r.on_delta:
            safe = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence waits for its next token
            if r.stop:  # hold back what could be the start of a stop string
                safe = min(safe, len(text) - (max(len(s) for s in r.stop) - 1))
            if safe > r.emitted:
                r.on_delta(text[r.emitted : safe])
                r.emitted = safe

    @staticmethod
    def _sample(logits: torch.Tensor, batch: list[GenRequest], gens: list[torch.Generator]) -> list[int]:
        out = []
        greedy = logits.argmax(-1).tolist()
        for i, r in enumerate(batch):
            if r.temperature < MIN_TEMPERATURE or r.finish_reason is not None:
                out.append(greedy[i])
                continue
            row = logits[i].float()
            probs = torch.softmax((row - row.max()) / r.temperature, dim=-1)
            if r.top_p < 1.0:
                p_sorted, idx = probs.sort(descending=True)
                drop = (p_sorted.cumsum(-1) - p_sorted) >= r.top_p  # keep the smallest set reaching top_p
                drop[0] = False  # the most likely token always stays (a top_p below fp32's range rounds to 0)
                p_sorted[drop] = 0.0
                choice = torch.multinomial(p_sorted / p_sorted.sum(), 1, generator=gens[i])
                out.append(int(idx[choice]))
            else:
                out.append(int(torch.multinomial(probs, 1, generator=gens[i])))
        return out

    # -- model calls ----------------------------------------------------------------------------

    @staticmethod
    def _cache(out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _forward(self, lane_active: str | None, rows: list[GenRequest], **kw):
        model = self.registry.model
        extra = {}
        context = contextlib.nullcontext()
        names = {r.adapter for r in rows}
        if lane_active is not None:
            model.set_adapter(lane_active)
        elif self.registry.is_peft:
            # PEFT's mixed-batch path costs ~15-20% per forward (per-layer sub-batches, hooks): use it only
            # when rows really differ; one adapter -> activate it, only base rows -> adapters disabled.
            if names == {BASE}:
                context = model.disable_adapter()
            elif len(names) == 1:
                model.set_adapter(next(iter(names)))
            else:
                extra["adapter_names"] = [r.adapter for r in rows]
        if self.observe_batch:
            self.observe_batch(len(rows))
        for r in rows:
            r.max_batch = max(r.max_batch, len(rows))
        with torch.inference_mode(), context:
            return model(**kw, **extra)

    def _prefill(self, active: str | None, rows: list[GenRequest], *, score: bool = False, cache: bool = True) -> Lane:
        """One forward over the rows' left-padded prompts: their KV cache (if ``cache``) and next-token logits;
        with ``score``, also each row's prompt token logprobs (from the logits at every prompt position)."""
        n = len(rows)
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attn[i, width - len(r.prompt_ids) :] = 1
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        device = next(self.registry.model.parameters()).device
        # on the logits' device: torch.multinomial on CUDA refuses a CPU generator
        gens = [
            torch.Generator(device=device).manual_seed(
                (r.seed if r.seed is not None else random.getrandbits(62)) % (1 << 63))
            for r in rows
        ]
        with self.registry.lock:
            out = self._forward(active, rows, input_ids=input_ids.to(device), attention_mask=attn.to(device),
                                position_ids=position_ids.to(device), use_cache=cache,
                                logits_to_keep=0 if score else 1)  # 0: every position
        last = out.logits[:, -1, :]
        if score:
            for i, r in enumerate(rows):
                r.prompt_logprobs = prompt_logprobs(out.logits[i, width - len(r.prompt_ids) :], r.prompt_ids,
                                                    r.prompt_top_logprobs)
            last = last.clone()  # not a view that keeps every position's logits alive
        return Lane(active, list(rows), gens, self._cache(out) if cache else None, attn, position_ids[:, -1:], last)

    def _add(self, new: Lane) -> None:
        """Splice ``new`` into the running lane of the same adapter (or start that lane)."""
        lane = self.lanes.get(new.active)
        if lane is None:
            self.lanes[new.active] = new
            return
        ta, tb = lane.attn.shape[1], new.attn.shape[1]
        t = max(ta, tb)
        for la, lb in zip(lane.cache.layers, new.cache.layers, strict=True):
            la.keys = torch.cat([_pad_left(la.keys, t - ta, 2), _pad_left(lb.keys, t - tb, 2)], dim=0)
            la.values = torch.cat([_pad_left(la.values, t - ta, 2), _pad_left(lb.values, t - tb, 2)], dim=0)
        lane.attn = torch.cat([_pad_left(lane.attn, t - ta, 1), _pad_left(new.attn, t - tb, 1)], dim=0)
        lane.pos = torch.cat([lane.pos, new.pos], dim=0)
        lane.logits = torch.cat([lane.logits, new.logits], dim=0)
        lane.rows += new.rows
        lane.gens += new.gens

    @staticmethod
    def _record_logprobs(lane: Lane, tokens: list[int]) -> None:
        """Each sampled token's logprob, for the rows that asked (before the token can end the row)."""
        idx = [i for i, r in enumerate(lane.rows)
               if r.top_logprobs is not None and r.finish_reason is None and not r.cancelled]
        if idx:
            entries = token_logprobs(lane.logits[idx], [tokens[i] for i in idx],
                                     [lane.rows[i].top_logprobs for i in idx])
            for i, entry in zip(idx, entries, strict=True):
                lane.rows[i].output_logprobs.append(entry)

    def _step(self, lane: Lane) -> None:
        """Sample each row's next token; drop finished rows; advance the rest by one forward."""
        tokens = self._sample(_masked(lane), lane.rows, lane.gens)
        self._record_logprobs(lane, tokens)
        for r, t in zip(lane.rows, tokens, strict=True):
            if r.cancelled:
                self._finish(r, "cancelled")
            elif r.finish_reason is None:
                if r.grammar is not None:
                    r.grammar.accept(t)
                self._append(r, t)
        keep = [i for i, r in enumerate(lane.rows) if r.finish_reason is None]
        if not keep:
            lane.rows = []
            return
        if len(keep) < len(lane.rows):
            idx = torch.tensor(keep, dtype=torch.long)
            for layer in lane.cache.layers:
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
            lane.attn, lane.pos = lane.attn[idx], lane.pos[idx]
            lane.rows = [lane.rows[i] for i in keep]
            lane.gens = [lane.gens[i] for i in keep]
            tokens = [tokens[i] for i in keep]
            first = int(lane.attn.any(dim=0).float().argmax())  # drop columns that are padding for every row
            if first > 0:
                for layer in lane.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                lane.attn = lane.attn[:, first:]
        n = len(lane.rows)
        lane.attn = torch.cat([lane.attn, torch.ones((n, 1), dtype=torch.long)], dim=1)
        lane.pos = lane.pos + 1
        device = next(self.registry.model.parameters()).device
        step_ids = torch.tensor([[t] for t in tokens], dtype=torch.long, device=device)
        with self.registry.lock:
            out = self._forward(lane.active, lane.rows, input_ids=step_ids, attention_mask=lane.attn.to(device),
                                position_ids=lane.pos.to(device), use_cache=True, **{self._cache_kw: lane.cache})
        lane.cache = self._cache(out)
        lane.logits = out.logits[:, -1, :]


def _masked(lane: Lane) -> torch.Tensor:
    """The lane's next-token logits with each constrained row's disallowed tokens at -inf (a copy: the model's
    own logits stay for logprobs); the logits themselves when no row has a grammar."""
    grammars = [r.grammar if r.finish_reason is None and not r.cancelled else None for r in lane.rows]
    if all(g is None for g in grammars):
        return lane.logits
    return mask_logits(lane.logits.clone(), grammars)


def prefill_groups(rows: list[GenRequest]) -> list[tuple[list[GenRequest], bool]]:
    """How new rows of one lane are prefilled: (rows, score) per forward.

    Plain rows share one forward. Scoring rows (prompt logprobs) keep every position's logits, so they run apart,
    in groups of at most ``SCORING_TOKENS_PER_FORWARD`` padded tokens, and rows that then generate are never
    grouped with rows that do not (those need no KV cache).
    """
    groups: list[tuple[list[GenRequest], bool]] = []
    plain = [r for r in rows if r.prompt_top_logprobs is None]
    if plain:
        groups.append((plain, False))
    for generates in (True, False):
        chunk: list[GenRequest] = []
        width = 0
        for r in rows:
            if r.prompt_top_logprobs is None or (r.max_new_tokens > 0) != generates:
                continue
            if chunk and max(width, len(r.prompt_ids)) * (len(chunk) + 1) > SCORING_TOKENS_PER_FORWARD:
                groups.append((chunk, True))
                chunk, width = [], 0
            chunk.append(r)
            width = max(width, len(r.prompt_ids))
        if chunk:
            groups.append((chunk, True))
    return groups
