"""`tunesmith data capture`: a model's answers to your prompts, as a training file in OpenAI chat format.

Each prompt (:mod:`.capture_prompts`) is sent to an OpenAI-compatible ``/chat/completions`` endpoint (the retry
policy of utils/openai_http.py: 429 / 5xx / timeouts with exponential backoff, ``Retry-After`` respected), at most
``concurrency`` at a time, fewer while the server says 429 (utils/openai_http.py's ``InFlightLimit``: a server that
allows fewer requests per key than asked slows the capture down instead of failing it). Every answer is appended
to a journal beside the output (``<output>.journal.jsonl``, flushed and fsync'd per answer) under the hash of its request, before anything else happens to it, so a run killed
or interrupted at any point resumes where it stopped without paying for an answer twice: a request whose hash is in
the journal is never sent again.

Answers that fail the task's format check (a JSON Schema, a regex, or the answer-format class of the source data's
own answers: :func:`.answer_format.answer_format`) go to ``<output>.rejected.jsonl`` with their reason, not to the
training file. Tool calls are kept as ``tool_calls`` of the captured assistant turn; the tools a source conversation
declares are sent with it and kept on the captured row.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.answer_format import answer_format
from tunesmith.data.capture_prompts import Prompt, read_prompts
from tunesmith.errors import ConfigError
from tunesmith.utils.io import write_jsonl
from tunesmith.utils.openai_http import ChatEndpoint, InFlightLimit, request_key


@dataclass(frozen=True)
class CaptureOptions:
    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    max_tokens: int | None = None
    temperature: float = 0.0
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    price_input: float = 0.0  # per million prompt tokens
    price_output: float = 0.0  # per million completion tokens
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    send_schema: bool = False  # also ask for the schema as a structured output (response_format: json_schema)
    check_answer_format: bool = True  # quarantine answers of another class than the source data's answers


# ---- the journal ---------------------------------------------------------------------------------


class Journal:
    """Append-only JSONL of answered requests, by request hash; every append is flushed and fsync'd. A line cut short
    by a crash is ignored on reading (that answer is asked again: it was never acknowledged as kept)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").split("\n"):
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # the torn last line of a killed run
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run, closed by close()
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            self._fh.write("\n")  # start after the torn line

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.entries[entry["key"]] = entry

    def close(self) -> None:
        self._fh.close()


# ---- the format check ----------------------------------------------------------------------------


class AnswerCheck:
    """Why an answer is not fit for training (None: it is): JSON Schema, regex, or the source data's answer class."""

    def __init__(self, opts: CaptureOptions, prompts: list[Prompt]):
        self.regex = re.compile(opts.regex) if opts.regex else None
        self.validator = None
        if opts.json_schema is not None:
            import jsonschema

            cls = jsonschema.validators.validator_for(opts.json_schema)
            try:
                cls.check_schema(opts.json_schema)
            except jsonschema.SchemaError as e:
                raise ConfigError(f"--json-schema is not a valid JSON Schema: {e.message}") from None
            self.validator = cls(opts.json_schema)
        formats = Counter(answer_format(p.reference) for p in prompts if p.reference)
        self.expected = formats.most_common(1)[0][0] if formats and opts.check_answer_format else None

    def reason(self, message: dict[str, Any]) -> str | None:
        if message.get("tool_calls"):
            return None  # a call is checked by the data stage against the declared tools
        text = message.get("content") or ""
        if not text.strip():
            return "empty answer"
        if self.validator is not None:
            try:
                doc = json.loads(text)
            except ValueError as e:
                return f"not JSON (the --json-schema check): {e}"
            err = next(iter(self.validator.iter_errors(doc)), None)
            if err is not None:
                return f"fails the JSON Schema at {'/'.join(map(str, err.absolute_path)) or '(root)'}: {err.message}"
        if self.regex is not None and not self.regex.fullmatch(text.strip()):
            return f"does not match --regex {self.regex.pattern!r}"
        if self.expected is not None and (got := answer_format(text)) != self.expected:
            return f"answer format is {got}, the source data's answers are {self.expected} (answer_format)"
        return None


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Running totals: answered now, taken from the journal, failed; tokens and cost of the answers paid for now."""

    sent: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    throttled: int = 0  # 429 answers (each retried)
    lowest_concurrency: int | None = None  # the in-flight limit's lowest value, when a 429 lowered it

    def cost(self, opts: CaptureOptions) -> float:
        return (self.prompt_tokens * opts.price_input + self.completion_tokens * opts.price_output) / 1e6


@dataclass(frozen=True)
class CaptureResult:
    written: int
    rejected: int
    tally: Tally
    output: Path
    rejected_path: Path
    journal: Path


def request_body(prompt: Prompt, opts: CaptureOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "messages": prompt.messages, "temperature": opts.temperature}
    if opts.max_tokens:
        body["max_tokens"] = opts.max_tokens
    if prompt.tools:
        body["tools"] = prompt.tools
        if prompt.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = prompt.parallel_tool_calls
    if opts.send_schema and opts.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": opts.json_schema, "strict": True}}
    return body


def answer_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The assistant turn of a response, in OpenAI chat format (tool calls kept as such)."""
    msg = payload["choices"][0]["message"]
    out: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id") or f"call_{k}", "type": "function",
                              "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or "{}"}}
                             for k, c in enumerate(msg["tool_calls"])]
    return out


