"""The ``eval:`` section: which models, which scorers, which extra measurements, which gates."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.evaluate.scorers import DEFAULT_ABSTAIN_VALUES
from tunesmith.schema import Section

BUILTIN_MODELS = ("base", "few_shot", "base_structured", "tuned")
# top-level keys of metrics.json that a model name must not shadow
RESERVED_NAMES = ("comparisons", "adversarial", "regression", "gates", "model", "method", "test_examples", "scorer",
                  "delta_accuracy_points", "evaluation", "parity",
                  "lm_eval")  # a key of metrics.json's regression section
ADVERSARIAL_KINDS = ("empty", "other_language", "off_topic", "absent_fact", "injection")


def _check_regex(v: str | None) -> str | None:
    if v is not None:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
    return v


class EndpointConfig(Section):
    """An OpenAI-compatible chat-completions endpoint evaluated as a baseline (e.g. GPT-4o)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", description="Column name in the report, e.g. gpt-4o.")
    base_url: str = Field(..., description="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    model: str = Field(..., description="The model name sent in each request.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (never the key itself). "
        "null: send no Authorization header."
    )
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, description="Retries on 429, 5xx and connection errors (exponential backoff).")
    backoff_s: float = Field(1.0, ge=0, description="First backoff; doubles each retry; Retry-After wins if larger.")
    max_tokens: int | None = Field(None, gt=0, description="Default: eval.max_new_tokens.")
    cache_dir: str | None = Field(
        None, description="Response cache (by request hash). Default: <output_dir>/.endpoint-cache (shared by runs)."
    )
    usd_per_million_input_tokens: float | None = Field(
        None, ge=0, description="Price per million prompt tokens (eval.parity's cost column); null: not priced.")
    usd_per_million_output_tokens: float | None = Field(
        None, ge=0, description="Price per million completion tokens (eval.parity's cost column); null: not priced.")


