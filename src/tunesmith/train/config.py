from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.estimate.arch import DEFAULT_LORA_TARGETS
from tunesmith.schema import Section
from tunesmith.train.budget import parse_duration


GuardMode = Literal["off", "replay", "kl", "replay+kl"]
# What train.forgetting_guard: auto means for adapter methods, chosen by measurement (docs/forgetting.md: on
# routing-codes kl kept the task score and held perplexity to +2.6% where replay let it rise 148%). Full
# fine-tuning has no frozen base to compare with, and sharded models (fsdp, ZeRO-3) cannot run the KL's base
# forward rank by rank, so auto is off there.
AUTO_GUARD: GuardMode = "kl"
ADAPTER_METHODS = ("lora", "dora", "qlora")


class GuardSection(Section):
    """Settings of the forgetting guard (train.forgetting_guard); docs/forgetting.md."""

    kl_weight: float = Field(2.0, gt=0, description="lambda of the KL term (kl, replay+kl): loss = CE(task rows) + "
                             "lambda * KL(base || tuned) on general rows' tokens (kl_on). 2 by measurement on the "
                             "demo and routing-codes (docs/forgetting.md).")
    kl_on: Literal["answers", "all"] = Field(
        "answers", description="Which tokens of a general row get the KL term: its answer tokens (the ones "
        "cross-entropy would train), or all of them (the prompt too: more of the base's distribution held per row, "
        "closer to the plain text that perplexity is measured on; measured in docs/forgetting.md).")
    replay_max_new_tokens: int = Field(64, gt=0, description="Longest base answer generated for a replay row "
                                       "(replay, replay+kl; greedy, cached in the run folder).")


class LoraSection(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        DEFAULT_LORA_TARGETS,
        description="Module names to adapt, or 'all-linear' (the default) for every linear layer except the LM head.",
    )
    bias: Literal["none", "all", "lora_only"] = "none"


