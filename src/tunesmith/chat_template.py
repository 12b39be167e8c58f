"""The one place a conversation or a record becomes the text and token ids a model sees.

Training (``train/tokenize.py``), length counting (``data/length.py``), generation
(``evaluate/generate.py``), serving (``deploy/server/app.py``) and dataset measurement
(``advise/dataset.py``) all render here, so an example is counted, trained on, evaluated and
served with the same template and the same special tokens.

How each kind of record becomes token ids (decided once, in :class:`RenderedRecord`):

- **chat records** (``messages``) are rendered with the tokenizer's own chat template. The template
  writes every special token the model expects (a BOS if the model uses one, turn markers, the
  end-of-turn token), so the text is tokenized with ``add_special_tokens=False`` and nothing is
  appended. These are exactly the ids the transformers call returns with ``tokenize=True``.
- **text records** (``text``, for domain adaptation) have no template: the text is tokenized with the
  tokenizer's own special tokens (e.g. Llama's BOS) and EOS is appended so the model learns to stop.

Only the message fields a template reads go to it (:data:`TEMPLATE_FIELDS`); tunesmith's own fields
(``weight``) stay behind. A tokenizer without a chat template, or a template that refuses a
conversation (e.g. two user turns in a row), raises :class:`ChatTemplateError` (the latter as its
subclass :class:`TemplateRefusal`).

**Tool calling.** A conversation with tools (record-level ``tools``, assistant ``tool_calls``, ``role: tool``
turns; see ``tunesmith.data.records``) is rendered by the model's own template with ``tools=`` when that
template supports tools (:func:`supports_tools`: it reads the ``tools`` variable and ``tool_calls``); calls
are then given with ``arguments`` as a JSON object, as Hugging Face templates expect. Otherwise it is first
rewritten into plain turns in the Hermes/Qwen ``<tool_call>{json}</tool_call>`` format of
:mod:`tunesmith.tool_calls` (tools in the system prompt, tool results as a user turn), and rendered as any
other conversation. A conversation without tools is rendered exactly as before.

Torch-free at import: only the tokenizer object passed in is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunesmith.data.records import is_text_record
from tunesmith.errors import TunesmithError
from tunesmith.tool_calls import fallback_messages, render_assistant_turn, turn_calls

# The message fields a chat template is given: for a conversation without tools, and with tools (native templates).
TEMPLATE_FIELDS = ("role", "content")
TOOL_TEMPLATE_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")

Tools = Sequence[dict[str, Any]] | None


class ChatTemplateError(TunesmithError):
    """The tokenizer has no chat template, or its template cannot render a conversation."""


class TemplateRefusal(ChatTemplateError):
    """The template cannot render these conversations (raises, or a tool call is malformed): a problem of
    the conversations, not of the tokenizer, so the data stage rejects the rows instead of stopping."""


def template_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template sees them: only :data:`TEMPLATE_FIELDS`, in order."""
    return [{k: m[k] for k in TEMPLATE_FIELDS} for m in messages]


