"""Response bodies of the OpenAI API: a whole answer, and the chunks of a streamed one.

``ChatResponses`` and ``CompletionResponses`` build the two endpoints' shapes for one request (its id,
creation time and model name); the routes and the streaming loop never branch on the endpoint. A whole answer
has one choice per engine row (several for a completions request with a list of prompts); logprobs objects
come from logprob_bodies.py. With tools, a chat answer's text is read as content and tool calls (tools.py).
"""

from __future__ import annotations

import json
import time
import uuid

from tunesmith.deploy.server.continuous_batching import GenRequest
from tunesmith.deploy.server.logprob_bodies import chat_logprobs, completion_logprobs
from tunesmith.deploy.server.prompts import CompletionPrompt
from tunesmith.deploy.server.token_text import TokenTexts
from tunesmith.deploy.server.tools import ToolCallStream, answer_parts


def sse(obj) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(r: GenRequest, calls: bool = False) -> str:
    """OpenAI's finish reason: ``length`` (budget spent), ``tool_calls`` (the answer ends with calls) or ``stop``."""
    if r.finish_reason == "length":
        return "length"
    return "tool_calls" if calls else "stop"


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

    def whole(self, rows: list[GenRequest], prompt_tokens: int) -> dict:
        """The answer to a request whose engine rows (one per prompt) are ``rows``."""
        choices = []
        for i, r in enumerate(rows):
            answer = self._answer(i, r)
            calls = bool(answer.get("message", {}).get("tool_calls"))
            choices.append({"index": i, **answer, "logprobs": self._logprobs(i, r),
                            "finish_reason": finish_reason(r, calls)})
        completion_tokens = sum(len(r.output_ids) for r in rows)
        return {**self._envelope(self.object, choices), "usage": usage(prompt_tokens, completion_tokens),
                "system_fingerprint": None}

    def chunk(self, text: str | None, finish: str | None = None) -> dict:
        return self._envelope(self.chunk_object, [{"index": 0, **self._delta(text), "logprobs": None,
                                                   "finish_reason": finish}])

    def delta_chunks(self, text: str) -> list[dict]:
        """The chunks of newly generated text (none while it is held back)."""
        return [self.chunk(text)] if text else []

    def closing_chunks(self, r: GenRequest) -> list[dict]:
        """The chunks once generation ended: what was held back, then the finish reason."""
        return [self.chunk(None, finish_reason(r))]

    def usage_chunk(self, r: GenRequest, prompt_tokens: int) -> dict:
        return {**self._envelope(self.chunk_object, []), "usage": usage(prompt_tokens, len(r.output_ids))}

    def opening_chunks(self) -> list[dict]:
        """Chunks sent before the first generated text."""
        return []

    def _answer(self, i: int, r: GenRequest) -> dict:
        raise NotImplementedError

    def _logprobs(self, i: int, r: GenRequest) -> dict | None:
        return None

    def _delta(self, text: str | None) -> dict:
        raise NotImplementedError


class ChatResponses(_Responses):
    id_prefix, object, chunk_object = "chatcmpl-", "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str, logprobs: TokenTexts | None = None, *, parse_calls: bool = False):
        super().__init__(model)
        self.texts = logprobs  # set when the request asks for logprobs
        self.parse_calls = parse_calls  # tools were given (and tool_choice is not none): read calls from the text
        self.stream = ToolCallStream() if parse_calls else None
        self.streamed_calls = False

    def _answer(self, i: int, r: GenRequest) -> dict:
        content, calls = answer_parts(r.text, self.parse_calls)
        message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return {"message": message}

    def delta_chunks(self, text: str) -> list[dict]:
        if self.stream is None:
            return super().delta_chunks(text)
        return [self._delta_chunk(d) for d in self.stream.feed(text)]

    def closing_chunks(self, r: GenRequest) -> list[dict]:
        if self.stream is None:
            return super().closing_chunks(r)
        out = [self._delta_chunk(d) for d in self.stream.close()]
        return out + [self.chunk(None, finish_reason(r, self.streamed_calls))]

    def _delta_chunk(self, delta: dict) -> dict:
        self.streamed_calls = self.streamed_calls or "tool_calls" in delta
        chunk = self.chunk(None)
        chunk["choices"][0]["delta"] = delta
        return chunk

    def _logprobs(self, i: int, r: GenRequest) -> dict | None:
        if self.texts is None:
            return None
        return chat_logprobs(self.texts, r.output_logprobs[: len(r.output_ids)])  # the end-of-turn token is not content

    def _delta(self, text: str | None) -> dict:
        return {"delta": {} if text is None else {"content": text}}

    def opening_chunks(self) -> list[dict]:
        first = self.chunk("")
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return [first]


class CompletionResponses(_Responses):
    id_prefix, object, chunk_object = "cmpl-", "text_completion", "text_completion"

    def __init__(self, model: str, prompts: list[CompletionPrompt], *, echo: bool = False,
                 logprobs: TokenTexts | None = None):
        super().__init__(model)
        self.prompts = prompts
        self.echo = echo  # the prompt is sent before the completion
        self.texts = logprobs  # set when the request asks for logprobs

    def _echo(self, i: int) -> str:
        return self.prompts[i].text if self.echo else ""

    def _answer(self, i: int, r: GenRequest) -> dict:
        return {"text": self._echo(i) + r.text}

    def _logprobs(self, i: int, r: GenRequest) -> dict | None:
        if self.texts is None:
            return None
        return completion_logprobs(self.texts, prompt_ids=self.prompts[i].ids if self.echo else None,
                                   prompt_entries=r.prompt_logprobs, output_entries=r.output_logprobs,
                                   completion_start=len(self._echo(i)))

    def _delta(self, text: str | None) -> dict:
        return {"text": text or ""}

    def opening_chunks(self) -> list[dict]:
        return [self.chunk(self._echo(0))] if self._echo(0) else []  # streams have one prompt
