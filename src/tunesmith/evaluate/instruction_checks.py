"""Checkers of verifiable instructions (in the spirit of IFEval): does an answer follow one constraint?

Each checker is a pure function ``(answer, **params) -> bool``; :data:`CHECKS` maps a constraint kind
to its checker. What counts:

* a **word** is a whitespace-separated token with at least one letter or digit (any script), so
  ``"—"`` and ``"-"`` are not words and ``"café"`` is one;
* leading and trailing whitespace of the answer never matters (a trailing newline does not break
  ``end_phrase``, ``quoted``, ``json_object``);
* an answer with no letters at all follows neither ``lowercase`` nor ``uppercase`` (it shows nothing);
* ``bullet_count`` counts lines that start with ``-``, ``*`` or ``•`` and a space (numbered lines are
  not bullets); other lines may be there too;
* ``paragraphs`` splits on blank lines (lines with only whitespace count as blank);
* ``quoted`` accepts straight ``"…"`` or curly ``“…”`` quotes around the whole answer;
* ``json_object`` accepts one JSON object, bare or in one ```json fenced block, nothing else.

:func:`follows` first asks whether the answer is an answer at all: every prompt asks to describe, explain or
advise, so one of fewer than :data:`MIN_ANSWER_WORDS` words follows no constraint. Without that floor a model
tuned into a narrow task, answering every general prompt with its label ("RT-TECH-3"), passed ``no_commas``,
``uppercase`` and ``max_words`` as often as base passed everything (routing-codes unguarded: 27 of 120 against
base's 27, then 0 of 120 with the floor; base and guarded runs lost no pass to it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

MIN_ANSWER_WORDS = 3
BULLET = re.compile(r"^\s*[-*•]\s+\S")
FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def words(answer: str) -> list[str]:
    return [t for t in answer.split() if any(c.isalnum() for c in t)]


def _has_cased_letter(answer: str) -> bool:
    return any(c.lower() != c.upper() for c in answer)


def bullet_count(answer: str, n: int) -> bool:
    return sum(1 for line in answer.splitlines() if BULLET.match(line)) == n


def lowercase(answer: str) -> bool:
    return _has_cased_letter(answer) and answer == answer.lower()


def uppercase(answer: str) -> bool:
    return _has_cased_letter(answer) and answer == answer.upper()


def include_word(answer: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE) is not None


def no_commas(answer: str) -> bool:
    return bool(answer.strip()) and "," not in answer and "，" not in answer


def json_object(answer: str) -> bool:
    text = answer.strip()
    fenced = FENCED.fullmatch(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    return isinstance(value, dict)


def max_words(answer: str, n: int) -> bool:
    return 1 <= len(words(answer)) <= n


def min_words(answer: str, n: int) -> bool:
    return len(words(answer)) >= n


def end_phrase(answer: str, phrase: str) -> bool:
    return answer.rstrip().casefold().endswith(phrase.strip().casefold())


def start_word(answer: str, word: str) -> bool:
    """The first word, after leading whitespace, quotes and Markdown marks (``*``, ``#``), is ``word``."""
    text = re.sub(r"^[\s\"'“‘*#_>]+", "", answer)
    return re.match(rf"{re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def paragraphs(answer: str, n: int) -> bool:
    return len([p for p in PARAGRAPH_BREAK.split(answer.strip()) if p.strip()]) == n


def quoted(answer: str) -> bool:
    text = answer.strip()
    return len(text) > 2 and ((text[0], text[-1]) in (('"', '"'), ("“", "”"))) and bool(text[1:-1].strip())


def title(answer: str) -> bool:
    return re.search(r"<<[^<>\n]*\w[^<>\n]*>>", answer) is not None


def postscript(answer: str) -> bool:
    return re.search(r"(?im)^\s*p\.\s?s\.", answer) is not None


CHECKS: dict[str, Callable[..., bool]] = {
    "bullet_count": bullet_count, "lowercase": lowercase, "uppercase": uppercase, "include_word": include_word,
    "no_commas": no_commas, "json_object": json_object, "max_words": max_words, "min_words": min_words,
    "end_phrase": end_phrase, "start_word": start_word, "paragraphs": paragraphs, "quoted": quoted, "title": title,
    "postscript": postscript,
}


def is_answer(answer: str | None) -> bool:
    """At least MIN_ANSWER_WORDS words: a label, a code or an empty string answers no general prompt."""
    return answer is not None and len(words(answer)) >= MIN_ANSWER_WORDS


def follows(kind: str, answer: str | None, params: dict) -> bool:
    """Whether ``answer`` (None: no answer) is an answer (:func:`is_answer`) that follows the constraint ``kind``
    with ``params``."""
    return is_answer(answer) and CHECKS[kind](answer, **params)