def uses_tools(messages: Sequence[dict[str, Any]], tools: Tools) -> bool:
    """Whether a conversation needs tool rendering: tools declared, a call made or a tool result given."""
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template (its ``tool_use`` one, if it has several) renders tools and calls."""
    source = None
    if callable(getattr(tokenizer, "get_chat_template", None)) and getattr(tokenizer, "chat_template", None):
        try:
            source = tokenizer.get_chat_template(tools=[])
        except ValueError:  # several named templates and none is the default
            source = None
    elif isinstance(getattr(tokenizer, "chat_template", None), str):
        source = tokenizer.chat_template
    return isinstance(source, str) and _template_reads_tools(source)


@lru_cache(maxsize=16)
def _template_reads_tools(source: str) -> bool:
    """The template reads the ``tools`` variable and mentions ``tool_calls`` (so it writes calls itself)."""
    from jinja2 import Environment, TemplateSyntaxError, meta

    if "tool_calls" not in source:
        return False
    try:
        return "tools" in meta.find_undeclared_variables(Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source))
    except TemplateSyntaxError:  # tags only transformers knows (e.g. {% generation %}): look for the name itself
        return re.search(r"\btools\b", source) is not None


def _native_message(message: dict[str, Any]) -> dict[str, Any]:
    """A canonical message for a template that supports tools: calls carry ``arguments`` as a JSON object."""
    out = {k: message[k] for k in TOOL_TEMPLATE_FIELDS if k in message}
    if message.get("tool_calls"):
        out["tool_calls"] = [{"id": c["id"], "type": "function",
                              "function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
                             for c in message["tool_calls"]]
    return out


def _template_view(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Tools) -> tuple[list[dict[str, Any]], list | None]:
    """The messages and the ``tools=`` argument the template is given for one conversation."""
    if not uses_tools(messages, tools):
        return template_messages(messages), None
    if supports_tools(tokenizer):
        return [_native_message(m) for m in messages], (list(tools) if tools else None)
    return fallback_messages(messages, tools), None


def rendered_answer(tokenizer: Any, message: dict[str, Any]) -> str | None:
    """The text the template is given as an assistant turn's content, or None when the model's own template
    writes the turn's tool calls (then only the template knows their text)."""
    if not message.get("tool_calls"):
        return message["content"]
    if supports_tools(tokenizer):
        return None
    return render_assistant_turn(message["content"], turn_calls(message))


def _tokenizer_name(tokenizer: Any) -> str:
    return Path(str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)).name


def _apply_template(tokenizer: Any, chats: list[list[dict[str, Any]]], *, add_generation_prompt: bool, tools: list | None) -> list[str]:
    """Render a batch of conversations (each a list of template messages) that share one ``tools`` argument."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer {_tokenizer_name(tokenizer)} has no chat template, so conversations cannot be rendered",
            hint="use a chat/instruct model (one whose tokenizer_config.json has a chat_template), "
            "or give the data as text records ({\"text\": ...})",
        )
    from jinja2 import TemplateError

    try:
        out = tokenizer.apply_chat_template(chats, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
    except (TemplateError, ValueError, TypeError, KeyError) as e:  # the template's own raise_exception, bad fields
        raise TemplateRefusal(f"the chat template cannot render this conversation: {e}") from None
    return [out] if isinstance(out, str) else list(out)


def _render_many(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]], tools_each: Sequence[Tools], *, add_generation_prompt: bool
) -> list[str]:
    """Each conversation rendered with its own tools: one template call per distinct ``tools`` argument."""
    try:
        views = [_template_view(tokenizer, c, t) for c, t in zip(conversations, tools_each, strict=True)]
    except (ValueError, KeyError, TypeError) as e:  # a call without name/arguments, arguments that are not JSON
        raise TemplateRefusal(f"a tool call cannot be rendered: {type(e).__name__}: {e}",
                                hint="give each call a function name and its arguments as a JSON object") from None
    groups: dict[str, list[int]] = {}
    for i, (_, tools) in enumerate(views):
        groups.setdefault(json.dumps(tools, sort_keys=True) if tools else "", []).append(i)
    out: list[str] = [""] * len(views)
    for idx in groups.values():
        texts = _apply_template(tokenizer, [views[i][0] for i in idx], add_generation_prompt=add_generation_prompt,
                                tools=views[idx[0]][1])
        for i, text in zip(idx, texts, strict=True):
            out[i] = text
    return out


def render_conversation(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False, tools: Tools = None
) -> str:
    """One conversation as text, with the assistant generation prompt at the end if asked."""
    return _render_many(tokenizer, [messages], [tools], add_generation_prompt=add_generation_prompt)[0]


def render_conversations(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]], *, add_generation_prompt: bool = False,
    tools: Tools = None,
) -> list[str]:
    """Many conversations (sharing ``tools``) as text in one template call (what length counting uses for speed)."""
    if not conversations:
        return []
    return _render_many(tokenizer, conversations, [tools] * len(conversations), add_generation_prompt=add_generation_prompt)


def encode_chat_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered conversations, tokenized as every chat record is (see :class:`RenderedRecord`)."""
    return [e.input_ids for e in encode_rendered(tokenizer, [RenderedRecord(t, is_chat=True) for t in texts])]


