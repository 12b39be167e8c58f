"""Dynamic batching: concurrent requests share forward passes.

A worker thread takes the requests waiting in the queue (up to ``max_batch_size``, waiting at most
``batch_wait_ms`` for more after the first), left-pads their prompts and decodes them together with
a KV cache. Requests for different adapters go into the same batch: PEFT's ``adapter_names=``
routes each row through its own LoRA/DoRA weights (``__base__`` = no adapter). Each row has its own
sampling settings, random generator (``seed``), stop strings and token budget; a row that finishes
stops emitting while the others go on, and the batch ends when every row has finished.
"""

from __future__ import annotations

import inspect
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


MIN_TEMPERATURE = 1e-4  # below this, sampling is greedy (dividing by ~0 would overflow to inf/nan)


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
    on_delta: Callable[[str], None] | None = None  # called on the worker thread with new text
    on_done: Callable[[GenRequest], None] | None = None  # called on the worker thread once
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    cancelled: bool = False
    emitted: int = 0
    batch_size: int = 0


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

    # -- worker ---------------------------------------------------------------------------------

    def _collect(self) -> list[GenRequest]:
        try:
            first = self.queue.get(timeout=0.05)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            live = []
            for r in batch:
                if r.cancelled:
                    self._finish(r, "cancelled")
                else:
                    live.append(r)
            if not live:
                continue
            groups = self.registry.groups([r.adapter for r in live]) if self.registry.is_peft else [
                (list(range(len(live))), None)]
            for rows, active in groups:
                group = [live[i] for i in rows]
                try:
                    self.run_batch(group, active=active)
                except Exception as e:  # a bug must fail these requests, never kill the worker
                    log.exception("batch of %d failed", len(group))
                    for r in group:
                        if r.finish_reason is None:
                            r.error = f"generation failed: {type(e).__name__}"
                            self._finish(r, "error")

    # -- one batch ------------------------------------------------------------------------------

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

    @staticmethod
    def _cache(out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def run_batch(self, batch: list[GenRequest], active: str | None = None) -> None:
        """Decode ``batch`` together: mixed adapters via ``adapter_names``, or all rows on adapter ``active``."""
        n = len(batch)
        for r in batch:
            r.batch_size = n
        if self.observe_batch:
            self.observe_batch(n)
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(batch):
            input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attn[i, width - len(r.prompt_ids) :] = 1
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        gens = [
            torch.Generator().manual_seed((r.seed if r.seed is not None else random.getrandbits(62)) % (1 << 63))
            for r in batch
        ]
        with self.registry.lock, torch.inference_mode():
            model = self.registry.model
            extra = {}
            if active is not None:
                model.set_adapter(active)
            elif self.registry.is_peft:
                extra = {"adapter_names": [r.adapter for r in batch]}
            device = next(model.parameters()).device
            out = model(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                        position_ids=position_ids.to(device), use_cache=True, logits_to_keep=1, **extra)
            for _step in range(max(r.max_new_tokens for r in batch)):
                tokens = self._sample(out.logits[:, -1, :], batch, gens)
                for i, r in enumerate(batch):
                    if r.finish_reason is not None:
                        continue
                    if r.cancelled:
                        self._finish(r, "cancelled")
                        continue
                    self._append(r, tokens[i])
                if all(r.finish_reason is not None for r in batch):
                    break
                step_ids = torch.tensor([[t] for t in tokens], dtype=torch.long, device=device)
                attn = torch.cat([attn, torch.ones((n, 1), dtype=torch.long)], dim=1)
                position_ids = position_ids[:, -1:] + 1
                out = model(input_ids=step_ids, attention_mask=attn.to(device), position_ids=position_ids.to(device),
                            use_cache=True, **{self._cache_kw: self._cache(out)}, **extra)
        for r in batch:  # a zero-step budget or a bug: nobody is left waiting
            self._finish(r, "length")
