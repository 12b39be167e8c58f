"""Request bodies of the OpenAI-compatible API (the subset we serve) and OpenAI-style errors.

Every parameter OpenAI defines for these endpoints is declared here. A parameter the server does not
implement (penalties, ``n`` > 1, legacy ``functions``, ...) is accepted only with its no-op value; anything else
is a 400 that names the feature, never a 200 that silently ignores it. A parameter OpenAI does not define
is a 400 too (``extra="forbid"``). Booleans are strict (``"yes"`` is not true) and text must be valid
Unicode (a lone surrogate is refused here, not deep in the tokenizer).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from tunesmith.deploy.server.logprobs import MAX_TOP_LOGPROBS

Float = {"allow_inf_nan": False}
MAX_PROMPTS = 256  # prompts in one completions request (each is one engine row)


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- text --------------------------------------------------------------------------------------------


def _check_unicode(value: Any) -> Any:
    """Refuse text holding a lone UTF-16 surrogate (JSON ``"\\ud800"``): it is not Unicode text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"the text holds a lone surrogate (U+{ord(value[e.start]):04X} at character {e.start}), which is "
                "not valid Unicode; a JSON \\uD800-\\uDBFF escape must be followed by a \\uDC00-\\uDFFF one"
            ) from None
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_unicode(item)
    return value


Text = Annotated[str, BeforeValidator(_check_unicode)]


# -- parameters the server does not implement ---------------------------------------------------------


def _noop_only(tp: Any, feature: str, *noop: Any) -> Any:
    """A parameter accepted only with a no-op value (or null); any other value is a 400 naming ``feature``.

    The OpenAPI schema lists exactly the accepted values, so schema-driven clients and fuzzers see the truth.
    """

    def check(value):
        if value is None or any(type(value) is type(n) and value == n for n in noop):
            return value
        allowed = " or ".join(json.dumps(n) for n in noop)
        raise ValueError(f"{feature} is not supported by this server" + (f" (send {allowed} or leave it out)"
                                                                          if noop else " (leave it out)"))

    schema = {"enum": [*noop, None], "description": f"Not supported: {feature}. Only the no-op value is accepted."}
    return Annotated[tp | None, AfterValidator(check), WithJsonSchema(schema)]


NoPenalty = _noop_only(float, "presence/frequency penalties", 0.0)
NoLogitBias = _noop_only(dict[str, float], "logit_bias", {})


class _Req(BaseModel):
    # a parameter OpenAI does not define is an error, like OpenAI's "Unrecognized request argument"
    model_config = ConfigDict(extra="forbid")


class TextPart(_Req):
    type: Literal["text"]
    text: Text = Field(max_length=1_000_000)


# -- tools and structured outputs ---------------------------------------------------------------------

FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function names (written into the call format as is)
MAX_TOOLS = 128


def _check_schema(value: Any) -> Any:
    """A JSON Schema given in a request: valid Unicode and a valid schema (its grammar is compiled when used)."""
    from tunesmith.constrained_decoding import ConstraintError, OutputConstraint

    _check_unicode(value)
    try:
        OutputConstraint.json_schema(value)
    except ConstraintError as e:
        raise ValueError(e.message) from None
    return value


Schema = Annotated[dict[str, Any], AfterValidator(_check_schema)]


def _object_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and value.get("type") != "object":
        raise ValueError("a function's parameters must be a JSON Schema of \"type\": \"object\" (its arguments "
                         "are a JSON object)")
    return value


class FunctionDefinition(_Req):
    name: str = Field(pattern=FUNCTION_NAME, description="1 to 64 of a-z, A-Z, 0-9, _ and -")
    description: Text | None = Field(None, max_length=100_000)
    parameters: Annotated[Schema | None, AfterValidator(_object_schema)] = None
    strict: StrictBool | None = Field(None, description="Arguments always follow the schema when the call is forced.")


class Tool(_Req):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Req):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Req):
    type: Literal["function"]
    function: FunctionName


class CalledFunction(_Req):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: Text = Field(max_length=1_000_000, description="The arguments as JSON text of an object.")


class ToolCallParam(_Req):
    id: Text = Field(min_length=1, max_length=256)
    type: Literal["function"]
    function: CalledFunction


class JSONSchemaFormat(_Req):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME)
    description: Text | None = Field(None, max_length=100_000)
    schema_: Schema = Field(alias="schema")
    strict: StrictBool | None = None


class ChatMessage(_Req):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: _noop_only(str, "participant names ('name' in messages)") = None
    tool_calls: list[ToolCallParam] | None = Field(None, max_length=MAX_TOOLS, description="assistant messages only")
    tool_call_id: Text | None = Field(None, min_length=1, max_length=256, description="tool messages only")
    function_call: _noop_only(dict, "function calls in messages") = None
    refusal: _noop_only(str, "'refusal' in messages") = None
    audio: _noop_only(dict, "audio") = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_unicode(cls, v):
        return _check_unicode(v)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ResponseFormat(_Req):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if (self.json_schema is None) == (self.type == "json_schema"):
            raise ValueError("'json_schema' (with name and schema) is given with type 'json_schema', and only then")
        return self


