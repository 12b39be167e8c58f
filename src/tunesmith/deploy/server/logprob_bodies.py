"""The ``logprobs`` objects of OpenAI responses, from the engine's ``TokenLogprob`` entries.

* ``/v1/completions`` (the legacy format): ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``, one
  entry per token of the returned text. With ``echo`` the prompt's tokens come first; the first prompt token has
  ``null`` logprob and ``null`` top_logprobs (nothing predicts it). ``top_logprobs`` maps token text to logprob for
  the ``logprobs`` most likely tokens *and* the token itself, so a map may hold ``logprobs + 1`` entries, as
  OpenAI documents. Generated tokens include the end-of-sequence token when the model produced it (its text is
  not in ``text``), as OpenAI and vLLM report it; ``text_offset`` is each token's character offset in ``text``.
* ``/v1/chat/completions``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}``
  for the tokens of the message's content (the end-of-turn token is not content), ``top_logprobs`` holding
  exactly the ``top_logprobs`` most likely tokens.
"""

from __future__ import annotations

from tunesmith.deploy.server.logprobs import TokenLogprob
from tunesmith.deploy.server.token_text import TokenTexts


def _top_map(texts: TokenTexts, e: TokenLogprob) -> dict[str, float]:
    out = {texts.text_of(t): lp for t, lp in e.top}
    out.setdefault(texts.text_of(e.token), e.logprob)
    return out


def completion_logprobs(texts: TokenTexts, *, prompt_ids: list[int] | None, prompt_entries: list[TokenLogprob],
                        output_entries: list[TokenLogprob], completion_start: int) -> dict:
    """The legacy logprobs of one choice: the prompt's tokens first when ``prompt_ids`` is given (echo), then the
    generated ones, whose offsets start at ``completion_start`` (where the completion begins in ``text``)."""
    tokens: list[int] = []
    token_logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    offsets: list[int] = []
    if prompt_ids is not None:
        tokens += prompt_ids
        token_logprobs += [None, *(e.logprob for e in prompt_entries)]
        top += [None, *(_top_map(texts, e) for e in prompt_entries)]
        offsets += texts.offsets(prompt_ids)
    generated = [e.token for e in output_entries]
    tokens += generated
    token_logprobs += [e.logprob for e in output_entries]
    top += [_top_map(texts, e) for e in output_entries]
    offsets += texts.offsets(generated, start=completion_start)
    return {"tokens": [texts.text_of(t) for t in tokens], "token_logprobs": token_logprobs, "top_logprobs": top,
            "text_offset": offsets}


def _chat_token(texts: TokenTexts, token: int, logprob: float) -> dict:
    return {"token": texts.text_of(token), "logprob": logprob, "bytes": list(texts.bytes_of(token))}


def chat_logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> dict:
    """The chat logprobs of one choice, for ``entries`` (the content's tokens)."""
    content = [{**_chat_token(texts, e.token, e.logprob),
                "top_logprobs": [_chat_token(texts, t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}
