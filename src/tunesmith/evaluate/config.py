from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tunesmith.schema import Section


class EvalConfig(Section):
    """How the held-out test split is scored."""

    models: list[Literal["base", "tuned"]] = Field(
        default_factory=lambda: ["base", "tuned"], description="Which models to evaluate side by side."
    )
    max_examples: int | None = Field(None, gt=0, description="Score at most this many test examples.")
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(16, gt=0, description="Prompts generated together (greedy, KV cache, left padding).")
    label_pattern: str | None = Field(
        None,
        description="Regex with named groups that extracts the labels from an answer; accuracy = every group "
        "equals the reference's. Without it, accuracy is exact match after whitespace/case normalisation.",
    )
    format_pattern: str | None = Field(
        None, description="Regex the whole answer must match (format compliance). Unset: not measured."
    )
    show_failures: int = Field(10, ge=0, description="How many wrong answers the report lists per model.")

    @field_validator("label_pattern", "format_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            import re

            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v
