"""Structured outputs on `tunesmith serve` (response_format json_object / json_schema), held by a grammar in the
continuous-batching engine: on a random-weight model every answer is valid, or cut by max_tokens ("length")."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from support.adapters import one_torch_thread  # noqa: F401  (autouse fixture)
from support.serving import local_server, post_chat

ASK = [{"role": "user", "content": "Classify this ticket as JSON: the printer is on fire."}]


class Ticket(BaseModel):
    category: Literal["hardware", "software", "billing"]
    urgent: bool
    priority: int = Field(ge=1, le=5)
    summary: str = Field(max_length=24)
    tags: list[Literal["fire", "printer", "office"]] = Field(max_length=3)


NESTED = {"type": "object", "properties": {
    "customer": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 10},
        "tier": {"type": "string", "enum": ["free", "pro", "enterprise"]}}, "required": ["name", "tier"]},
    "items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
        "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"]}},
    "status": {"enum": ["open", "closed", None]},
    "flags": {"type": "array", "maxItems": 2, "items": {"type": "boolean"}}},
    "required": ["customer", "items", "status"]}


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    with local_server(tiny_model_dir, max_batch_size=16, batch_wait_ms=20) as s:
        yield s


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def in_parallel(fn, n: int) -> list:
    """``fn(i)`` for i in range(n), 16 at a time (so the engine batches them)."""
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(fn, range(n)))


@pytest.mark.slow
def test_parse_with_a_pydantic_model_gives_valid_objects_100_times(client):
    """The client's own parse (strict json_schema from the model) on random weights, sampling on. The schema is
    bounded (enums, integer range, maxLength, maxItems), so every answer closes within max_tokens."""
    def parse(seed):
        return client.chat.completions.parse(model="base", messages=ASK, response_format=Ticket, seed=seed,
                                             temperature=1.0, max_tokens=120).choices[0]

    for choice in in_parallel(parse, 100):
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, Ticket)
        Ticket.model_validate_json(choice.message.content)


def test_nested_schema_with_enums_and_arrays_is_always_followed(client):
    def create(seed):
        return client.chat.completions.create(
            model="base", messages=ASK, seed=seed, temperature=1.3, max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": NESTED}}).choices[0]

    for choice in in_parallel(create, 32):
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), NESTED)


def test_json_object_is_enforced(client):
    def create(seed):
        return client.chat.completions.create(model="base", messages=ASK, seed=seed, temperature=1.0, max_tokens=100,
                                              response_format={"type": "json_object"}).choices[0]

    for choice in in_parallel(create, 8):
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:  # free JSON may not close within max_tokens, but what there is is the start of an object
            assert choice.message.content.startswith("{")


def test_max_tokens_that_cut_the_json_give_finish_reason_length(client):
    r = client.chat.completions.create(
        model="base", messages=ASK, max_tokens=3, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": NESTED}})
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="base", messages=ASK, response_format=Ticket, max_tokens=3)


def test_logprobs_keep_working_with_a_schema(client):
    r = client.chat.completions.create(
        model="base", messages=ASK, max_tokens=60, temperature=0, logprobs=True, top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": Ticket.model_json_schema()}})
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_streamed_structured_answer_equals_the_whole_one(client):
    kw = {"model": "base", "messages": ASK, "max_tokens": 120, "temperature": 0,
          "response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": NESTED}}}
    whole = client.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                       if c.choices)
    assert streamed == whole
    jsonschema.validate(json.loads(streamed), NESTED)


def test_free_rows_batched_with_constrained_rows_are_unaffected(client):
    """A free row's greedy answer is the same alone and in a batch with constrained rows."""
    free = {"model": "base", "messages": [{"role": "user", "content": "Tell me about printers."}], "max_tokens": 24,
            "temperature": 0}
    alone = client.chat.completions.create(**free).choices[0].message.content
    answers: dict[str, str] = {}

    def run(name, **kw):
        answers[name] = client.chat.completions.create(**kw).choices[0].message.content

    threads = [threading.Thread(target=run, args=("free",), kwargs=free)] + [
        threading.Thread(target=run, args=(f"json{i}",), kwargs={
            "model": "base", "messages": ASK, "max_tokens": 60, "seed": i,
            "response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": NESTED}}})
        for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers["free"] == alone
    assert sorted(answers) == ["free", "json0", "json1", "json2", "json3"]  # every request was answered
    assert all(answers[f"json{i}"].startswith("{") for i in range(4))
    assert not alone.lstrip().startswith("{")  # (the free row really was free)


BAD = {
    "schema that is not a JSON Schema": ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 3}}},
                                         "response_format.json_schema.schema"),
    "json_schema without its schema object": ({"type": "json_schema"}, "response_format"),
    "schema with a name that is not a name": ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
                                              "response_format.json_schema.name"),
    "schema xgrammar cannot compile": ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "pattern": "(?<=a)b"}}}, "response_format"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_invalid_response_formats_are_400_naming_the_parameter(served, name):
    fmt, param = BAD[name]
    status, payload = post_chat(served[0], {"model": "base", "messages": ASK, "max_tokens": 4, "response_format": fmt})
    assert status == 400, payload
    assert payload["error"]["param"] == param, payload
