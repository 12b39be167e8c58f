"""Task scorers: one function per way of comparing an answer with the reference.

Per-example functions return plain numbers; :mod:`tunesmith.evaluate.task_scoring` aggregates them.

* exact match after normalisation (case, surrounding and repeated whitespace)
* label extraction by a regex with named groups (classification; one label per group)
* JSON field-level true/false positives/negatives against a reference object (extraction)
* ROUGE-L (LCS F1 over lower-cased word tokens) and chrF (character n-grams 1..6, beta 2) for free text
* per field (a JSON leaf, a label group, or the whole answer): was a value invented where the reference
  has none, or left out where it has one (:class:`ValueOutcome`; counted in ``invented_values.py``)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
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


# --- invented and missing values --------------------------------------------------------------

# a reference or answer equal to one of these (normalised, surrounding punctuation ignored) has no value
DEFAULT_ABSTAIN_VALUES = ("", "null", "none", "unknown", "n/a")


@dataclass(frozen=True)
class ValueOutcome:
    """One field of one answer against the reference.

    ``status``: ``right`` (the reference's value); ``wrong`` (another value); ``not_in_input`` (another value
    that occurs nowhere in the input, where the reference's value does: invented); ``missing`` (no value
    where the reference has one); ``invented`` (a value where the reference has none); ``abstained`` (no
    value where the reference has none: right). "No value" is null, an absent field or an abstain value.
    """

    status: str
    grounded: bool = False  # the reference's value occurs in the input
    in_reference: bool = True  # the reference has this field (possibly null); False: only the answer has it


def abstain_set(values: tuple[str, ...] | list[str]) -> frozenset[str]:
    return frozenset(_bare(v) for v in values)


def _bare(text: str) -> str:
    return normalise(text).strip(" .!?;:")


def has_value(value: Any, abstain: frozenset[str]) -> bool:
    """False for None and for a string that is an abstain value."""
    if value is None:
        return False
    return not isinstance(value, str) or _bare(value) not in abstain


def occurs_in(value: Any, text: str) -> bool:
    """``value`` (a string normalised, a number or boolean as JSON writes it) occurs in ``text`` (already
    normalised) not as part of a longer word or number."""
    needle = normalise(value) if isinstance(value, str) else json.dumps(value)
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", text) is not None


def value_outcome(ref: Any, pred: Any, *, same: bool, abstain: frozenset[str], text: str | None = None,
                  in_reference: bool = True) -> ValueOutcome:
    """The outcome of one field; ``text`` is the normalised input (None: whether values occur in it is not checked)."""
    ref_has, pred_has = has_value(ref, abstain), has_value(pred, abstain)
    grounded = text is not None and ref_has and occurs_in(ref, text)
    if not ref_has:
        status = "invented" if pred_has else "abstained"
    elif not pred_has:
        status = "missing"
    elif same:
        status = "right"
    else:
        status = "not_in_input" if grounded and not occurs_in(pred, text or "") else "wrong"
    return ValueOutcome(status, grounded, in_reference)


def json_value_outcomes(pred: str, ref: str, *, abstain: frozenset[str], source: str | None = None
                        ) -> dict[str, ValueOutcome]:
    """The outcome of every leaf field of the reference or the answer, by dotted path.

    A null in one and an object in the other are compared through the object's leaves (``sender: null``
    vs ``sender: {"name": "Bo"}`` is one invented ``sender.name``). An answer that is not JSON has no
    values. ``source`` is the input text the values are looked up in (None: not checked).
    """
    want = flatten_json(parse_json_answer(ref))
    try:
        got = flatten_json(parse_json_answer(pred))
    except ValueError:
        got = {}
    paths = set(want) | set(got)
    ancestors = {k[:i] for k in paths for i, ch in enumerate(k) if ch == "."}
    leaves = sorted(paths - ancestors)
    text = normalise(source) if source is not None else None
    return {k: value_outcome(want.get(k), got.get(k), same=want.get(k) == got.get(k), abstain=abstain, text=text,
                             in_reference=k in want) for k in leaves}


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