def render_prompt_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: Tools = None) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt: what a model continues."""
    return encode_chat_texts(tokenizer, [render_conversation(tokenizer, messages, add_generation_prompt=True, tools=tools)])[0]


def render_prompt_ids_batch(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]], *, tools: Tools = None
) -> list[list[int]]:
    """:func:`render_prompt_ids` for many conversations, one template call and one tokenizer call."""
    return encode_chat_texts(tokenizer, render_conversations(tokenizer, conversations, add_generation_prompt=True, tools=tools))


# ---- records: what training feeds and what length counting counts ----------------------------------


@dataclass(frozen=True)
class RenderedRecord:
    """A record as the exact string training tokenizes, and how that string is tokenized."""

    text: str
    is_chat: bool

    @property
    def add_special_tokens(self) -> bool:
        """Text records get the tokenizer's own special tokens (e.g. BOS); a chat template writes its own."""
        return not self.is_chat

    @property
    def append_eos(self) -> bool:
        """Text records end with EOS so the model learns to stop; a chat template ends turns itself."""
        return not self.is_chat


@dataclass
class EncodedRecord:
    input_ids: list[int]
    offsets: list[tuple[int, int]] | None = None  # character span of each token in RenderedRecord.text


def render_record(tokenizer: Any, record: dict[str, Any]) -> RenderedRecord:
    if is_text_record(record):
        return RenderedRecord(record["text"], is_chat=False)
    return RenderedRecord(render_conversation(tokenizer, record["messages"], tools=record.get("tools")), is_chat=True)


def render_records(tokenizer: Any, records: Sequence[dict[str, Any]]) -> list[RenderedRecord]:
    """:func:`render_record` for many records, with one template call for all chat records (per set of tools)."""
    chat_idx = [i for i, r in enumerate(records) if not is_text_record(r)]
    texts = _render_many(tokenizer, [records[i]["messages"] for i in chat_idx], [records[i].get("tools") for i in chat_idx],
                         add_generation_prompt=False)
    out = [RenderedRecord(r["text"], is_chat=False) if is_text_record(r) else None for r in records]
    for i, text in zip(chat_idx, texts, strict=True):
        out[i] = RenderedRecord(text, is_chat=True)
    return out  # type: ignore[return-value]


def encode_rendered(tokenizer: Any, rendered: Sequence[RenderedRecord], *, return_offsets: bool = False) -> list[EncodedRecord]:
    """Token ids (and, if asked, character offsets) of rendered records; one tokenizer call per kind."""
    out: list[EncodedRecord | None] = [None] * len(rendered)
    eos = getattr(tokenizer, "eos_token_id", None)
    for is_chat in (True, False):
        idx = [i for i, r in enumerate(rendered) if r.is_chat == is_chat]
        if not idx:
            continue
        kind = rendered[idx[0]]  # every record of one kind is tokenized the same way
        enc = tokenizer([rendered[i].text for i in idx], add_special_tokens=kind.add_special_tokens,
                        return_offsets_mapping=return_offsets)
        for k, i in enumerate(idx):
            ids = list(enc["input_ids"][k])
            offsets = [tuple(o) for o in enc["offset_mapping"][k]] if return_offsets else None
            if kind.append_eos and eos is not None:
                ids.append(int(eos))
                if offsets is not None:
                    end = len(rendered[i].text)
                    offsets.append((end, end))
            out[i] = EncodedRecord(ids, offsets)
    return out  # type: ignore[return-value]


def record_token_ids(tokenizer: Any, records: Sequence[dict[str, Any]]) -> list[list[int]]:
    """The token ids training feeds for each record (before any truncation)."""
    return [e.input_ids for e in encode_rendered(tokenizer, render_records(tokenizer, records))]


def count_record_tokens(tokenizer: Any, records: Sequence[dict[str, Any]]) -> list[int]:
    """How many tokens training feeds for each record: the length of :func:`record_token_ids`."""
    return [len(ids) for ids in record_token_ids(tokenizer, records)]