class TrainConfig(Section):
    """How to fine-tune. Defaults follow the seed recipe (3 epochs, batch 4 x accumulation 4, lr 2e-4)."""

    method: Literal["lora", "dora", "qlora", "full"] = Field(
        "lora", description="full = every weight; lora/dora = adapters on a frozen base; qlora = adapters on a 4-bit base."
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    forgetting_guard: Literal["auto", "off", "replay", "kl", "replay+kl"] = Field(
        "auto", description="Keep the model's general behaviour while it learns the task, on the general rows mixed "
        "in by data.mix (their ratio defaults to 0.2 when the guard is on). replay: train on the base model's own "
        "greedy answers to the general prompts (generated once, cached); kl: KL(base || tuned) on general rows "
        "instead of their cross-entropy (adapters only: the base is the model with its adapter disabled); "
        f"replay+kl: both. auto (default): {AUTO_GUARD} for lora/dora/qlora, off for full fine-tuning and for "
        "sharded models (fsdp, deepspeed zero_stage 3). Trade-offs: docs/forgetting.md.",
    )
    guard: GuardSection = Field(default_factory=GuardSection)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    time_budget: float | None = Field(
        None, description="Seconds training may take, or e.g. '15m', '90s', '1h30m' (`--budget`). A probe of the "
        "first steps on this machine sets the number of steps that fit (never more than epochs / max_steps allow) "
        "and the LR schedule is fitted to them; validations are counted in it (their loss on as many examples as fit, "
        "unless validation_examples is set). Covers `tunesmith train` from "
        "tokenising to the last step, not data preparation or evaluation.",
    )
    batch_size: int = Field(4, gt=0, description="Rows per micro-batch (a packed row holds several examples).")
    grad_accum: int = Field(4, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    optimizer: Literal["adamw"] = "adamw"
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_seq_length: int = Field(1024, gt=8, description="Longest tokenised example (and packed row) in tokens.")
    packing: bool = Field(True, description="Pack several examples per row; they never attend to each other.")
    shared_prefix: Literal["auto", "off"] = Field(
        "auto", description="Encode a token prefix that all rows of a micro-batch share once per batch instead of "
        "once per row (e.g. the system prompt with the tool definitions of tool-calling data): auto = whenever a "
        "batch qualifies (at least 32 shared tokens without loss, rows padded or holding one trained "
        "conversation each), the same loss and gradients; off = never. Not with gradient_checkpointing nor "
        "sharded models (fsdp, ZeRO-3), which always take the normal way.",
    )
    completion_only_loss: bool = Field(
        True, description="Loss only on assistant answers (+ their end-of-turn token): instruction tuning."
    )
    truncation: Literal["reject", "truncate"] = Field(
        "reject", description="Examples longer than max_seq_length: reject (reported), or truncate: keep the "
        "first max_seq_length tokens, cutting the end (usually the last answer and its end-of-turn token); an "
        "example left with no trained token is then rejected (reported)."
    )
    logging_steps: int = Field(10, gt=0)
    save_steps: int | None = Field(None, gt=0, description="Checkpoint every N optimizer steps (for resume).")
    save_every_epoch: bool = Field(True, description="Checkpoint at the end of every epoch.")
    keep_checkpoints: int = Field(2, gt=0, description="How many recent checkpoints to keep.")
    eval_steps: int | None = Field(
        None, gt=0, description="Validation loss every N steps (default: at the end of every epoch)."
    )
    validation_examples: int | None = Field(
        None, gt=0, description="Validation examples the validation loss is computed on at each validation: a "
        "fixed subset chosen by the seed, the same at every validation (unset: all). Unset under time_budget, the "
        "budget chooses it so that validations fit (the probe's validation on 8); a value given here always wins.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many validations without a better checkpoint (by select_by)."
    )
    load_best_at_end: bool = Field(
        True, description="Save the best validated weights (by select_by), not the last, as the result."
    )
    select_by: Literal["auto", "task_score", "val_loss"] = Field(
        "auto", description="What 'best' means for load_best_at_end and early stopping. task_score: the evaluation's "
        "own scorer (eval.scorer, eval.max_new_tokens, greedy) on up to task_eval_examples validation examples, "
        "validation loss breaking ties; val_loss: validation loss alone. auto: task_score when the validation split "
        "has conversations with an answer (and the model is not sharded: fsdp / ZeRO-3), else val_loss.",
    )
    task_eval_examples: int | None = Field(
        None, gt=0, description="Validation examples scored by the task scorer at each validation (select_by "
        "task_score). Unset: 64, or 24 under train.time_budget (greedy answers cost more than the loss: on a 2-core "
        "CPU 64 JSON answers took ~220 s a validation, a quarter of a 15-minute budget; 24 still tell 50% from 90%)."
    )
    distributed: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="Data-parallel strategy when launched on several processes (torchrun / "
        "`tunesmith train --nproc N`): ddp replicates the model, fsdp (FSDP2) shards it, deepspeed runs "
        "ZeRO stage `zero_stage` from the deepspeed_config.json tunesmith writes into the run folder."
    )
    zero_stage: Literal[2, 3] | None = Field(
        None, description="DeepSpeed ZeRO stage (default 2): 2 shards gradients and optimizer states, 3 also "
        "the parameters. Only with train.distributed: deepspeed."
    )
    preflight: bool = Field(True, description="Estimate peak memory before loading and refuse runs that cannot fit.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, ~30% slower.")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Extra trackers, written into the run folder (tensorboard/, mlflow.db; "
        "pip install 'tunesmith[tracking]'); metrics always go to train_metrics.jsonl."
    )

    @property
    def guard_mode(self) -> GuardMode:
        """train.forgetting_guard with auto resolved for the method."""
        if self.forgetting_guard == "auto":
            return AUTO_GUARD if self.method in ADAPTER_METHODS and not self.sharded else "off"
        return self.forgetting_guard

    @property
    def sharded(self) -> bool:
        """Parameters sharded across ranks (fsdp, deepspeed ZeRO-3): every rank must run the same forwards."""
        return self.distributed == "fsdp" or (self.distributed == "deepspeed" and self.zero_stage == 3)

    @property
    def task_eval_count(self) -> int:
        """train.task_eval_examples resolved: the user's number, else 24 under a time budget, else 64."""
        if self.task_eval_examples is not None:
            return self.task_eval_examples
        return 24 if self.time_budget else 64

    @property
    def uses_shared_prefix(self) -> bool:
        """train.shared_prefix resolved: auto is off under gradient checkpointing (transformers drops the prefix's
        cache in checkpointed layers) and for sharded models (ranks whose batches qualify would gather
        parameters more often than the others)."""
        return self.shared_prefix == "auto" and not self.gradient_checkpointing and not self.sharded

    @field_validator("forgetting_guard", "shared_prefix", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, v):
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("train.lora settings were given but train.method is 'full', which trains no adapters")
        if self.zero_stage is not None and self.distributed != "deepspeed":
            raise ValueError(f"train.zero_stage is a DeepSpeed setting but train.distributed is '{self.distributed}'")
        if self.method == "qlora" and self.distributed != "ddp":
            raise ValueError(
                f"train.method qlora cannot run with train.distributed {self.distributed}: the 4-bit base weights "
                "cannot be sharded by FSDP2 or DeepSpeed here; use ddp (the 4-bit base is small enough to replicate)"
            )
        if "kl" in self.guard_mode:
            if self.method not in ADAPTER_METHODS:
                raise ValueError(f"train.forgetting_guard {self.forgetting_guard} needs the frozen base as an adapter "
                                 "method has it, but train.method is 'full'; use replay (or off)")
            if self.sharded:
                raise ValueError(f"train.forgetting_guard {self.forgetting_guard}: the KL term's extra base forward "
                                 "runs only on micro-batches with general rows, which sharded models (fsdp, ZeRO-3) "
                                 "cannot do rank by rank; use replay, or ddp / deepspeed zero_stage 2")
        return self
