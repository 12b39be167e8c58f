"""Constrained decoding: outputs held to a JSON Schema, any JSON, a regular expression, one of a set of choices, or
an xgrammar structural tag (tool calls: :mod:`tunesmith.tool_call_grammar`).

xgrammar (the grammar engine of vLLM and SGLang) does the work. A :class:`GrammarCompiler` compiles a
constraint against one tokenizer's vocabulary (compiled grammars are cached by xgrammar, keyed by the
constraint's text); each generated row then keeps its own matcher, a :class:`RowGrammar`, and before
every sampling step :func:`mask_logits` sets the logits of the tokens the row's grammar does not allow
next to ``-inf``. End-of-sequence tokens are allowed only where the grammar may end, so a constrained
row stops exactly when its output is complete; after accepting one the matcher is finished.

Rows are independent, so one batch may mix constraints and unconstrained rows (``None``), and rows may
join and leave between steps (continuous batching)::

    compiler = GrammarCompiler(tokenizer, vocab_size=model_vocab_size(model), stop_token_ids=eos_ids)
    grammar = compiler.compile(OutputConstraint.json_schema(schema))   # ConstraintError for a bad one
    row = grammar.start()                  # per request / per row
    mask_logits(logits, [row, None, ...])  # each step, before sampling
    row.accept(token)                      # after sampling (accept_tokens(rows, tokens): the whole batch);
                                           # row.finished once it took an end token

:class:`GrammarLogitsProcessor` wraps the same for ``transformers``' ``model.generate``.

JSON is generated compactly (``{"a": 1, "b": [2, 3]}``: xgrammar's ``any_whitespace=False``): free
whitespace lets a weak model fill its token budget with blanks, and the output is the same JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import LogitsProcessor

from tunesmith.errors import TunesmithError

ConstraintKind = Literal["json_schema", "json", "regex", "choice", "structural_tag"]
CONSTRAINT_KINDS: tuple[str, ...] = ("json_schema", "json", "regex", "choice", "structural_tag")
_NAMED_GROUP = re.compile(r"(?<!\\)\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


class ConstraintError(TunesmithError):
    """A constraint that cannot be used: not a valid JSON Schema / regex / choice list, or not compilable."""


@dataclass(frozen=True)
class OutputConstraint:
    """What an output must be. ``spec`` is the constraint's text: canonical JSON of the schema, the regex,
    or the JSON list of choices; for ``json`` '' (any value) or 'object'. Build with the class methods; equal
    constraints are equal."""

    kind: ConstraintKind
    spec: str = ""

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> OutputConstraint:
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as e:
                raise ConstraintError(f"the JSON Schema is not valid JSON: {e}") from None
        if not isinstance(schema, dict):
            raise ConstraintError(f"a JSON Schema must be an object, got {type(schema).__name__}")
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            raise ConstraintError(f"not a valid JSON Schema at {where}: {e.message}") from None
        return cls("json_schema", json.dumps(schema, ensure_ascii=False))

    @classmethod
    def json(cls, *, object_only: bool = False) -> OutputConstraint:
        """Any JSON value, or with ``object_only`` any JSON object (OpenAI's ``json_object``)."""
        return cls("json", "object" if object_only else "")

    @classmethod
    def regex(cls, pattern: str) -> OutputConstraint:
        """The whole output matches ``pattern``. Python's named groups ``(?P<name>...)`` become plain groups;
        what xgrammar's regex dialect lacks (e.g. ``\\b``, lookarounds) is a :class:`ConstraintError` at compile."""
        if not pattern:
            raise ConstraintError("the regex is empty")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConstraintError(f"not a valid regular expression: {e}") from None
        return cls("regex", _NAMED_GROUP.sub("(", pattern))

    @classmethod
    def choice(cls, options: Sequence[str]) -> OutputConstraint:
        """The output is exactly one of ``options`` (order kept, duplicates dropped)."""
        opts = list(dict.fromkeys(options))
        bad = [o for o in opts if not isinstance(o, str) or not o]
        if not opts or bad:
            raise ConstraintError("a choice needs at least one option, each a non-empty string"
                                  + (f" (got {bad[0]!r})" if bad else ""))
        return cls("choice", json.dumps(opts, ensure_ascii=False))

    @classmethod
    def structural_tag(cls, spec: str) -> OutputConstraint:
        """An xgrammar structural tag (its JSON text): tagged sections such as tool calls, each with its own
        content grammar (built by :mod:`tunesmith.tool_call_grammar`); checked when compiled."""
        return cls("structural_tag", spec)

    def describe(self) -> str:
        if self.kind == "json":
            return "any JSON object" if self.spec == "object" else "any JSON value"
        if self.kind == "choice":
            opts = json.loads(self.spec)
            shown = ", ".join(opts[:8]) + (f", ... ({len(opts)} options)" if len(opts) > 8 else "")
            return f"one of: {shown}"
        if self.kind == "structural_tag":
            return f"structural tag {self.spec}"
        return f"{'JSON Schema' if self.kind == 'json_schema' else 'regex'} {self.spec}"


class RowGrammar:
    """One row's grammar state: which tokens may come next, and whether the output is finished.

    ``also_allowed``: a bitmask row ANDed with the grammar's (see :meth:`GrammarCompiler.compile`), or None.
    """

    __slots__ = ("matcher", "vocab_size", "also_allowed")

    def __init__(self, matcher, vocab_size: int, also_allowed: torch.Tensor | None = None):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.also_allowed = also_allowed

    def accept(self, token_id: int) -> None:
        """Advance by the token the row produced (which a mask from :func:`mask_logits` allowed)."""
        if not self.matcher.accept_token(int(token_id)):
            raise RuntimeError(f"token {token_id} does not follow the row's grammar (was its mask applied?)")

    @property
    def finished(self) -> bool:
        """The grammar is complete and an end token was accepted: the row must stop."""
        return self.matcher.is_terminated()


@dataclass(frozen=True, eq=False)
class CompiledConstraint:
    """A constraint compiled for one vocabulary; ``start()`` gives a fresh row state (cheap)."""

    constraint: OutputConstraint
    grammar: Any  # xgrammar.CompiledGrammar
    stop_token_ids: tuple[int, ...]
    vocab_size: int
    also_allowed: torch.Tensor | None = None  # int32 bitmask row ANDed with the grammar's at every step

    def start(self) -> RowGrammar:
        import xgrammar as xgr

        return RowGrammar(xgr.GrammarMatcher(self.grammar), self.vocab_size, self.also_allowed)


def model_vocab_size(model) -> int:
    """Width of the model's logits (its LM head), which may differ from the tokenizer's length."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(model.config.vocab_size)


class GrammarCompiler:
    """Compiles constraints for one tokenizer and logits width; compiled grammars are cached by xgrammar.

    ``vocab_size`` is the width of the model's logits (:func:`model_vocab_size`): ids past the tokenizer's
    vocabulary (padding rows of the LM head) are never allowed, tokenizer ids past it are never produced.
    ``stop_token_ids`` must be the ids that end a row in the generator, so that the end the grammar allows
    is the end the generator sees. ``cache_limit_bytes`` bounds the cache (a server compiles clients' schemas).

    JSON constraints also never take a token with a raw control character (U+0000-U+001F): compact JSON has
    none, and xgrammar 0.2's JSON Schema strings with ``minLength``/``maxLength`` let them through (invalid
    JSON; upstream issue mlc-ai/xgrammar#800).
    """

    def __init__(self, tokenizer, *, vocab_size: int, stop_token_ids: Sequence[int],
                 cache_limit_bytes: int = 256 * 2**20, max_threads: int = 2):
        import xgrammar as xgr

        if not stop_token_ids:
            raise ValueError("constrained decoding needs at least one stop token id")
        self.vocab_size = int(vocab_size)
        self.stop_token_ids = tuple(sorted({int(t) for t in stop_token_ids}))
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size,
                                                  stop_token_ids=list(self.stop_token_ids))
        self._compiler = xgr.GrammarCompiler(info, max_threads=max_threads, cache_enabled=True,
                                             cache_limit_bytes=cache_limit_bytes)
        self._no_control_chars = _tokens_without(info.decoded_vocab, self.vocab_size, range(0x20),
                                                 keep=self.stop_token_ids)

    def compile(self, constraint: OutputConstraint) -> CompiledConstraint:
        """The compiled grammar of ``constraint`` (from the cache when compiled before)."""
        c = self._compiler
        try:
            if constraint.kind == "json_schema":
                grammar = c.compile_json_schema(constraint.spec, any_whitespace=False)
            elif constraint.kind == "json":
                schema = '{"type": "object"}' if constraint.spec == "object" else "{}"
                grammar = c.compile_json_schema(schema, any_whitespace=False, strict_mode=False)
            elif constraint.kind == "regex":
                grammar = c.compile_regex(constraint.spec)
            elif constraint.kind == "structural_tag":
                grammar = c.compile_structural_tag(constraint.spec)
            elif constraint.kind == "choice":
                # EBNF string literals take JSON's escapes; raw UTF-8 is kept as is
                options = json.loads(constraint.spec)
                literals = " | ".join(json.dumps(o, ensure_ascii=False) for o in options)
                grammar = c.compile_grammar(f"root ::= {literals}")
            else:
                raise ConstraintError(f"unknown constraint kind {constraint.kind!r}: use one of {CONSTRAINT_KINDS}")
        except (RuntimeError, ValueError) as e:
            if isinstance(e, ConstraintError):
                raise
            raise ConstraintError(f"cannot compile the {constraint.kind.replace('_', ' ')} constraint: "
                                  f"{_xgrammar_message(e)}") from None
        also = self._no_control_chars if constraint.kind in ("json_schema", "json") else None
        return CompiledConstraint(constraint, grammar, self.stop_token_ids, self.vocab_size, also)


def _tokens_without(decoded_vocab: list[bytes], vocab_size: int, banned_bytes, keep: Sequence[int]) -> torch.Tensor:
    """xgrammar bitmask row (bit ``i`` = token ``i`` allowed) of the tokens none of whose bytes is banned."""
    import numpy as np
    import xgrammar as xgr

    banned = bytes(banned_bytes)
    ok = np.ones(xgr.get_bitmask_shape(1, vocab_size)[1] * 32, dtype=bool)
    for i, token in enumerate(decoded_vocab[:vocab_size]):
        if any(b in banned for b in token):
            ok[i] = False  # (ids past the tokenizer's vocabulary stay allowed here: the grammar never allows them)
    ok[list(keep)] = True
    return torch.from_numpy(np.packbits(ok, bitorder="little").view(np.int32).copy())


def _xgrammar_message(e: Exception) -> str:
    """xgrammar's C++ errors start with '[time] file.cc:line: '; keep the sentence after it."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", text)


def mask_logits(logits: torch.Tensor, rows: Sequence[RowGrammar | None]) -> torch.Tensor:
    """Set, in place, the logits of tokens that a row's grammar does not allow next to ``-inf``.

    ``logits`` is ``[len(rows), vocab]`` on any device; ``None`` rows and finished rows are left as they
    are. The masks are filled on the CPU by xgrammar and applied there with torch, or on an accelerator by
    xgrammar's kernel. Returns ``logits``.
    """
    import xgrammar as xgr

    if logits.shape[0] != len(rows):
        raise ValueError(f"{logits.shape[0]} rows of logits for {len(rows)} grammar rows")
    active = [i for i, r in enumerate(rows) if r is not None and not r.finished]
    if not active:
        return logits
    wrong = {rows[i].vocab_size for i in active} - {logits.shape[-1]}
    if wrong:
        raise ValueError(f"logits have {logits.shape[-1]} columns but a grammar was compiled for {wrong.pop()}: "
                         "build the GrammarCompiler with vocab_size=model_vocab_size(model)")
    bitmask = xgr.allocate_token_bitmask(len(rows), logits.shape[-1])
    for i in active:  # (xgrammar's BatchGrammarMatcher was slower for 16 rows: its thread pool costs more than this)
        rows[i].matcher.fill_next_token_bitmask(bitmask, i)
    extra: dict[int, tuple[torch.Tensor, list[int]]] = {}  # rows sharing one extra mask: one tensor op
    for i in active:
        if rows[i].also_allowed is not None:
            extra.setdefault(id(rows[i].also_allowed), (rows[i].also_allowed, []))[1].append(i)
    for mask, idx in extra.values():
        bitmask[idx] &= mask
    if logits.device.type == "cpu":
        _apply_bitmask_cpu(logits, bitmask, active)
    else:  # xgrammar's kernel for the device (Triton on CUDA)
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device, non_blocking=True), indices=active)
    return logits


