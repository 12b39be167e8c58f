"""The ``advise:`` section of a run config: the answers `tunesmith advise` needs.

Every answer can also be given as a flag (flags win) or interactively when a terminal is attached.
Unanswered questions stay ``null`` and the recommendation says which answer would change it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunesmith.schema import Section

DataKind = Literal["instruction", "domain", "task"]


class Choice(Section):
    """A value `tunesmith advise` chose for the run config, and why."""

    key: str = Field(..., description="Dotted path of the chosen setting, e.g. eval.scorer or train.lr.")
    value: Any = Field(None, description="The value advise wrote there.")
    reason: str = Field(..., description="Why: the measurement or rule (and its source) behind the value.")


class AdviseConfig(Section):
    """Answers to the seed's four questions and the RAG-vs-fine-tune table, plus cost inputs."""

    # 1. prompt engineering
    prompt_engineering_tried: bool | None = Field(
        None, description="Have few-shot examples, chain-of-thought and structured output been tried and found short?"
    )
    # 2. data
    examples: int | None = Field(
        None, ge=0, description="High-quality examples available (measured from the dataset when one is given)."
    )
    data_kind: DataKind = Field(
        "task",
        description="instruction (instruction tuning: >=500, 1-5k recommended), domain (domain adaptation: >=10k), "
        "task (task-specific: 500-2k consistent examples).",
    )
    # 3. the task
    narrow_task: bool | None = Field(None, description="Is the task narrow and consistent (one job, one output format)?")
    consistent_format: bool | None = Field(
        None, description="Must outputs follow one format? (measured from the dataset's answers when given)"
    )
    knowledge_changes_often: bool = Field(False, description="Does the knowledge it needs change often (weekly, daily)?")
    needs_citations: bool = Field(False, description="Must answers cite their sources?")
    documents_exceed_context: bool = Field(False, description="Do the documents it must know exceed the context window?")
    # 4. volume and money
    monthly_inference_tokens: float | None = Field(None, ge=0, description="Tokens served per month (input + output).")
    latency_sensitive: bool = Field(False, description="Is latency (or per-call cost) critical?")
    api_price_per_m: float | None = Field(None, ge=0, description="USD per million tokens of the API used today.")
    ft_price_per_m: float | None = Field(
        None, ge=0, description="USD per million tokens to serve the fine-tune (hosted); unset: a dedicated GPU."
    )
    hosting_hours_per_month: float = Field(730.0, gt=0, le=744, description="Hours a dedicated serving GPU runs per month.")
    # hardware
    model: str | None = Field(
        None, description="Architecture to estimate: a catalogue name (llama-3.1-8b), a local folder; default model.name_or_path."
    )
    gpu: str | None = Field(None, description="GPU to plan for (catalogue name); unset: the cheapest that fits.")
    num_gpus: int = Field(1, ge=1, le=64)
    price_per_hour: float | None = Field(None, gt=0, description="Override the catalogue's USD/hour per GPU.")
    mfu: float | None = Field(None, gt=0, le=1, description="Model FLOP utilisation to assume (default per method).")
    gpu_catalog: str | None = Field(None, description="JSON file with extra or corrected GPUs (same layout as the shipped one).")
    avg_tokens_per_example: int | None = Field(
        None, gt=0, description="Tokens per example for time estimates (measured from the dataset when given; else 512)."
    )
    # the run config advise writes
    recipe: Literal["auto", "seed"] = Field(
        "auto", description="Training recipe of the written config: auto = learning rate by model size and method, "
        "packed rows holding several examples, epochs from the data size (docs/advise.md); seed = the seed's "
        "3 epochs, batch 4 x accumulation 4, lr 2e-4."
    )
    choices: list[Choice] = Field(
        default_factory=list, description="Written by `tunesmith advise`: each setting it chose and why. "
        "`tunesmith run` prints them, and says which ones the config no longer holds (you changed them)."
    )