class StreamOptions(_Req):
    include_usage: StrictBool = False


class _Sampling(_Req):
    model: Text = Field(min_length=1, max_length=128)
    temperature: float | None = Field(None, ge=0, le=2, **Float)
    top_p: float | None = Field(None, gt=0, le=1, **Float)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: _noop_only(int, "n > 1 (several choices per request)", 1) = 1
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: NoPenalty = None
    frequency_penalty: NoPenalty = None
    logit_bias: NoLogitBias = None
    user: Text | None = Field(None, max_length=256, description="An end-user id; recorded nowhere.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_unicode(cls, v):
        return _check_unicode(v)

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
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = Field(None, description="false: at most one call per answer.")
    functions: _noop_only(list[dict], "function calling ('functions')", []) = None
    function_call: _noop_only(str | dict, "function calling ('function_call')", "none", "auto") = None
    logprobs: StrictBool | None = Field(None, description="Return the log-probability of each content token.")
    top_logprobs: Annotated[int, Strict()] | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Most likely tokens to return at each position (needs logprobs).")
    modalities: _noop_only(list[str], "output modalities other than text", ["text"]) = None
    audio: _noop_only(dict, "audio output") = None
    prediction: _noop_only(dict, "predicted outputs ('prediction')") = None
    reasoning_effort: _noop_only(str, "reasoning_effort") = None
    verbosity: _noop_only(str, "verbosity", "medium") = None
    web_search_options: _noop_only(dict, "web search") = None
    store: _noop_only(StrictBool, "storing completions ('store')", False) = None
    metadata: dict[Text, Text] | None = Field(None, description="Accepted; stored nowhere.")
    service_tier: _noop_only(str, "service tiers", "auto", "default") = None
    prompt_cache_key: Text | None = Field(None, max_length=256, description="Accepted; no effect.")
    safety_identifier: Text | None = Field(None, max_length=256, description="Accepted; recorded nowhere.")

    def check_combinations(self) -> None:
        """Refuse parameter combinations that OpenAI refuses or that this server does not implement."""
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs: true", param="top_logprobs")
        if self.stream and self.logprobs:
            raise APIError(400, "logprobs with stream: true is not supported by this server (send stream: false)",
                           param="logprobs")


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
PROMPT_FORMS = ("a string, a list of strings, a list of token ids (integers >= 0) or a list of such lists, "
                f"with 1 to {MAX_PROMPTS} prompts and no empty list")


def _is_token_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(type(t) is int and t >= 0 for t in v)


class CompletionRequest(_Sampling):
    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)] | TokenIds
             | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]) = Field(
        description="The prompt(s): a string, a list of strings, a list of token ids, or a list of token-id lists. "
        "Each prompt is one choice of the answer, batched through the same engine.")
    max_tokens: int | None = Field(None, ge=0, le=1_000_000, description="0 only with echo (scores the prompt).")
    echo: StrictBool | None = False
    best_of: _noop_only(int, "best_of > 1", 1) = None
    suffix: _noop_only(str, "suffix (insertion)", "") = None
    logprobs: Annotated[int, Strict()] | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS,
        description="Return token logprobs with this many most likely alternatives per token (and the prompt's "
        "with echo).")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_form(cls, v):
        _check_unicode(v)
        if isinstance(v, str):
            return v
        if isinstance(v, list) and 0 < len(v) <= MAX_PROMPTS and (
            all(isinstance(x, str) for x in v) or _is_token_ids(v) or all(_is_token_ids(x) for x in v)
        ):
            return v
        raise ValueError(f"the prompt must be {PROMPT_FORMS}")

    def prompt_count(self) -> int:
        return 1 if isinstance(self.prompt, str) or isinstance(self.prompt[0], int) else len(self.prompt)

    def check_combinations(self) -> None:
        """Refuse parameter combinations that OpenAI refuses or that this server does not implement."""
        if self.max_tokens == 0 and not self.echo:
            raise APIError(400, "max_tokens: 0 is only allowed with echo: true (to score the prompt)",
                           param="max_tokens")
        if self.stream and self.logprobs is not None:
            raise APIError(400, "logprobs with stream: true is not supported by this server (send stream: false)",
                           param="logprobs")
        if self.stream and self.prompt_count() > 1:
            raise APIError(400, "stream: true with several prompts is not supported by this server: stream one "
                           "prompt per request, or send stream: false", param="prompt")


ONE_TOKENIZER = "Checked if given; one tokenizer serves the base model and every adapter."


class TokenizeRequest(_Req):
    """vLLM's ``/tokenize`` (completion form): lm-evaluation-harness counts tokens with it."""

    model: Text | None = Field(None, min_length=1, max_length=128, description=ONE_TOKENIZER)
    prompt: Text
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False


class DetokenizeRequest(_Req):
    """vLLM's ``/detokenize``."""

    model: Text | None = Field(None, min_length=1, max_length=128, description=ONE_TOKENIZER)
    tokens: list[Annotated[int, Strict(), Field(ge=0)]]


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
