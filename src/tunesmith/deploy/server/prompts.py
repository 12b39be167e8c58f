"""Prompt token ids of a request: a chat (with its tools) rendered by tunesmith.chat_template, or a completion's
prompts (text, or token ids taken as they are)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunesmith.chat_template import ChatTemplateError, render_prompt_ids
from tunesmith.deploy.server.protocol import APIError


def _refuse_control_tokens(tokenizer, texts: list[tuple[str, str]]) -> None:
    """Request text must stay text: a special token written in it (``<|im_end|>``, ``<|im_start|>``) would be
    tokenised as the real control token and could end a turn or forge one (a 400, never applied).
    ``texts``: (parameter, text) pairs (message contents, call arguments, tool definitions)."""
    specials = [t for t in tokenizer.all_special_tokens if t]
    for param, text in texts:
        at = {t: text.find(t) for t in specials}
        found = min((t for t, i in at.items() if i >= 0), key=lambda t: (at[t], -len(t)), default=None)  # the first
        if found is not None:
            raise APIError(400, f"{param} contains the model's control token {found!r}; request text may not "
                                "hold special tokens of the chat template (remove or escape it)", param=param)


def _request_texts(conversation: list[dict], tools: list[dict] | None) -> list[tuple[str, str]]:
    texts = []
    for i, m in enumerate(conversation):
        texts.append((f"messages[{i}].content", m["content"]))
        for j, call in enumerate(m.get("tool_calls") or ()):
            texts.append((f"messages[{i}].tool_calls[{j}].function.arguments", call["function"]["arguments"]))
    for i, tool in enumerate(tools or ()):
        texts.append((f"tools[{i}]", json.dumps(tool, ensure_ascii=False)))
    return texts


def chat_prompt_ids(tokenizer, conversation: list[dict], tools: list[dict] | None = None) -> list[int]:
    """The chat template applied to a canonical ``conversation`` (see deploy/server/tools.py) and its ``tools``,
    ending with the assistant's turn opened (400 if it refuses)."""
    _refuse_control_tokens(tokenizer, _request_texts(conversation, tools))
    try:
        ids = render_prompt_ids(tokenizer, conversation, tools=tools)
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


@dataclass(frozen=True)
class CompletionPrompt:
    ids: list[int]
    text: str  # what ``echo`` returns: the prompt text as sent, or the token ids decoded (special tokens kept)


def completion_prompts(tokenizer, prompt: str | list, pad_id: int, vocab_size: int) -> list[CompletionPrompt]:
    """The prompts of a completions request (a string, strings, token ids, or lists of token ids).

    Token ids are the model's input as they are (no special token is added); an id outside the vocabulary is
    a 400.
    """
    if isinstance(prompt, str):
        items: list = [prompt]
    elif isinstance(prompt[0], int):
        items = [prompt]
    else:
        items = prompt
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(CompletionPrompt(completion_prompt_ids(tokenizer, item, pad_id), item))
            continue
        bad = next((t for t in item if t >= vocab_size), None)
        if bad is not None:
            where = f" (prompt {i})" if len(items) > 1 else ""
            raise APIError(400, f"token id {bad}{where} is not in the vocabulary: ids run from 0 to {vocab_size - 1}",
                           param="prompt")
        out.append(CompletionPrompt(list(item), tokenizer.decode(item, skip_special_tokens=False)))
    return out
