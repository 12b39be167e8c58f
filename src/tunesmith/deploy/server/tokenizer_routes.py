"""vLLM's tokenizer routes, so a client counts tokens with the served tokenizer and needs no hub download:
``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize`` (lm-evaluation-harness' ``remote`` tokenizer
backend uses exactly these). They need a key, like ``/v1/models``. One tokenizer serves the base and every adapter.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tunesmith.deploy.server.generation import resolve_model
from tunesmith.deploy.server.protocol import ERROR_RESPONSES, APIError, DetokenizeRequest, TokenizeRequest
from tunesmith.deploy.server.routes import require_key, server_state

router = APIRouter()


def _special(tokenizer, name: str) -> str | None:
    token = getattr(tokenizer, name, None)
    return None if token is None else str(token)


@router.get("/tokenizer_info", responses=ERROR_RESPONSES)
async def tokenizer_info(request: Request, _key: str = Depends(require_key)) -> dict:
    state = server_state(request)
    tok = state.tokenizer
    return {
        "tokenizer_class": type(tok).__name__,
        "bos_token": _special(tok, "bos_token"),
        "eos_token": _special(tok, "eos_token"),
        "pad_token": _special(tok, "pad_token"),
        "unk_token": _special(tok, "unk_token"),
        "chat_template": getattr(tok, "chat_template", None),
        "model_max_length": state.cfg.max_total_tokens,
        "vocab_size": state.vocab_size,
    }


@router.post("/tokenize", responses=ERROR_RESPONSES)
async def tokenize(request: Request, body: TokenizeRequest, _key: str = Depends(require_key)) -> dict:
    state = server_state(request)
    if body.model is not None:
        await resolve_model(state, body.model)
    ids = state.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
    return {"count": len(ids), "max_model_len": state.cfg.max_total_tokens, "tokens": ids,
            "token_strs": [state.token_texts.text_of(t) for t in ids] if body.return_token_strs else None}


@router.post("/detokenize", responses=ERROR_RESPONSES)
async def detokenize(request: Request, body: DetokenizeRequest, _key: str = Depends(require_key)) -> dict:
    state = server_state(request)
    if body.model is not None:
        await resolve_model(state, body.model)
    bad = next((t for t in body.tokens if t >= state.vocab_size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is not in the vocabulary: ids run from 0 to {state.vocab_size - 1}",
                       param="tokens")
    return {"prompt": state.tokenizer.decode(body.tokens)}
