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
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

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


CLIENT_GONE = 499  # nginx's "client closed request": counted in /metrics, never seen by anyone


# -- every response counted by route and status (pure ASGI, outermost: 413s and 500s included) ----


class CountResponses:
    def __init__(self, app, metrics: ServerMetrics, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    def _route(self, scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route is None:  # rejected before routing (413) or no such route: one bucket for unknown paths
            route = scope["path"] if scope["path"] in self.routes else "unmatched"
        return route

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), None

        async def send_counted(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status = status or 500  # an exception that escaped the app: the server answers 500
            raise
        finally:  # no response at all: the client left before one was sent
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status or CLIENT_GONE)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


# -- helpers ------------------------------------------------------------------------------------


class ErrorJSONResponse(JSONResponse):
    """Error bodies may quote the request (a model name, a field name): ASCII-escaped, any text encodes."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error_response(e: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return ErrorJSONResponse(e.body(), status_code=e.status, headers=headers)


def _validation_message(first: dict) -> tuple[str, str | None]:
    """The message and ``param`` of a request validation error (the first one)."""
    if first.get("type") == "json_invalid":  # loc holds the character position, not a parameter
        pos = [x for x in first.get("loc", ()) if x != "body"]
        where = f" at character {pos[0]}" if pos else ""
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}{where}", None
    param = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif first.get("type") == "extra_forbidden":
        msg = "unrecognized request argument (not an OpenAI parameter of this endpoint)"
    return f"{param + ': ' if param else ''}{msg}", param


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read; the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(state: ServerState) -> CountResponses:
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
        msg, param = _validation_message(errs[0] if errs else {"loc": (), "msg": "invalid request"})
        return _error_response(APIError(400, msg, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        return _error_response(APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _bug(_req, e: Exception):  # pragma: no cover - a bug; still answer in OpenAI's format
        log.exception("unhandled error")
        return JSONResponse(APIError(500, "internal server error", type="server_error").body(), status_code=500)

    def key_of(request: Request) -> str | None:
        """The caller's key digest ("anonymous" without auth), or None without a valid key."""
        if state.keys is None:
            return "anonymous"
        return state.keys.check(request.headers.get("authorization"))

    def require_key(request: Request) -> str:
        digest = key_of(request)
        if digest is None:
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        return digest

    # -- routes ---------------------------------------------------------------------------------

    @app.get("/health")
    async def health(request: Request) -> dict:
        if key_of(request) is None:  # liveness for anyone; what is served only for a valid key
            return {"status": "ok"}
        return {"status": "ok", "models": state.registry.names(), "queue": state.engine.queue.qsize()}

    @app.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
    async def metrics(_key: str = Depends(require_key)) -> PlainTextResponse:  # its labels name the adapters
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

    async def _generate(request: Request, key: str, body, prompt_ids: list[int], max_tokens: int | None, kind: str,
                        echo: str = ""):
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
        finished: asyncio.Future = loop.create_future()

        def on_done(r: GenRequest) -> None:  # worker thread
            loop.call_soon_threadsafe(events.put_nowait, ("done", r))
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(r))
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
            gone = asyncio.ensure_future(_client_gone(request))
            try:
                await asyncio.wait({finished, gone}, timeout=max(deadline - loop.time(), 0.001),
                                   return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the server cancelled this request: stop decoding its row
                req.cancelled = True
                raise
            finally:
                gone.cancel()
                if not finished.done():
                    req.cancelled = True  # the worker drops the row before its next forward pass
                release()
            if not finished.done():
                if gone.done() and not gone.cancelled():
                    return Response(status_code=CLIENT_GONE)
                raise APIError(504, f"generation took longer than {cfg.request_timeout_s}s", type="timeout",
                               code="timeout")
            r = finished.result()
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
    async def chat_completions(request: Request, body: ChatCompletionRequest, key: str = Depends(require_key)):
        wants_json = body.response_format is not None and body.response_format.type == "json_object"
        if wants_json and not any("json" in msg.text().lower() for msg in body.messages):
            raise APIError(400, "'messages' must contain the word 'json' in some form, to use "
                           "'response_format' of type 'json_object'.", param="response_format")
        messages = [{"role": "system" if msg.role == "developer" else msg.role, "content": msg.text()}
                    for msg in body.messages]
        try:
            prompt_ids = state.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                             return_dict=False)
        except Exception as e:  # noqa: BLE001 - the template rejects this conversation (e.g. role order)
            raise APIError(400, f"the chat template cannot render these messages: {e}", param="messages") from None
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        max_tokens = body.max_completion_tokens or body.max_tokens
        return await _generate(request, key, body, list(prompt_ids), max_tokens, "chat")

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(request: Request, body: CompletionRequest, key: str = Depends(require_key)):
        text = body.prompt_text()
        prompt_ids = state.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not prompt_ids:
            prompt_ids = [state.tokenizer.bos_token_id if state.tokenizer.bos_token_id is not None
                          else state.engine.pad_id]
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
        return await _generate(request, key, body, prompt_ids, max_tokens, "completion",
                               echo=text if body.echo else "")

    routes = {getattr(r, "path", None) for r in app.routes} - {None}
    return CountResponses(BodyLimit(app, cfg.max_request_bytes), m, routes)
