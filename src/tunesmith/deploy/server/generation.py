"""One HTTP request's generation on the engine: checks, the per-key slot, and waiting for the tokens.

``start_generation`` resolves the model, checks the token budget, takes one of the key's slots and hands one
``GenRequest`` per prompt to the continuous-batching engine (which runs on its own thread). The route then
either waits for the whole answer (``wait_for_answer``, which also notices a client that disconnects) or
streams its events (``generation_events``, one prompt). However it ends — answer, timeout, client gone — the
rows are cancelled if still running and the slot is released exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tunesmith.constrained_decoding import RowGrammar
from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.continuous_batching import GenRequest, QueueFull
from tunesmith.deploy.server.protocol import APIError
from tunesmith.deploy.server.registry import UnknownModel
from tunesmith.deploy.server.state import ServerState
from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class Sampling:
    """How a request asks the engine to pick tokens."""

    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    top_logprobs: int | None = None  # logprobs of generated tokens, with this many alternatives
    prompt_top_logprobs: int | None = None  # logprobs of prompt tokens (echo), with this many alternatives
    grammar: RowGrammar | None = None  # the answer's grammar (one prompt: chat)


@dataclass(eq=False)
class Generation:
    """A submitted request: its engine rows, and what the worker thread reports back to the event loop."""

    reqs: list[GenRequest]  # one per prompt
    prompt_tokens: int  # of all prompts
    timeout_s: float
    deadline: float  # event-loop time after which it is cancelled (504)
    finished: asyncio.Future  # the finished GenRequests, once all are done
    _release: Callable[[], None]
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # streams: ("delta", text) ... ("done", GenRequest)
    _released: bool = False

    def release(self) -> None:
        """Free the key's slot (idempotent: the answer, the stream's end or the worker, whichever is first)."""
        if not self._released:
            self._released = True
            self._release()

    def cancel(self) -> None:
        """Stop decoding: the worker drops the rows before its next forward pass."""
        for r in self.reqs:
            r.cancelled = True

    def seconds_left(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)


async def resolve_model(state: ServerState, name: str) -> str:
    """The engine's adapter name for a request's ``model`` (404 unknown, 400 unusable)."""
    try:
        return await run_in_threadpool(state.registry.resolve, name)
    except UnknownModel as e:
        raise APIError(404, e.message, code="model_not_found", param="model") from None
    except TunesmithError as e:
        raise APIError(400, e.message, param="model") from None


def token_budget(cfg: ServeConfig, prompt_ids: list[int], max_tokens: int | None,
                 prompt_param: str = "messages") -> int:
    """Completion tokens allowed: ``max_tokens`` if prompt + it fit ``max_total_tokens`` (else 400)."""
    limit = cfg.max_total_tokens
    if len(prompt_ids) > limit or (len(prompt_ids) == limit and max_tokens != 0):
        raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this server allows {limit} prompt + "
                       "completion tokens", code="context_length_exceeded", param=prompt_param)
    if max_tokens is None:
        return min(cfg.default_max_tokens, limit - len(prompt_ids))
    if len(prompt_ids) + max_tokens > limit:
        raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds this "
                       f"server's limit of {limit} tokens", code="context_length_exceeded", param="max_tokens")
    return max_tokens


async def start_generation(state: ServerState, key: str, model: str, prompts: list[list[int]], max_tokens: int | None,
                           sampling: Sampling, *, stream: bool, prompt_param: str = "messages") -> Generation:
    """Check the request, take a slot of ``key`` and submit one engine row per prompt (a stream has one)."""
    cfg = state.cfg
    adapter = await resolve_model(state, model)
    budgets = [token_budget(cfg, ids, max_tokens, prompt_param) for ids in prompts]
    if state.engine.queue.qsize() + len(prompts) > state.engine.queue.maxsize:
        raise APIError(429, "the server is busy; retry shortly", type="rate_limit_error", code="server_overloaded")
    if not state.limiter.acquire(key):
        raise APIError(429, f"more than {cfg.max_concurrent_per_key} requests in flight for this API key",
                       type="rate_limit_error", code="rate_limit_exceeded")
    loop = asyncio.get_running_loop()
    reqs = [GenRequest(prompt_ids=ids, adapter=adapter, max_new_tokens=budget, temperature=sampling.temperature,
                       top_p=sampling.top_p, stop=sampling.stop, seed=sampling.seed, top_logprobs=sampling.top_logprobs,
                       prompt_top_logprobs=sampling.prompt_top_logprobs, grammar=sampling.grammar)
            for ids, budget in zip(prompts, budgets, strict=True)]
    gen = Generation(reqs, sum(len(ids) for ids in prompts), cfg.request_timeout_s, loop.time() + cfg.request_timeout_s,
                     loop.create_future(), lambda: state.limiter.release(key))
    left = [len(reqs)]  # rows not finished yet; only the worker thread counts down

    def all_done() -> None:  # event loop
        if not gen.finished.done():
            gen.finished.set_result(reqs)

    def on_done(r: GenRequest) -> None:  # worker thread
        left[0] -= 1
        if left[0]:
            return
        loop.call_soon_threadsafe(all_done)
        if stream:  # a stream whose body never started (client gone at once) must not hold the slot
            loop.call_soon_threadsafe(gen.events.put_nowait, ("done", r))
            loop.call_soon_threadsafe(gen.release)

    for r in reqs:
        if stream:
            r.on_delta = lambda t: loop.call_soon_threadsafe(gen.events.put_nowait, ("delta", t))
        r.on_done = on_done
    try:
        for r in reqs:
            state.engine.submit(r)
    except QueueFull:
        gen.cancel()  # rows already queued finish as cancelled without running
        gen.release()
        raise APIError(429, "the server is busy; retry shortly", type="rate_limit_error",
                       code="server_overloaded") from None
    state.metrics.prompt_tokens.labels(model).inc(gen.prompt_tokens)
    return gen


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read; the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_for_answer(gen: Generation, request: Request) -> list[GenRequest] | None:
    """The finished rows, or None if the client disconnected first (504 past the deadline)."""
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({gen.finished, gone}, timeout=gen.seconds_left(),
                           return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server cancelled this request: stop decoding its row
        gen.cancel()
        raise
    finally:
        gone.cancel()
        if not gen.finished.done():
            gen.cancel()
        gen.release()
    if gen.finished.done():
        return gen.finished.result()
    if gone.done() and not gone.cancelled():
        return None
    raise APIError(504, f"generation took longer than {gen.timeout_s}s", type="timeout", code="timeout")


async def generation_events(gen: Generation) -> AsyncIterator[tuple[str, object]]:
    """A stream's events: ("delta", text) as text is decoded, then ("done", GenRequest) or ("timeout", None).

    The consumer must ``cancel()`` and ``release()`` the generation when it stops, however it stops.
    """
    while True:
        try:
            ev, val = await asyncio.wait_for(gen.events.get(), timeout=gen.seconds_left())
        except TimeoutError:
            gen.cancel()
            yield "timeout", None
            return
        yield ev, val
        if ev == "done":
            return
