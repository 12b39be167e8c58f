"""Task scorers: one function per way of comparing an answer with the reference.

Per-example functions return plain numbers; :mod:`tunesmith.evaluate.task_scoring` aggregates them.

* exact match after normalisation (case, surrounding and repeated whitespace)
* label extraction by a regex with named groups (classification; one label per group)
* JSON field-level true/false positives/negatives against a reference object (extraction)
* ROUGE-L (LCS F1 over lower-cased word tokens) and chrF (character n-grams 1..6, beta 2) for free text
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def exact_match(pred: str, ref: str) -> bool:
    return normalise(pred) == normalise(ref)


def extract_labels(text: str, pattern: re.Pattern[str]) -> dict[str, str] | None:
    """Named groups of the first match of ``pattern`` in ``text``, normalised; None if no match."""
    m = pattern.search(text)
    if not m:
        return None
    return {k: normalise(v) for k, v in m.groupdict().items() if v is not None}


# --- JSON -------------------------------------------------------------------------------------


def parse_json_answer(text: str) -> Any:
    """The JSON value in an answer: the whole text, else the first ```json fenced block; raises ValueError."""
    t = text.strip()
    try:
        return json.loads(t)
    except ValueError:
        pass
    m = re.search(r"```(?:json)?\s*(.*?)```", t, flags=re.DOTALL)
    if m:
        return json.loads(m.group(1))
    raise ValueError("not JSON")


def flatten_json(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path; list items are indexed (``items.0.name``). Strings are normalised."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_json(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten_json(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1] or "$"] = normalise(obj) if isinstance(obj, str) else obj
    return out


def json_field_counts(pred: str, ref: str) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of leaf fields of the answer vs the reference.

    A field is a true positive when the answer has it with the reference's value; a field in the
    answer that is wrong or not in the reference is a false positive; a reference field that the
    answer lacks or gets wrong is a false negative. An answer that is not JSON has no fields.
    """
    want = flatten_json(parse_json_answer(ref))
    try:
        got = flatten_json(parse_json_answer(pred))
    except ValueError:
        got = {}
    tp = sum(1 for k, v in got.items() if k in want and want[k] == v)
    return tp, len(got) - tp, len(want) - tp


# --- free text --------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1: longest common subsequence of word tokens, 2PR/(P+R). Both empty -> 1.0."""
    p, r = _words(pred), _words(ref)
    if not p and not r:
        return 1.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    s = "".join(text.split())  # chrF ignores whitespace
    return Counter(s[i : i + n] for i in range(len(s) - n + 1))


def chrf(pred: str, ref: str, *, max_order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015) in [0, 1]: character n-gram precision and recall, each averaged
    over the orders 1..max_order that both texts have, combined as F-beta (recall weighted beta^2)."""
    if not pred.split() and not ref.split():
        return 1.0
    precs, recs = [], []
    for n in range(1, max_order + 1):
        h, r = _char_ngrams(pred, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        match = sum((h & r).values())
        precs.append(match / sum(h.values()))
        recs.append(match / sum(r.values()))
    if not precs:
        return 0.0
    p, r = sum(precs) / len(precs), sum(recs) / len(recs)
    if p == 0 and r == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r)
