"""Invented and missing values on the test split: counted per field, aggregated with CIs, flagged.

Every field of every answer has a :class:`~tunesmith.evaluate.scorers.ValueOutcome` (a JSON leaf, a
label group, or the whole answer for exact / free-text tasks). Counted over the fields of the scored
examples (and per field):

* ``null_reference`` fields whose reference has no value (null, absent, an abstain value);
  ``invented`` of them the answer gave a value (``invented_rate``: the headline "invented values").
* ``grounded`` fields whose reference value occurs in the input; ``not_in_input`` of them the answer
  gave another value that occurs nowhere in the input (``not_in_input_rate``; JSON tasks only).
* ``invented_any`` = invented + not_in_input out of ``invented_any_of`` = null_reference + grounded.
* ``reference_value`` fields whose reference has a value; ``missing`` of them the answer gave none.
* ``right`` of ``fields`` (the reference's value, or no value where it has none); ``fully_right`` of
  ``examples`` (every field right).

Every rate has a 95% bootstrap interval that resamples examples (:func:`~tunesmith.evaluate.stats.
bootstrap_ratio_ci`). For JSON tasks a field that some reference has and an example's reference and
answer both leave out counts as abstained (right) for that example, so a reference that omits a key
instead of writing null is counted the same way (fields inside lists are not completed this way).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tunesmith.evaluate.scorers import ValueOutcome
from tunesmith.evaluate.stats import bootstrap_ci, bootstrap_ratio_ci

RATES = {  # rate -> (count, out of)
    "right_rate": ("right", "fields"),
    "invented_rate": ("invented", "null_reference"),
    "not_in_input_rate": ("not_in_input", "grounded"),
    "invented_any_rate": ("invented_any", "invented_any_of"),
    "missing_rate": ("missing", "reference_value"),
}


def _counts(outcomes: list[ValueOutcome]) -> dict[str, int]:
    c = Counter(o.status for o in outcomes)
    grounded = sum(o.grounded for o in outcomes)
    return {"fields": len(outcomes), "right": c["right"] + c["abstained"],
            "null_reference": c["invented"] + c["abstained"], "invented": c["invented"],
            "grounded": grounded, "not_in_input": c["not_in_input"],
            "invented_any": c["invented"] + c["not_in_input"], "invented_any_of": c["invented"] + c["abstained"] + grounded,
            "reference_value": len(outcomes) - c["invented"] - c["abstained"], "missing": c["missing"]}


def _block(per_example: list[dict[str, int]], boot: dict[str, Any]) -> dict[str, Any]:
    """Summed counts, and each rate with its CI (None where there is nothing to count)."""
    out: dict[str, Any] = {k: sum(c[k] for c in per_example) for k in per_example[0]} if per_example else {}
    for rate, (num, den) in RATES.items():
        out[rate] = out[num] / out[den] if out.get(den) else None
        out[f"{rate}_ci"] = bootstrap_ratio_ci([c[num] for c in per_example], [c[den] for c in per_example],
                                               **boot) if out.get(den) else None
    return out


def _is_indexed(path: str) -> bool:
    return any(part.isdigit() for part in path.split("."))


def _complete(outcomes: list[dict[str, ValueOutcome]]) -> list[dict[str, ValueOutcome]]:
    """Add, as abstained, the fields some reference has that an example's reference and answer both lack."""
    known = sorted({k for ex in outcomes for k, o in ex.items() if o.in_reference and not _is_indexed(k)})
    return [{**ex, **{k: ValueOutcome("abstained", in_reference=False) for k in known
                      if k not in ex and not _nested(k, ex)}} for ex in outcomes]


def _nested(path: str, fields: dict[str, ValueOutcome]) -> bool:
    """``path`` is inside one of ``fields`` or holds one (``sender`` and ``sender.name``)."""
    return any(f.startswith(path + ".") or path.startswith(f + ".") for f in fields)


def value_summary(outcomes: list[dict[str, ValueOutcome]], *, complete_fields: bool = False,
                  max_invented_value_rate: float | None = None, n_resamples: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """The keys one model's metrics get: ``invented_value_rate``, ``missing_value_rate`` (with CIs) and ``values``
    (counts, rates, ``per_field``, and ``flagged`` / ``ok`` against ``max_invented_value_rate``).

    ``outcomes``: per scored example, field -> outcome. ``complete_fields``: JSON tasks (see the module doc).
    Empty when no example has a field.
    """
    if not any(outcomes):
        return {}
    boot = {"n_resamples": n_resamples, "seed": seed}
    if complete_fields:
        outcomes = _complete(outcomes)
    values = _block([_counts(list(ex.values())) for ex in outcomes], boot)
    fully = [float(all(o.status in ("right", "abstained") for o in ex.values())) for ex in outcomes]
    values.update({"examples": len(outcomes), "fully_right": int(sum(fully)), "fully_right_rate": sum(fully) / len(fully),
                   "fully_right_rate_ci": bootstrap_ci(fully, **boot)})
    names = sorted({k for ex in outcomes for k in ex})
    values["per_field"] = {k: _block([_counts([ex[k]] if k in ex else []) for ex in outcomes], boot) for k in names}
    rates = [values["invented_rate"], values["not_in_input_rate"]]
    flagged = max_invented_value_rate is not None and any(r is not None and r > max_invented_value_rate for r in rates)
    values.update({"max_invented_value_rate": max_invented_value_rate, "flagged": flagged, "ok": 0.0 if flagged else 1.0})
    return {"invented_value_rate": values["invented_rate"], "invented_value_rate_ci": values["invented_rate_ci"],
            "missing_value_rate": values["missing_rate"], "missing_value_rate_ci": values["missing_rate_ci"],
            "values": values}
