"""Response bodies of the OpenAI API: a whole answer, and the chunks of a streamed one.

``ChatResponses`` and ``CompletionResponses`` build the two endpoints' shapes for one request (its id,
creation time and model name); the routes and the streaming loop never branch on the endpoint.
"""

from __future__ import annotations

import json
import time
import uuid

from tunesmith.deploy.server.continuous_batching import GenRequest


def sse(obj) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, r: GenRequest) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": len(r.output_ids),
            "total_tokens": prompt_tokens + len(r.output_ids)}


def finish_reason(r: GenRequest) -> str:
    return "length" if r.finish_reason == "length" else "stop"


class _Responses:
    id_prefix = ""
    object = ""  # of a whole answer
    chunk_object = ""  # of a streamed chunk

    def __init__(self, model: str):
        self.model = model
        self.id = self.id_prefix + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def whole(self, r: GenRequest, prompt_tokens: int) -> dict:
        body = self._envelope(self.object, [{"index": 0, **self._answer(r), "logprobs": None,
                                             "finish_reason": finish_reason(r)}])
        return {**body, "usage": usage(prompt_tokens, r), "system_fingerprint": None}

    def chunk(self, text: str | None, finish: str | None = None) -> dict:
        return self._envelope(self.chunk_object, [{"index": 0, **self._delta(text), "logprobs": None,
                                                   "finish_reason": finish}])

    def usage_chunk(self, r: GenRequest, prompt_tokens: int) -> dict:
        return {**self._envelope(self.chunk_object, []), "usage": usage(prompt_tokens, r)}

    def opening_chunks(self) -> list[dict]:
        """Chunks sent before the first generated text."""
        return []

    def _answer(self, r: GenRequest) -> dict:
        raise NotImplementedError

    def _delta(self, text: str | None) -> dict:
        raise NotImplementedError


class ChatResponses(_Responses):
    id_prefix, object, chunk_object = "chatcmpl-", "chat.completion", "chat.completion.chunk"

    def _answer(self, r: GenRequest) -> dict:
        return {"message": {"role": "assistant", "content": r.text}}

    def _delta(self, text: str | None) -> dict:
        return {"delta": {} if text is None else {"content": text}}

    def opening_chunks(self) -> list[dict]:
        first = self.chunk("")
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return [first]


class CompletionResponses(_Responses):
    id_prefix, object, chunk_object = "cmpl-", "text_completion", "text_completion"

    def __init__(self, model: str, echo: str = ""):
        super().__init__(model)
        self.echo = echo  # the prompt, sent before the completion when the request asks for it

    def _answer(self, r: GenRequest) -> dict:
        return {"text": self.echo + r.text}

    def _delta(self, text: str | None) -> dict:
        return {"text": text or ""}

    def opening_chunks(self) -> list[dict]:
        return [self.chunk(self.echo)] if self.echo else []
