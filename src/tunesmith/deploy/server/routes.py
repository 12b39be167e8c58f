"""The HTTP routes: /health, /metrics, /v1/models, /v1/chat/completions, /v1/completions.

Both generation routes turn their request into prompt ids and a response builder, then share ``answer``:
a whole JSON answer, or a server-sent event stream.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from tunesmith.deploy.server.generation import (
    Generation,
    Sampling,
    generation_events,
    start_generation,
    wait_for_answer,
)
from tunesmith.deploy.server.middleware import CLIENT_GONE
from tunesmith.deploy.server.prompts import chat_prompt_ids, completion_prompt_ids
from tunesmith.deploy.server.protocol import (
    ERROR_RESPONSES,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
)
from tunesmith.deploy.server.responses import (
    SSE_DONE,
    ChatResponses,
    CompletionResponses,
    finish_reason,
    sse,
)
from tunesmith.deploy.server.state import ServerState

router = APIRouter()
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def server_state(request: Request) -> ServerState:
    return request.app.state.tunesmith


def key_of(request: Request) -> str | None:
    """The caller's key digest ("anonymous" without auth), or None without a valid key."""
    state = server_state(request)
    if state.keys is None:
        return "anonymous"
    return state.keys.check(request.headers.get("authorization"))


def require_key(request: Request) -> str:
    digest = key_of(request)
    if digest is None:
        raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key")
    return digest


# -- service routes --------------------------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> dict:
    state = server_state(request)
    if key_of(request) is None:  # liveness for anyone; what is served only for a valid key
        return {"status": "ok"}
    return {"status": "ok", "models": state.registry.names(), "queue": state.engine.queue.qsize()}


@router.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
async def metrics(request: Request, _key: str = Depends(require_key)) -> PlainTextResponse:  # labels name adapters
    state = server_state(request)
    state.metrics.queue_depth.set(state.engine.queue.qsize())
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models", responses=ERROR_RESPONSES)
async def models(request: Request, _key: str = Depends(require_key)) -> dict:
    reg = server_state(request).registry
    data = [{"id": reg.base_name, "object": "model", "created": reg.created, "owned_by": "tunesmith"}]
    data += [{"id": a.name, "object": "model", "created": a.created, "owned_by": "tunesmith",
              "parent": reg.base_name} for a in reg.adapters.values()]
    return {"object": "list", "data": data}


# -- generation routes ------------------------------------------------------------------------------


@router.post("/v1/chat/completions", responses=ERROR_RESPONSES)
async def chat_completions(request: Request, body: ChatCompletionRequest, key: str = Depends(require_key)):
    wants_json = body.response_format is not None and body.response_format.type == "json_object"
    if wants_json and not any("json" in msg.text().lower() for msg in body.messages):
        raise APIError(400, "'messages' must contain the word 'json' in some form, to use "
                       "'response_format' of type 'json_object'.", param="response_format")
    prompt_ids = chat_prompt_ids(server_state(request).tokenizer, body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    return await answer(request, key, body, prompt_ids, max_tokens, ChatResponses(body.model))


@router.post("/v1/completions", responses=ERROR_RESPONSES)
async def completions(request: Request, body: CompletionRequest, key: str = Depends(require_key)):
    state = server_state(request)
    text = body.prompt_text()
    prompt_ids = completion_prompt_ids(state.tokenizer, text, state.engine.pad_id)
    max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    builder = CompletionResponses(body.model, echo=text if body.echo else "")
    return await answer(request, key, body, prompt_ids, max_tokens, builder)


async def answer(request: Request, key: str, body: ChatCompletionRequest | CompletionRequest, prompt_ids: list[int],
                 max_tokens: int | None, builder: ChatResponses | CompletionResponses):
    """Generate for ``prompt_ids`` and answer in ``builder``'s shape: whole, or streamed when ``body.stream``."""
    state = server_state(request)
    sampling = Sampling(temperature=1.0 if body.temperature is None else body.temperature,
                        top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop_list(), seed=body.seed)
    stream = bool(body.stream)
    gen = await start_generation(state, key, body.model, prompt_ids, max_tokens, sampling, stream=stream)
    if stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_event_stream(state, gen, builder, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    r = await wait_for_answer(gen, request)
    if r is None:
        return Response(status_code=CLIENT_GONE)  # nobody is listening; counted in /metrics
    state.metrics.completion_tokens.labels(body.model).inc(len(r.output_ids))
    if r.error:
        raise APIError(503, r.error, type="server_error", code="generation_failed")
    return builder.whole(r, gen.prompt_tokens)


async def _event_stream(state: ServerState, gen: Generation, builder: ChatResponses | CompletionResponses,
                        include_usage: bool):
    """The server-sent events of a streamed answer, ending with ``[DONE]`` (errors are sent as an event)."""
    try:
        for chunk in builder.opening_chunks():
            yield sse(chunk)
        async for ev, val in generation_events(gen):
            if ev == "delta":
                if val:
                    yield sse(builder.chunk(val))
            elif ev == "timeout":
                yield sse(APIError(504, "generation timed out", type="timeout", code="timeout").body())
            else:  # done
                r = val
                state.metrics.completion_tokens.labels(builder.model).inc(len(r.output_ids))
                if r.error:
                    yield sse(APIError(503, r.error, type="server_error", code="generation_failed").body())
                    break
                yield sse(builder.chunk(None, finish_reason(r)))
                if include_usage:
                    yield sse(builder.usage_chunk(r, gen.prompt_tokens))
        yield SSE_DONE
    finally:  # the client went away, or the stream ended: the worker drops the row (if running), the slot is freed
        gen.cancel()
        gen.release()
