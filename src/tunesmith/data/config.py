from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.schema import Section


class DataConfig(Section):
    """Where the examples come from and how they are split."""

    train_file: str | None = Field(None, description="Input file (JSONL); relative paths are relative to the config file.")
    format: Literal["auto", "alpaca"] = Field("auto", description="Input format; auto detects it from the keys.")
    system_prompt: str | None = Field(None, description="System message added to every example that has none.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    stratify_field: str | None = Field(
        None, description="Key of each input row holding a label; splits keep each label's share."
    )
    max_examples: int | None = Field(None, gt=0, description="Use at most this many rows (after shuffling).")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"validation_fraction ({self.validation_fraction}) + test_fraction ({self.test_fraction}) "
                "must be below 1, or nothing is left to train on"
            )
        return self
