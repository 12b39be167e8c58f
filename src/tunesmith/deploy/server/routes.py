"""The HTTP routes: /health, /metrics, /v1/models, /v1/chat/completions, /v1/completions.

Both generation routes turn their request into prompt ids (one list per prompt) and a response builder (a chat
request also into its grammar, when tools or response_format ask for one: structured.py), then
share ``answer``: a whole JSON answer, or a server-sent event stream. (The tokenizer routes are in
tokenizer_routes.py.)
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.constrained_decoding import RowGrammar

from tunesmith.deploy.server.generation import (
    Generation,
    Sampling,
    generation_events,
    start_generation,
    wait_for_answer,
)
from tunesmith.deploy.server.middleware import CLIENT_GONE
from tunesmith.deploy.server.prompts import chat_prompt_ids, completion_prompts
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
    sse,
)
from tunesmith.deploy.server.state import ServerState
from tunesmith.deploy.server.structured import chat_constraint
from tunesmith.deploy.server.tools import chat_conversation, declared_functions, tool_choice_mode

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
    body.check_combinations()
    wants_json = body.response_format is not None and body.response_format.type == "json_object"
    if wants_json and not any("json" in msg.text().lower() for msg in body.messages):
        raise APIError(400, "'messages' must contain the word 'json' in some form, to use "
                       "'response_format' of type 'json_object'.", param="response_format")
    state = server_state(request)
    functions = declared_functions(body)
    mode = tool_choice_mode(body, functions)
    tools = [{"type": "function", "function": f} for f in functions] or None
    prompt_ids = chat_prompt_ids(state.tokenizer, chat_conversation(body, functions), tools)
    constraint, param = chat_constraint(body, functions, mode, call_blocks=state.grammars.call_blocks)
    grammar = await run_in_threadpool(state.grammars.start, constraint, param) if constraint else None
    max_tokens = body.max_completion_tokens or body.max_tokens
    top = (body.top_logprobs or 0) if body.logprobs else None
    builder = ChatResponses(body.model, logprobs=state.token_texts if top is not None else None,
                            parse_calls=bool(functions) and mode != "none")
    return await answer(request, key, body, [prompt_ids], max_tokens, builder, top_logprobs=top, grammar=grammar)


@router.post("/v1/completions", responses=ERROR_RESPONSES)
async def completions(request: Request, body: CompletionRequest, key: str = Depends(require_key)):
    body.check_combinations()
    state = server_state(request)
    prompts = completion_prompts(state.tokenizer, body.prompt, state.engine.pad_id, state.vocab_size)
    max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    builder = CompletionResponses(body.model, prompts, echo=bool(body.echo),
                                  logprobs=state.token_texts if body.logprobs is not None else None)
    return await answer(request, key, body, [p.ids for p in prompts], max_tokens, builder, top_logprobs=body.logprobs,
                        prompt_top_logprobs=body.logprobs if body.echo else None, prompt_param="prompt")


async def answer(request: Request, key: str, body: ChatCompletionRequest | CompletionRequest, prompts: list[list[int]],
                 max_tokens: int | None, builder: ChatResponses | CompletionResponses, *,
                 top_logprobs: int | None = None, prompt_top_logprobs: int | None = None,
                 prompt_param: str = "messages", grammar: RowGrammar | None = None):
    """Generate for each of ``prompts`` and answer in ``builder``'s shape: whole, or streamed when ``body.stream``
    (one prompt). ``top_logprobs`` / ``prompt_top_logprobs``: record generated / prompt token logprobs."""
    state = server_state(request)
    sampling = Sampling(temperature=1.0 if body.temperature is None else body.temperature,
                        top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop_list(), seed=body.seed,
                        top_logprobs=top_logprobs, prompt_top_logprobs=prompt_top_logprobs, grammar=grammar)
    stream = bool(body.stream)
    gen = await start_generation(state, key, body.model, prompts, max_tokens, sampling, stream=stream,
                                 prompt_param=prompt_param)
    if stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_event_stream(state, gen, builder, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    rows = await wait_for_answer(gen, request)
    if rows is None:
        return Response(status_code=CLIENT_GONE)  # nobody is listening; counted in /metrics
    state.metrics.completion_tokens.labels(body.model).inc(sum(len(r.output_ids) for r in rows))
    failed = next((r.error for r in rows if r.error), None)
    if failed:
        raise APIError(503, failed, type="server_error", code="generation_failed")
    return builder.whole(rows, gen.prompt_tokens)


async def _event_stream(state: ServerState, gen: Generation, builder: ChatResponses | CompletionResponses,
                        include_usage: bool):
    """The server-sent events of a streamed answer, ending with ``[DONE]`` (errors are sent as an event)."""
    try:
        for chunk in builder.opening_chunks():
            yield sse(chunk)
        async for ev, val in generation_events(gen):
            if ev == "delta":
                for chunk in builder.delta_chunks(val):
                    yield sse(chunk)
            elif ev == "timeout":
                yield sse(APIError(504, "generation timed out", type="timeout", code="timeout").body())
            else:  # done
                r = val
                state.metrics.completion_tokens.labels(builder.model).inc(len(r.output_ids))
                if r.error:
                    yield sse(APIError(503, r.error, type="server_error", code="generation_failed").body())
                    break
                for chunk in builder.closing_chunks(r):
                    yield sse(chunk)
                if include_usage:
                    yield sse(builder.usage_chunk(r, gen.prompt_tokens))
        yield SSE_DONE
    finally:  # the client went away, or the stream ended: the worker drops the row (if running), the slot is freed
        gen.cancel()
        gen.release()
