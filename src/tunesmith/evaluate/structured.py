"""The ``base_structured`` baseline: the base model held to the task's answer format by constrained decoding.

It answers the question to settle before fine-tuning: does prompting plus structured output (what a
server's ``response_format`` gives) already solve the task? Its answers always have the declared
shape, so what is left between it and the tuned model is content, not format.

The constraint comes from ``eval.structured_output``:

* ``json_schema``: ``eval.json_schema``, else the JSON Schema inferred from the train answers when they are
  JSON (``tunesmith.data.answer_schema``);
* ``json``: any JSON value;
* ``regex``: ``eval.format_pattern``, else ``eval.label_pattern`` (the whole answer matches it);
* ``labels``: exactly one of the train answers, for classification tasks (at most
  ``MAX_ANSWER_LABELS`` distinct answers);
* ``tool_calls``: plain text in which every ``<tool_call>`` block is a well-formed call of a declared function
  (the union of the functions the train and test records declare), arguments valid against its schema
  (:func:`tunesmith.tool_call_grammar.auto_tool_calls`, the grammar the server uses for ``tool_choice: auto``);
* ``auto``: ``tool_calls`` when the scorer is ``tool_calls``; else the first the config declares, in the order
  json_schema, format_pattern, JSON (``format_json`` or scorer ``json_fields``: the schema inferred from the
  train answers when they are JSON, else any JSON), a label set of train answers, label_pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunesmith.constrained_decoding import ConstraintError, OutputConstraint
from tunesmith.data.answer_schema import infer_structure
from tunesmith.data.consistency import MAX_ANSWER_LABELS
from tunesmith.data.records import Record, reference_answer
from tunesmith.errors import ConfigError
from tunesmith.evaluate.config import EvalConfig
from tunesmith.evaluate.tool_call_scoring import declared_functions, has_tool_calls
from tunesmith.tool_call_grammar import auto_tool_calls


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


def inferred_answer_schema(train: list[Record]) -> dict | None:
    """The JSON Schema of the train answers when they are JSON (``data.answer_schema``), else None."""
    answers = [reference_answer(r) for r in train if r.get("source") != "general" and "messages" in r]
    structure = infer_structure(answers) if answers else None
    return structure.json_schema if structure is not None and structure.kind == "json" else None


def declared_tools(records: list[Record]) -> list[dict]:
    """Every function the records declare, once by name (the first definition wins), in order of appearance."""
    seen: dict[str, dict] = {}
    for r in records:
        for t in r.get("tools") or ():
            for name in declared_functions([t]):
                seen.setdefault(name, t)
    return list(seen.values())


def structured_output(ec: EvalConfig, schema: dict | None, train: list[Record],
                      test: Sequence[Record] = ()) -> StructuredOutput:
    """The constraint of the base_structured baseline (``schema``: eval.json_schema, loaded; ``test``: the test
    records, whose declared tools count too)."""
    mode = ec.structured_output
    records = [*train, *test]
    try:
        if mode == "tool_calls" or (mode == "auto" and ec.resolved_scorer(tool_calls=has_tool_calls(records)) == "tool_calls"):
            tools = declared_tools(records)
            if not tools:
                raise ConfigError("base_structured: eval.structured_output is 'tool_calls' but no record declares tools",
                                  hint="give the records `tools` (OpenAI function definitions)")
            functions = [t.get("function", t) for t in tools]
            return StructuredOutput(auto_tool_calls(functions),
                                    f"plain text or <tool_call> blocks calling {', '.join(f['name'] for f in functions)}")
        if mode in ("auto", "json_schema") and schema is not None:
            return StructuredOutput(OutputConstraint.json_schema(schema), "eval.json_schema")
        if mode in ("auto", "regex") and ec.format_pattern:
            return StructuredOutput(OutputConstraint.regex(ec.format_pattern), "eval.format_pattern")
        wants_json = mode == "auto" and (ec.format_json or ec.resolved_scorer() == "json_fields")
        inferred = inferred_answer_schema(train) if wants_json else None
        if inferred is not None:
            return StructuredOutput(OutputConstraint.json_schema(inferred), "the JSON Schema inferred from the train answers")
        if mode == "json" or wants_json:
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