# what one byte of an xgrammar bitmask (bit j = token 8k + j allowed, little-endian) adds to its 8 logits: 0 or -inf
_BYTE_PENALTY = torch.where(
    ((torch.arange(256, dtype=torch.int32).unsqueeze(-1) >> torch.arange(8, dtype=torch.int32)) & 1).bool(),
    0.0, float("-inf"))


def _apply_bitmask_cpu(logits: torch.Tensor, bitmask: torch.Tensor, idx: list[int]) -> None:
    """``xgrammar.apply_token_bitmask_inplace`` on CPU, vectorised: each byte of the bitmask looks up the penalties
    of its 8 tokens (0 or -inf) in a 256 x 8 table, one gather, and the penalties are added in place.
    For 16 rows x 49,152 tokens on one thread this takes ~1.3 ms, where unpacking the bits with int32 shifts and a
    boolean ``masked_fill_`` took ~3.7 ms and xgrammar's CPU kernel ~3-7 ms (tests check they give the same logits)."""
    rows = bitmask if len(idx) == bitmask.shape[0] else bitmask[idx]
    penalty = _BYTE_PENALTY[rows.contiguous().view(torch.uint8).long()].view(len(idx), -1)[:, : logits.shape[-1]]
    if penalty.dtype != logits.dtype:
        penalty = penalty.to(logits.dtype)
    if len(idx) == logits.shape[0]:
        logits.add_(penalty)
    else:
        logits[idx] += penalty