class LocalModelConfig(Section):
    """Another local model to compare: a merged/exported model folder, or an extra PEFT adapter on the base."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$")
    path: str = Field(..., description="Model folder (merged) or adapter folder; relative to the config file.")
    kind: Literal["merged", "adapter"] = "merged"


class AdversarialConfig(Section):
    """Hallucination on inputs outside the training distribution, scored by declared rules."""

    enabled: bool = True
    file: str | None = Field(
        None, description="Your own adversarial inputs (JSONL: {'prompt' or 'messages', 'expect'?: abstain|format}). "
        "Relative to the config file."
    )
    generate: list[Literal["empty", "other_language", "off_topic", "absent_fact", "injection"]] = Field(
        default_factory=lambda: list(ADVERSARIAL_KINDS), description="Generated from the test set; [] for none."
    )
    max_prompts: int = Field(40, ge=0, description="At most this many adversarial prompts in total.")
    abstain_pattern: str = Field(
        r"(?i)\b(unknown|not (?:sure|known|stated|mentioned|provided|given|available|specified)|cannot (?:tell|"
        r"determine|answer|know)|can't (?:tell|determine|answer)|no (?:information|ticket|input|data)|"
        r"does not (?:say|mention|state)|doesn't (?:say|mention)|i don't know|n/a|insufficient)\b",
        description="An answer matching this regex abstains (the right behaviour for 'abstain' items).",
    )
    keep_format: bool = Field(
        True, description="If the task has a format check, 'format' items (off-topic, injection, other language) "
        "pass when the answer still keeps the format; else they pass when they abstain.",
    )
    judge: str | None = Field(None, description="Name of an eval.endpoints entry used as an LLM judge (optional).")

    @field_validator("abstain_pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return _check_regex(v)


class LmEvalConfig(Section):
    """Standard lm-evaluation-harness tasks on base and every model with its own weights (off by default)."""

    tasks: list[str] = Field(
        default_factory=list, description="lm-eval task, group or tag names; [] (the default): none. Shipped with "
        "tunesmith (offline): tunesmith_general_knowledge (72 general-knowledge multiple-choice questions). lm-eval's "
        "own tasks (mmlu, arc_easy, hellaswag, ifeval, ...) download their data from the Hugging Face hub on first "
        "use.",
    )
    limit: int | None = Field(None, gt=0, description="Score at most the first N documents of each task (lm-eval "
                              "--limit); null: all of them.")
    include_path: list[str] = Field(default_factory=list, description="Folders of your own lm-eval task YAMLs "
                                    "(relative to the config file).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per prompt; null: each task's default.")
    apply_chat_template: bool = Field(False, description="Render prompts with the tokenizer's chat template "
                                      "(lm-eval --apply_chat_template; for instruction tasks such as ifeval).")
    max_drop_points: float = Field(
        2.0, ge=0, description="Flag forgetting when a task's score (a higher-is-better metric) drops below base's "
        "by more than this many points (100 x the metric) or, if larger, 2 x the combined standard error.",
    )

    @field_validator("include_path", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class RegressionConfig(Section):
    """Forgetting: the same general measurements before and after tuning."""

    enabled: bool = True
    text_file: str | None = Field(
        None, description="General text for perplexity (UTF-8 text/HTML). Default: Debian python3.11-doc HTML "
        "(/usr/share/doc/python3.11/html) if installed, else the text bundled with tunesmith."
    )
    max_text_chars: int = Field(6000, gt=0, description="Perplexity on at most this many characters.")
    prompts_file: str | None = Field(
        None, description="General prompts (JSONL records/chat). Default: the data stage's general_eval.jsonl if the "
        "run has one, else the held-out files of chatterbot-corpus (see docs/evaluation.md)."
    )
    max_prompts: int = Field(40, ge=0)
    max_new_tokens: int = Field(48, gt=0)
    max_perplexity_increase_pct: float = Field(
        10.0, ge=0, description="Flag forgetting when tuned perplexity exceeds base by more than this (percent)."
    )
    max_rouge_drop_points: float = Field(
        5.0, ge=0, description="Flag forgetting when general-prompt ROUGE-L drops by more than this (points)."
    )
    general_prompts_file: str | None = Field(
        None, description="Your general instructions for the regression prompts (JSONL: 'prompt', 'instruction' or "
        "'messages'/'conversations' in any format the data stage reads; the answer is optional). Replaces the default "
        "general prompts (prompts_file, general_eval.jsonl, chatterbot-corpus). Relative to the config file.",
    )
    instruction_prompts: int = Field(
        240, ge=0, description="Verifiable-instruction prompts (a general topic + a constraint a program checks: "
        "bullet count, lowercase, JSON, word limits, ...), generated from the templates shipped with tunesmith with "
        "the run seed; 0: none. 240: one prompt is 0.4 points and the paired interval about +-4.5 (120: the two "
        "halves of 240 prompts put one routing-codes model at -3.3 and -0.8; 40: noise on the weights that raised "
        "perplexity 1% moved the embedded model's pass rate 10 points).",
    )
    instruction_max_new_tokens: int = Field(96, gt=0, description="Greedy tokens per verifiable-instruction answer.")
    max_instruction_drop_points: float = Field(
        3.0, ge=0, description="Flag forgetting when a model follows fewer verifiable instructions than base by more "
        "than this many points (one prompt of 240 is 0.4 points).",
    )
    drift_changed_above: float = Field(
        0.5, ge=0, lt=1, description="An answer changed materially when its drift from base's answer (1 - ROUGE-L "
        "between them) is above this.",
    )
    max_mean_drift: float | None = Field(
        None, ge=0, le=1, description="Flag when a model's mean drift from base's answers to the general and "
        "instruction prompts is above this (1: never). Default (null): above base's own drift, measured in each "
        "evaluation: how far base's answers sampled at drift_reference_temperature are from its greedy ones.",
    )
    drift_reference_temperature: float = Field(
        0.7, gt=0, le=2, description="Temperature of base's sampled answers (seeded) whose drift from base's greedy "
        "answers is the drift flag's threshold when max_mean_drift is null.",
    )
    judge: str | None = Field(
        None, description="Name of an eval.endpoints entry asked, per general prompt, whether base's or the model's "
        "answer is better (optional; reported, not flagged).",
    )
    lm_eval: LmEvalConfig = Field(default_factory=LmEvalConfig)


class ParityConfig(Section):
    """The parity certificate: is the candidate not worse than the reference by more than a margin?"""

    reference: str = Field(..., description="The model replaced: a name in eval.models (an eval.endpoints entry such "
                           "as your OpenAI ft: model, or base / few_shot / a local model).")
    candidate: str = Field("tuned", description="The replacement: a name in eval.models.")
    margin_points: float = Field(2.0, gt=0, lt=100, description="Non-inferiority margin in points of the task "
                                 "score: pass when the CI's lower bound of candidate − reference is above −margin.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided confidence of the interval.")
    power: float = Field(0.8, gt=0.5, lt=1, description="Power of the 'examples needed' estimate when inconclusive.")
    gpu: str | None = Field(None, description="GPU catalogue name (estimate/data/gpus.json) whose hourly price "
                            "prices the local models' measured throughput; default: the catalogue GPU this "
                            "evaluation runs on, if any.")
    usd_per_hour: float | None = Field(None, gt=0, description="Hourly price of the hardware instead of a "
                                       "catalogue GPU's.")


class EvalConfig(Section):
    """How models are compared on the held-out test split, plus adversarial and regression sets."""

    models: list[str] = Field(
        default_factory=lambda: ["base", "few_shot", "tuned"],
        description="Models side by side: base, few_shot (base prompted with k train examples), base_structured "
        "(base held to the answer format by constrained decoding, see eval.structured_output), tuned "
        "(base + this run's adapter), plus names from eval.local_models and eval.endpoints.",
    )
    local_models: list[LocalModelConfig] = Field(default_factory=list)
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    few_shot_k: int = Field(3, ge=1, le=32, description="Train examples shown to the few_shot baseline.")
    max_examples: int | None = Field(None, gt=0, description="Score at most this many test examples.")
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(16, gt=0, description="Prompts generated together (greedy, KV cache, left padding).")
    scorer: Literal["auto", "exact", "label", "json_fields", "rouge_l", "chrf", "tool_calls"] = Field(
        "auto", description="Task accuracy: auto = tool_calls if the data carries tool calls, else label if "
        "label_pattern is set, else exact match after normalisation. json_fields: field-level P/R/F1 against the "
        "reference JSON (accuracy = all fields right). rouge_l/chrf: free text (accuracy = mean score). tool_calls: "
        "function names and arguments (as JSON) against the reference's calls (accuracy = exact calls, parallel "
        "calls as a set; no call where the reference makes none), per-argument and no-call accuracy, compliance = "
        "calls that parse and validate against the declared parameter schemas.",
    )
    label_pattern: str | None = Field(
        None,
        description="Regex with named groups that extracts the labels from an answer; accuracy = every group "
        "equals the reference's. Per group: accuracy, macro-F1, per-class precision/recall, confusion matrix.",
    )
    format_pattern: str | None = Field(
        None, description="Regex the whole answer must match (format compliance)."
    )
    format_json: bool = Field(False, description="Format compliance = the answer parses as JSON (and json_schema).")
    json_schema: dict[str, Any] | str | None = Field(
        None, description="JSON Schema (inline mapping or path to a .json file) answers must validate against."
    )
    abstain_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ABSTAIN_VALUES),
        description="A reference or answer equal to one of these (case, whitespace and surrounding punctuation "
        "ignored), like null or an absent JSON field, has no value: the example (label group, JSON field) should be "
        "abstained on. Counted as invented values (a value where the reference has none) and missing values.",
    )
    max_invented_value_rate: float | None = Field(
        0.05, ge=0, le=1, description="Flag a model in the report (and set <model>.values.ok to 0) when its "
        "invented-value rate, or its rate of values found nowhere in the input, is above this. null: never flag.",
    )
    structured_output: Literal["auto", "json_schema", "json", "regex", "labels", "tool_calls"] = Field(
        "auto", description="What the base_structured baseline's answers are held to: json_schema (eval.json_schema, "
        "else a schema inferred from JSON train answers), json (any JSON), regex (eval.format_pattern, else "
        "eval.label_pattern), labels (one of the train answers, for classification), tool_calls (plain text or "
        "well-formed <tool_call> blocks of the declared functions). auto: tool_calls when the scorer is tool_calls, "
        "else the first the config declares in the order json_schema, format_pattern, JSON (format_json or scorer "
        "json_fields; the inferred schema when the train answers have one), a label set of train answers, "
        "label_pattern.",
    )
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for the 95% bootstrap confidence intervals.")
    show_failures: int = Field(10, ge=0, description="How many wrong answers the report lists per model.")
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    parity: ParityConfig | None = Field(
        None, description="Parity certificate of eval.parity.candidate against eval.parity.reference (report section "
        "and metrics.json 'parity'; `--fail-under parity` gates on its verdict). null: none.",
    )
    fail_under: dict[str, float] = Field(
        default_factory=dict, description="CI gates, e.g. {tuned.accuracy: 0.8}: `tunesmith eval` exits 1 when one "
        "is missed. Keys are paths into metrics.json; `--fail-under key=value` adds more.",
    )

    @field_validator("label_pattern", "format_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        return _check_regex(v)

    @model_validator(mode="after")
    def _known_models(self) -> EvalConfig:
        names = [e.name for e in self.endpoints] + [m.name for m in self.local_models]
        dup = {n for n in names if names.count(n) > 1 or n in BUILTIN_MODELS or n in RESERVED_NAMES}
        if dup:
            raise ValueError(f"model names must be unique and not one of {', '.join(BUILTIN_MODELS + RESERVED_NAMES)}: "
                             f"{sorted(dup)}")
        unknown = [m for m in self.models if m not in (*BUILTIN_MODELS, *names)]
        if unknown:
            raise ValueError(
                f"unknown model(s) {unknown}: use {', '.join(BUILTIN_MODELS)} or a name from eval.endpoints / "
                "eval.local_models"
            )
        if self.scorer == "label" and not self.label_pattern:
            raise ValueError("scorer 'label' needs eval.label_pattern (a regex with named groups)")
        if self.label_pattern and not re.compile(self.label_pattern).groupindex:
            raise ValueError("eval.label_pattern needs at least one named group, e.g. (?P<category>\\w+)")
        if "base_structured" in self.models:
            if self.structured_output == "json_schema" and self.json_schema is None:
                raise ValueError("eval.structured_output 'json_schema' needs eval.json_schema")
            if self.structured_output == "regex" and not (self.format_pattern or self.label_pattern):
                raise ValueError("eval.structured_output 'regex' needs eval.format_pattern or eval.label_pattern")
        if self.parity is not None:
            p = self.parity
            missing = [m for m in (p.reference, p.candidate) if m not in self.models]
            if missing:
                raise ValueError(f"eval.parity: {missing} not in eval.models {self.models}: add them, or name models "
                                 "that are evaluated")
            if p.reference == p.candidate:
                raise ValueError("eval.parity: reference and candidate are the same model")
        if self.adversarial.judge and self.adversarial.judge not in [e.name for e in self.endpoints]:
            raise ValueError(f"eval.adversarial.judge '{self.adversarial.judge}' is not a name in eval.endpoints")
        if self.regression.judge and self.regression.judge not in [e.name for e in self.endpoints]:
            raise ValueError(f"eval.regression.judge '{self.regression.judge}' is not a name in eval.endpoints")
        return self

    def resolved_scorer(self, *, tool_calls: bool = False) -> str:
        """The scorer; ``tool_calls``: the data carries tool calls (``auto`` then scores the calls)."""
        if self.scorer != "auto":
            return self.scorer
        if tool_calls:
            return "tool_calls"
        return "label" if self.label_pattern else "exact"
