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
conversation (e.g. two user turns in a row), raises :class:`ChatTemplateError`.

Tool calling builds on this module next: messages in the OpenAI chat format (``tools``, assistant
``tool_calls``, ``role: tool`` replies) rendered with the model's own template when it supports
``tools``, otherwise with a documented Hermes/Qwen-style ``<tool_call>{json}</tool_call>`` fallback.
The ``tools`` argument is that seam; it is refused until then.

Torch-free at import: only the tokenizer object passed in is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.records import is_text_record
from tunesmith.errors import TunesmithError

# The message fields a chat template is given. Tool calling will add "tool_calls", "tool_call_id", "name".
TEMPLATE_FIELDS = ("role", "content")


class ChatTemplateError(TunesmithError):
    """The tokenizer has no chat template, or its template cannot render a conversation."""


def template_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template sees them: only :data:`TEMPLATE_FIELDS`, in order."""
    return [{k: m[k] for k in TEMPLATE_FIELDS} for m in messages]


def _tokenizer_name(tokenizer: Any) -> str:
    return Path(str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)).name


def _apply_template(tokenizer: Any, chats: list, *, add_generation_prompt: bool, tools: list | None) -> str | list[str]:
    """Render one conversation (a list of messages) or a batch (a list of conversations) to text."""
    if tools is not None:
        raise ChatTemplateError("tool definitions are not rendered yet", hint="leave out 'tools'")
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer {_tokenizer_name(tokenizer)} has no chat template, so conversations cannot be rendered",
            hint="use a chat/instruct model (one whose tokenizer_config.json has a chat_template), "
            "or give the data as text records ({\"text\": ...})",
        )
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(chats, tokenize=False, add_generation_prompt=add_generation_prompt)
    except (TemplateError, ValueError, TypeError, KeyError) as e:  # the template's own raise_exception, bad fields
        raise ChatTemplateError(f"the chat template cannot render this conversation: {e}") from None


def render_conversation(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False, tools: list | None = None
) -> str:
    """One conversation as text, with the assistant generation prompt at the end if asked."""
    return _apply_template(tokenizer, template_messages(messages), add_generation_prompt=add_generation_prompt, tools=tools)


def render_conversations(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]], *, add_generation_prompt: bool = False,
    tools: list | None = None,
) -> list[str]:
    """Many conversations as text in one template call (what length counting uses for speed)."""
    if not conversations:
        return []
    out = _apply_template(tokenizer, [template_messages(c) for c in conversations],
                          add_generation_prompt=add_generation_prompt, tools=tools)
    return [out] if isinstance(out, str) else list(out)


def encode_chat_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered conversations, tokenized as every chat record is (see :class:`RenderedRecord`)."""
    return [e.input_ids for e in encode_rendered(tokenizer, [RenderedRecord(t, is_chat=True) for t in texts])]


def render_prompt_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: list | None = None) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt: what a model continues."""
    return encode_chat_texts(tokenizer, [render_conversation(tokenizer, messages, add_generation_prompt=True, tools=tools)])[0]


def render_prompt_ids_batch(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]], *, tools: list | None = None
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
    return RenderedRecord(render_conversation(tokenizer, record["messages"]), is_chat=True)


def render_records(tokenizer: Any, records: Sequence[dict[str, Any]]) -> list[RenderedRecord]:
    """:func:`render_record` for many records, with one template call for all chat records."""
    chat_idx = [i for i, r in enumerate(records) if not is_text_record(r)]
    texts = render_conversations(tokenizer, [records[i]["messages"] for i in chat_idx])
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