def accept_tokens(rows: Sequence[RowGrammar | None], tokens: Sequence[int]) -> None:
    """Advance every unfinished row's grammar by its token (one call into xgrammar for the batch)."""
    import xgrammar as xgr

    active = [i for i, r in enumerate(rows) if r is not None and not r.finished]
    if not active:
        return
    ok = xgr.BatchGrammarMatcher.batch_accept_token([rows[i].matcher for i in active], [int(tokens[i]) for i in active])
    bad = [i for i, accepted in zip(active, ok, strict=True) if not accepted]
    if bad:
        raise RuntimeError(f"token {tokens[bad[0]]} of row {bad[0]} does not follow the row's grammar "
                           "(was its mask applied?)")


class GrammarLogitsProcessor(LogitsProcessor):
    """``model.generate(..., logits_processor=[GrammarLogitsProcessor(rows)])``: one grammar (or None) per row.

    At each step it first advances every unfinished row's grammar by the token the row produced at the
    previous step, then masks the logits. The generator's end tokens must be the grammars' stop tokens
    (a row's grammar finishes when it accepts one, and the generator ends the row there). One use only:
    the row states live on in ``rows``.
    """

    def __init__(self, rows: Sequence[RowGrammar | None]):
        self.rows = list(rows)
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._started:
            accept_tokens(self.rows, input_ids[:, -1].tolist())
        self._started = True
        return mask_logits(scores, self.rows)
