"""The FastAPI app: OpenAI-compatible routes, OpenAI-style errors, keys, limits, metrics.

Every failure a client can cause is answered with a 4xx and an OpenAI error body; the batching
worker runs the model on its own thread, so a slow or failing request never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.chat_template import ChatTemplateError, render_prompt_ids
from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import ConcurrencyLimiter, KeyChecker
from tunesmith.deploy.server.batching import BatchEngine, GenRequest, QueueFull
from tunesmith.deploy.server.metrics import ServerMetrics
from tunesmith.deploy.server.protocol import (
    ERROR_RESPONSES,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
)
from tunesmith.deploy.server.registry import AdapterRegistry, UnknownModel
from tunesmith.errors import TunesmithError

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    cfg: ServeConfig
    registry: AdapterRegistry
    tokenizer: object
    engine: BatchEngine
    keys: KeyChecker | None
    limiter: ConcurrencyLimiter
    metrics: ServerMetrics


# -- request body size limit (pure ASGI, so it applies before any parsing) -----------------------


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send) -> None:
        body = json.dumps(APIError(413, f"request body exceeds {self.max_bytes} bytes",
                                   code="request_too_large").body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > self.max_bytes:
                        return await self._reject(send)
                except ValueError:
                    return await self._reject(send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(send)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


# -- helpers ------------------------------------------------------------------------------------


def _error_response(e: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(state: ServerState) -> BodyLimit:
    cfg = state.cfg
    app = FastAPI(title="tunesmith", version="1", description="OpenAI-compatible API for a base model and its adapters.")
    app.state.tunesmith = state
    m = state.metrics

    @app.exception_handler(APIError)
    async def _api_error(_req, e: APIError):
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON"
        return _error_response(APIError(400, f"{'.'.join(loc) + ': ' if loc else ''}{msg}", param=".".join(loc) or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        return _error_response(APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _bug(_req, e: Exception):  # pragma: no cover - a bug; still answer in OpenAI's format
        log.exception("unhandled error")
        return JSONResponse(APIError(500, "internal server error", type="server_error").body(), status_code=500)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        m.requests.labels(name, str(response.status_code)).inc()
        m.latency.labels(name).observe(time.perf_counter() - t0)
        return response

    def require_key(request: Request) -> str:
        if state.keys is None:
            return "anonymous"
        digest = state.keys.check(request.headers.get("authorization"))
        if digest is None:
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        return digest

    # -- routes ---------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": state.registry.names(), "queue": state.engine.queue.qsize()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        m.queue_depth.set(state.engine.queue.qsize())
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models(_key: str = Depends(require_key)) -> dict:
        reg = state.registry
        data = [{"id": reg.base_name, "object": "model", "created": reg.created, "owned_by": "tunesmith"}]
        data += [{"id": a.name, "object": "model", "created": a.created, "owned_by": "tunesmith",
                  "parent": reg.base_name} for a in reg.adapters.values()]
        return {"object": "list", "data": data}

    async def _resolve(name: str) -> str:
        try:
            return await run_in_threadpool(state.registry.resolve, name)
        except UnknownModel as e:
            raise APIError(404, e.message, code="model_not_found", param="model") from None
        except TunesmithError as e:
            raise APIError(400, e.message, param="model") from None

    def _budget(prompt_ids: list[int], max_tokens: int | None) -> int:
        limit = cfg.max_total_tokens
        if len(prompt_ids) >= limit:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this server allows {limit} prompt + "
                           "completion tokens", code="context_length_exceeded", param="messages")
        if max_tokens is None:
            return min(cfg.default_max_tokens, limit - len(prompt_ids))
        if len(prompt_ids) + max_tokens > limit:
            raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds this "
                           f"server's limit of {limit} tokens", code="context_length_exceeded", param="max_tokens")
        return max_tokens

    async def _generate(key: str, body, prompt_ids: list[int], max_tokens: int | None, kind: str, echo: str = ""):
        adapter = await _resolve(body.model)
        budget = _budget(prompt_ids, max_tokens)
        if not state.limiter.acquire(key):
            raise APIError(429, f"more than {cfg.max_concurrent_per_key} requests in flight for this API key",
                           type="rate_limit_error", code="rate_limit_exceeded")
        released = False

        def release() -> None:  # idempotent: on the response's end, or when generation ends, whichever is first
            nonlocal released
            if not released:
                released = True
                state.limiter.release(key)

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_done(r: GenRequest) -> None:  # worker thread
            loop.call_soon_threadsafe(events.put_nowait, ("done", r))
            if stream:  # a stream whose body never started (client gone at once) must not hold the slot
                loop.call_soon_threadsafe(release)

        stream = bool(body.stream)
        req = GenRequest(
            prompt_ids=prompt_ids, adapter=adapter, max_new_tokens=budget,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop_list(), seed=body.seed,
            on_delta=(lambda t: loop.call_soon_threadsafe(events.put_nowait, ("delta", t))) if stream else None,
            on_done=on_done,
        )
        try:
            state.engine.submit(req)
        except QueueFull:
            release()
            raise APIError(429, "the server is busy; retry shortly", type="rate_limit_error",
                           code="server_overloaded") from None
        m.prompt_tokens.labels(body.model).inc(len(prompt_ids))
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        deadline = loop.time() + cfg.request_timeout_s

        def usage(r: GenRequest) -> dict:
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": len(r.output_ids),
                    "total_tokens": len(prompt_ids) + len(r.output_ids)}

        def done_accounting(r: GenRequest) -> None:
            m.completion_tokens.labels(body.model).inc(len(r.output_ids))

        if not stream:
            try:
                while True:
                    ev, val = await asyncio.wait_for(events.get(), timeout=max(deadline - loop.time(), 0.001))
                    if ev == "done":
                        break
            except TimeoutError:
                req.cancelled = True
                raise APIError(504, f"generation took longer than {cfg.request_timeout_s}s", type="timeout",
                               code="timeout") from None
            except asyncio.CancelledError:  # the client went away: stop decoding its row
                req.cancelled = True
                raise
            finally:
                release()
            r = val
            done_accounting(r)
            if r.error:
                raise APIError(503, r.error, type="server_error", code="generation_failed")
            finish = "length" if r.finish_reason == "length" else "stop"
            if kind == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": r.text},
                          "logprobs": None, "finish_reason": finish}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": echo + r.text, "logprobs": None, "finish_reason": finish}
                obj = "text_completion"
            return {"id": rid, "object": obj, "created": created, "model": body.model, "choices": [choice],
                    "usage": usage(r), "system_fingerprint": None}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta_text: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                delta = {} if delta_text is None else {"content": delta_text}
                if first:
                    delta = {"role": "assistant", "content": ""}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                    "choices": [{"index": 0, "text": delta_text or "", "logprobs": None, "finish_reason": finish}]}

        async def events_stream():
            try:
                if kind == "chat":
                    yield _sse(chunk(None, None, first=True))
                elif echo:
                    yield _sse(chunk(echo, None))
                while True:
                    try:
                        ev, val = await asyncio.wait_for(events.get(), timeout=max(deadline - loop.time(), 0.001))
                    except TimeoutError:
                        req.cancelled = True
                        yield _sse(APIError(504, "generation timed out", type="timeout", code="timeout").body())
                        break
                    if ev == "delta":
                        if val:
                            yield _sse(chunk(val, None))
                        continue
                    r = val
                    done_accounting(r)
                    if r.error:
                        yield _sse(APIError(503, r.error, type="server_error", code="generation_failed").body())
                        break
                    yield _sse(chunk(None, "length" if r.finish_reason == "length" else "stop"))
                    if include_usage:
                        yield _sse({"id": rid, "object": "chat.completion.chunk" if kind == "chat" else
                                    "text_completion", "created": created, "model": body.model, "choices": [],
                                    "usage": usage(r)})
                    break
                yield "data: [DONE]\n\n"
            finally:
                req.cancelled = True  # client went away: the batcher drops the row
                release()

        return StreamingResponse(events_stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, key: str = Depends(require_key)):
        wants_json = body.response_format is not None and body.response_format.type == "json_object"
        if wants_json and not any("json" in msg.text().lower() for msg in body.messages):
            raise APIError(400, "'messages' must contain the word 'json' in some form, to use "
                           "'response_format' of type 'json_object'.", param="response_format")
        messages = [{"role": "system" if msg.role == "developer" else msg.role, "content": msg.text()}
                    for msg in body.messages]
        try:
            prompt_ids = render_prompt_ids(state.tokenizer, messages)
        except ChatTemplateError as e:
            raise APIError(400, e.message, param="messages") from None
        except Exception as e:  # noqa: BLE001 - the template rejects this conversation (e.g. role order)
            raise APIError(400, f"the chat template cannot render these messages: {e}", param="messages") from None
        max_tokens = body.max_completion_tokens or body.max_tokens
        return await _generate(key, body, list(prompt_ids), max_tokens, "chat")

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, key: str = Depends(require_key)):
        text = body.prompt_text()
        prompt_ids = state.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not prompt_ids:
            prompt_ids = [state.tokenizer.bos_token_id if state.tokenizer.bos_token_id is not None
                          else state.engine.pad_id]
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
        return await _generate(key, body, prompt_ids, max_tokens, "completion", echo=text if body.echo else "")

    return BodyLimit(app, cfg.max_request_bytes)
