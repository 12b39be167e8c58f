"""What shape an answer has, in one place: the data stage's consistency stats (``answer_formats``,
``majority_format``, format outliers, label-like ``answer_labels``) and `tunesmith advise`'s
format-consistency and label measurements both classify answers with :func:`answer_format`."""

from __future__ import annotations

import json
import re

ANSWER_FORMATS = ("json", "code", "list", "short", "prose")
SHORT_MAX_WORDS = 3  # a "short" answer is label-like: one line of at most this many words
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.M)


def answer_format(answer: str) -> str:
    """A coarse class of an answer's shape: json, code, list, short (a label-like line) or prose."""
    s = answer.strip()
    if s[:1] in "{[":
        try:
            json.loads(s)
            return "json"
        except (json.JSONDecodeError, RecursionError):  # nested too deep to parse: not usable as JSON
            pass
    if "```" in s:
        return "code"
    if len(_LIST_LINE.findall(s)) >= 2:
        return "list"
    if "\n" not in s and len(s.split()) <= SHORT_MAX_WORDS:
        return "short"
    return "prose"
