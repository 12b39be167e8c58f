"""Request bodies of the OpenAI-compatible API (the subset we serve) and OpenAI-style errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Float = {"allow_inf_nan": False}


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown OpenAI parameters (user, logit_bias, ...) are ignored


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=1_000_000)


class ChatMessage(_Req):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object"]


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(_Req):
    model: str = Field(min_length=1, max_length=128)
    temperature: float | None = Field(None, ge=0, le=2, **Float)
    top_p: float | None = Field(None, gt=0, le=1, **Float)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int | None = Field(1, ge=1, le=1, description="Only n=1 is supported.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return v
        items = [v] if isinstance(v, str) else v
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s or len(s) > 256 for s in items):
            raise ValueError("stop sequences must be 1 to 256 characters")
        return v

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else ([self.stop] if isinstance(self.stop, str) else list(self.stop))


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    response_format: ResponseFormat | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="One prompt (a list must hold exactly one).")
    echo: bool | None = False

    @field_validator("prompt")
    @classmethod
    def _one(cls, v):
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


ERROR_RESPONSES = {
    s: {"description": d, "content": {"application/json": {"example": {"error": {"message": d}}}}}
    for s, d in (
        (400, "Invalid request"),
        (401, "Missing or invalid API key"),
        (404, "Unknown model"),
        (413, "Request body too large"),
        (429, "Too many concurrent requests"),
        (504, "Generation timed out"),
    )
}
