"""Prompt token ids of a request: a chat rendered with the tokenizer's chat template, or a completion's text."""

from __future__ import annotations

from tunesmith.chat_template import ChatTemplateError, render_prompt_ids
from tunesmith.deploy.server.protocol import APIError, ChatMessage


def chat_prompt_ids(tokenizer, messages: list[ChatMessage]) -> list[int]:
    """The chat template applied to ``messages``, ending with the assistant's turn opened (400 if it refuses)."""
    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    try:
        ids = render_prompt_ids(tokenizer, conversation)
    except ChatTemplateError as e:
        raise APIError(400, e.message, param="messages") from None
    except Exception as e:  # noqa: BLE001 - the template rejects this conversation (e.g. role order)
        raise APIError(400, f"the chat template cannot render these messages: {e}", param="messages") from None
    return list(ids)


def completion_prompt_ids(tokenizer, text: str, pad_id: int) -> list[int]:
    """``text`` tokenised with the tokenizer's special tokens; an empty prompt is one BOS (or pad) token."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad_id]
    return ids
