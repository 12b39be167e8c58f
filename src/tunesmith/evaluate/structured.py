"""The ``base_structured`` baseline: the base model held to the task's answer format by constrained decoding.

It answers the question to settle before fine-tuning: does prompting plus structured output (what a
server's ``response_format`` gives) already solve the task? Its answers always have the declared
shape, so what is left between it and the tuned model is content, not format.

The constraint comes from ``eval.structured_output``:

* ``json_schema``: ``eval.json_schema``;
* ``json``: any JSON value;
* ``regex``: ``eval.format_pattern``, else ``eval.label_pattern`` (the whole answer matches it);
* ``labels``: exactly one of the train answers, for classification tasks (at most
  ``MAX_ANSWER_LABELS`` distinct answers);
* ``auto``: the first the config declares, in the order json_schema, format_pattern, JSON
  (``format_json`` or scorer ``json_fields``), a label set of train answers, label_pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.constrained_decoding import ConstraintError, OutputConstraint
from tunesmith.data.consistency import MAX_ANSWER_LABELS
from tunesmith.data.records import Record, reference_answer
from tunesmith.errors import ConfigError
from tunesmith.evaluate.config import EvalConfig


@dataclass(frozen=True)
class StructuredOutput:
    constraint: OutputConstraint
    source: str  # where it came from, for metrics.json and the report

    def describe(self) -> dict[str, str]:
        return {"kind": self.constraint.kind, "source": self.source, "constraint": self.constraint.describe()}


def train_label_set(train: list[Record]) -> list[str] | None:
    """The distinct train answers (sorted) when they look like labels: at most MAX_ANSWER_LABELS, none multi-line."""
    answers = sorted({reference_answer(r).strip() for r in train if r.get("source") != "general" and "messages" in r})
    if not answers or len(answers) > MAX_ANSWER_LABELS or any(not a or "\n" in a for a in answers):
        return None
    return answers


def structured_output(ec: EvalConfig, schema: dict | None, train: list[Record]) -> StructuredOutput:
    """The constraint of the base_structured baseline (``schema``: eval.json_schema, loaded)."""
    mode = ec.structured_output
    try:
        if mode in ("auto", "json_schema") and schema is not None:
            return StructuredOutput(OutputConstraint.json_schema(schema), "eval.json_schema")
        if mode in ("auto", "regex") and ec.format_pattern:
            return StructuredOutput(OutputConstraint.regex(ec.format_pattern), "eval.format_pattern")
        if mode == "json" or (mode == "auto" and (ec.format_json or ec.resolved_scorer() == "json_fields")):
            return StructuredOutput(OutputConstraint.json(), "any JSON")
        labels = train_label_set(train) if mode in ("auto", "labels") else None
        if labels:
            return StructuredOutput(OutputConstraint.choice(labels), f"the {len(labels)} distinct train answers")
        if mode in ("auto", "regex") and ec.label_pattern:
            return StructuredOutput(OutputConstraint.regex(ec.label_pattern), "eval.label_pattern")
    except ConstraintError as e:
        raise ConfigError(f"base_structured: {e.message}",
                          hint="see eval.structured_output in docs/evaluation.md") from None
    if mode == "labels":
        raise ConfigError(f"base_structured: eval.structured_output is 'labels' but the train answers are not a label "
                          f"set (1 to {MAX_ANSWER_LABELS} distinct one-line answers)",
                          hint="use eval.structured_output json_schema, json or regex")
    raise ConfigError("base_structured needs an answer format to hold the base model to",
                      hint="set eval.json_schema, eval.format_pattern or eval.format_json, or remove base_structured "
                      "from eval.models (classification tasks whose train answers are the labels need nothing)")