def _ask(endpoint: ChatEndpoint, journal: Journal, key: str, prompt: Prompt, body: dict[str, Any], *,
         limit: InFlightLimit | None = None) -> tuple[dict | None, str | None, int]:
    """(journal entry, error, 429s met): one request, journaled the moment it is answered."""
    reply = endpoint.post(body, limit=limit)
    if reply.payload is None:
        return None, reply.error, reply.throttled
    try:
        message = answer_message(reply.payload)
    except (KeyError, IndexError, TypeError):
        return None, f"malformed response: {str(reply.payload)[:200]}", reply.throttled
    entry = {"key": key, "id": prompt.id, "message": message, "usage": reply.payload.get("usage") or {},
             "model": reply.payload.get("model"), "attempts": reply.attempts}
    journal.append(entry)
    return entry, None, reply.throttled


def _run_requests(todo: list[tuple[str, Prompt, dict]], endpoint: ChatEndpoint, journal: Journal, opts: CaptureOptions,
                  tally: Tally, on_done: Callable[[], None]) -> None:
    """At most ``opts.concurrency`` requests in flight, fewer while the server answers 429 (:class:`InFlightLimit`
    gates every attempt, retries included); Ctrl-C cancels what has not started and waits for the requests in flight
    (already being paid for: their answers are journaled)."""
    pool = ThreadPoolExecutor(max_workers=opts.concurrency)
    limit = InFlightLimit(opts.concurrency)
    pending: set[Future] = set()
    queue: Iterator[tuple[str, Prompt, dict]] = iter(todo)
    try:
        for item in queue:
            pending.add(pool.submit(_ask, endpoint, journal, *item, limit=limit))
            if len(pending) >= opts.concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                _collect(done, tally, on_done)
        done, _ = wait(pending)
        _collect(done, tally, on_done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if limit.lowest < limit.ceiling:
            tally.lowest_concurrency = limit.lowest


def _collect(done: set[Future], tally: Tally, on_done: Callable[[], None]) -> None:
    for f in done:
        entry, error, throttled = f.result()
        tally.throttled += throttled
        if entry is None:
            tally.failed += 1
            tally.errors.append(error or "unknown error")
        else:
            tally.sent += 1
            tally.prompt_tokens += int(entry["usage"].get("prompt_tokens") or 0)
            tally.completion_tokens += int(entry["usage"].get("completion_tokens") or 0)
        on_done()


def capture_paths(output: Path) -> tuple[Path, Path]:
    """(journal, quarantine) beside the output file."""
    return output.with_name(output.name + ".journal.jsonl"), output.with_name(output.name + ".rejected.jsonl")


def capture(source: Path, output: Path, opts: CaptureOptions, *, fmt: str = "auto", columns: dict[str, str] | None = None,
            progress: Callable[[int, Tally], Callable[[], None]] | None = None) -> CaptureResult:
    """Capture the answers to every prompt of ``source`` into ``output`` (see the module docstring).
    ``progress(total, tally)`` returns the callback called after each request."""
    prompts, bad_rows = read_prompts(source, fmt=fmt, columns=columns)
    check = AnswerCheck(opts, prompts)
    endpoint = ChatEndpoint(opts.base_url, opts.api_key, timeout_s=opts.timeout_s, max_retries=opts.max_retries,
                            backoff_s=opts.backoff_s, name=f"capture {opts.model}")
    output.parent.mkdir(parents=True, exist_ok=True)
    journal_path, rejected_path = capture_paths(output)
    journal = Journal(journal_path)
    tally = Tally()
    try:
        keyed = [(request_key(endpoint.url, body), p, body) for p in prompts for body in [request_body(p, opts)]]
        todo = [k for k in dict.fromkeys(k for k, _, _ in keyed) if k not in journal.entries]
        tally.cached = len(keyed) - len(todo)
        first = {k: (p, b) for k, p, b in reversed(keyed)}
        on_done = progress(len(todo), tally) if progress else (lambda: None)
        _run_requests([(k, *first[k]) for k in todo], endpoint, journal, opts, tally, on_done)
    finally:
        journal.close()
    rows, rejected = [], [r.as_row(str(source)) for r in bad_rows]
    for key, prompt, _ in keyed:
        entry = journal.entries.get(key)
        if entry is None:
            rejected.append({"id": prompt.id, "kind": "request_failed", "reason": "no answer (the request failed; re-run to retry)"})
            continue
        row = {"messages": [*prompt.messages, entry["message"]]}
        if prompt.tools:
            row["tools"] = prompt.tools
        why = check.reason(entry["message"])
        if why is not None:
            rejected.append({"id": prompt.id, "kind": "answer_format", "reason": why, "answer": entry["message"]})
            continue
        rows.append(row)
    write_jsonl(output, rows)
    write_jsonl(rejected_path, rejected)
    return CaptureResult(len(rows), len(rejected), tally, output, rejected_path, journal_path)
