"""A training recipe chosen for the model, the method and the data: learning rate, packed row length,
rows per step, epochs. Each value comes with the sentence that says where its rule comes from.

Two presets:

* ``auto`` (the default): the rules below;
* ``seed``: the seed's GPU recipe, unchanged (3 epochs, batch 4 x accumulation 4, lr 2e-4, rows as
  long as the longest example).

The rules and their sources (docs/advise.md has the discussion):

* **Learning rate, LoRA/DoRA/QLoRA**: interpolated (log-log in parameters) between anchor points.
  135M: 2e-3, *measured here* (examples/support-tickets: SmolLM2-135M, LoRA r=16 alpha 32 on q/k/v/o,
  80 steps, 97.5 % accuracy; on all linear layers, the default since, one epoch: 100 %; the issue's
  hand-tuned extraction run: same rate and tokens per step).
  1.2B and 3.2B: 1e-3, 8B and 70B: 3e-4, *from the literature*: the LoRA learning-rate sweep of
  Thinking Machines' Tinker cookbook (``tinker_cookbook/hyperparam_utils.py``, Llama 3.x, alpha 32,
  all layers). QLoRA and DoRA take LoRA's rate (an assumption: the adapters are the same, only the
  frozen base differs; the QLoRA paper reports NF4 matching 16-bit LoRA).
  Scaled by 32 / alpha (the adapter's output is scaled by alpha / r; every anchor used alpha 32).
* **Learning rate, full fine-tuning**: the LoRA rate / 10 ("LoRA Without Regret", Schulman et al.
  2025: LoRA's optimal rate is ~10x full fine-tuning's, roughly independent of rank). At 8B that
  gives 3e-5, next to Alpaca's 2e-5 for 7B.
* **Row length**: packing puts several examples in a row: the longer of the longest example and
  ``EXAMPLES_PER_ROW`` mean examples, rounded up to 64 tokens, capped at ``MAX_ROW_TOKENS``.
* **Rows per step**: about ``EXAMPLES_PER_STEP`` examples per optimizer step, the seed's 4 x 4
  rows of one example each (measured here: the support-tickets run's 4 rows of 512 tokens hold
  ~17 tickets); LoRA prefers small batches ("LoRA Without Regret").
* **Epochs**: enough to see ``EXAMPLES_SEEN`` examples, between 1 and 3 (the seed's 3). Two runs
  measured here at lr 2e-3 on SmolLM2-135M: ~1,400 examples seen (one epoch, 80 steps) reached 97.5 % on
  the support tickets; the issue's hand-tuned extraction run stopped after ~450 (45 steps of the same
  2,048 tokens). 1,000 sits between them: a heuristic from two points, not a law. Under a time budget
  (``train.time_budget``) the epochs are the most, 3: the budget's probe then plans the steps that fit, and
  checkpoints chosen by the task score keep the best of them. Measured here: order-emails at 1.4 epochs
  planned only 65 steps and ended at 10 of its 15 minutes, with the score still rising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

RecipeName = Literal["auto", "seed"]
RECIPES: tuple[str, ...] = ("auto", "seed")

# (parameters, LoRA learning rate at alpha 32, where it comes from)
LORA_LR_ANCHORS: tuple[tuple[float, float, str], ...] = (
    (135e6, 2e-3, "SmolLM2-135M, measured here: examples/support-tickets, 97.5 %"),
    (1.24e9, 1e-3, "Llama-3.2-1B, Tinker cookbook sweep"),
    (3.21e9, 1e-3, "Llama-3.2-3B, Tinker cookbook sweep"),
    (8.03e9, 3e-4, "Llama-3.1-8B, Tinker cookbook sweep"),
    (70.6e9, 3e-4, "Llama-3.1-70B, Tinker cookbook sweep"),
)
ANCHOR_ALPHA = 32.0
FULL_FT_LR_DIVISOR = 10.0  # LoRA Without Regret: LoRA's optimal rate ~10x full fine-tuning's
EXAMPLES_PER_ROW = 4
EXAMPLES_PER_STEP = 16
EXAMPLES_SEEN = 1000
MAX_EPOCHS = 3.0
MAX_ROW_TOKENS = 2048  # packing aims no longer (a longer example still gets a row of its own length)
ROW_MULTIPLE = 64
MICRO_BATCH = 4  # rows per micro-batch before accumulation (the seed's)

SEED = {"epochs": 3.0, "batch_size": 4, "grad_accum": 4, "lr": 2e-4}


@dataclass
class Recipe:
    name: str
    lr: float | None  # None: the model size is unknown (keep the config's)
    epochs: float
    batch_size: int
    grad_accum: int
    max_seq_length: int
    reasons: dict[str, str] = field(default_factory=dict)  # train.<key> -> why

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum


def _round_up(n: float, multiple: int = ROW_MULTIPLE) -> int:
    return int(max(multiple, math.ceil(n / multiple) * multiple))


def lora_learning_rate(params: float, *, alpha: float = ANCHOR_ALPHA) -> tuple[float, str]:
    """LoRA learning rate for a model of ``params`` parameters: log-log interpolation between the anchors."""
    pts = LORA_LR_ANCHORS
    if params <= pts[0][0]:
        lr, why = pts[0][1], f"{pts[0][1]:g} as for {pts[0][2]}"
    elif params >= pts[-1][0]:
        lr, why = pts[-1][1], f"{pts[-1][1]:g} as for {pts[-1][2]}"
    else:
        (n0, lr0, s0), (n1, lr1, s1) = next((a, b) for a, b in zip(pts, pts[1:], strict=False) if a[0] <= params <= b[0])
        t = math.log(params / n0) / math.log(n1 / n0)
        lr = math.exp(math.log(lr0) + t * (math.log(lr1) - math.log(lr0)))
        why = (f"{lr0:g} as for {s0}, and {s1}" if lr0 == lr1 else
               f"interpolated between {lr0:g} ({s0}) and {lr1:g} ({s1})")
    scale = ANCHOR_ALPHA / alpha
    if scale != 1:
        why += f"; x {scale:g} for lora.alpha {alpha:g} (the anchors used alpha 32)"
    return float(f"{lr * scale:.2g}"), why


def learning_rate(params: float, method: str, *, alpha: float = ANCHOR_ALPHA) -> tuple[float, str]:
    lr, why = lora_learning_rate(params, alpha=alpha if method != "full" else ANCHOR_ALPHA)
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    if method == "full":
        full = float(f"{lr / FULL_FT_LR_DIVISOR:.2g}")
        return full, (f"full fine-tuning of a {size} model: the LoRA rate / 10 (LoRA Without Regret: LoRA's optimal "
                      f"rate is ~10x full fine-tuning's); LoRA rate: {why}")
    same = "" if method == "lora" else f" ({method} takes LoRA's rate)"
    return lr, f"{method} on a {size} model{same}: {why}"


def choose_recipe(name: str, *, params: float | None, method: str, train_examples: int, token_mean: float,
                  token_max: int, alpha: float = ANCHOR_ALPHA, length_margin: float = 1.0,
                  seed_max_seq_length: int = 1024, budgeted: bool = False) -> Recipe:
    """The recipe ``name`` (auto | seed) for this model, method and data; ``budgeted``: a time budget will
    plan the steps (the epochs are then the most the recipe allows).

    ``length_margin`` > 1 pads the measured lengths when they are approximate (no tokenizer). The seed
    recipe's rows are the longest example, capped at ``seed_max_seq_length`` (the config's).
    """
    longest = _round_up(token_max * length_margin)
    if name == "seed":
        why = "the seed recipe (--recipe seed)"
        return Recipe("seed", SEED["lr"], SEED["epochs"], SEED["batch_size"], SEED["grad_accum"],
                      min(longest, seed_max_seq_length),
                      {"lr": why, "epochs": why, "batch_size": why, "grad_accum": why,
                       "max_seq_length": f"{why}: rows as long as the longest example ({token_max} tokens)"})
    if name != "auto":
        raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    mean = max(1.0, token_mean * length_margin)
    row = max(longest, min(_round_up(EXAMPLES_PER_ROW * mean), MAX_ROW_TOKENS))
    per_row = max(1.0, row / mean)
    rows = max(1, math.ceil(EXAMPLES_PER_STEP / per_row))
    batch = min(MICRO_BATCH, rows)
    accum = math.ceil(rows / batch)
    epochs = MAX_EPOCHS if budgeted else round(min(MAX_EPOCHS, max(1.0, EXAMPLES_SEEN / max(1, train_examples))), 1)
    per_step = per_row * batch * accum
    steps = math.ceil(train_examples / per_step * epochs)
    reasons = {
        "max_seq_length": f"packed rows of {row} tokens hold ~{per_row:.1f} examples of {token_mean:.0f} tokens "
                          f"(the longest, {token_max}, fits)",
        "batch_size": f"{batch} x {accum} rows of {row} tokens = ~{per_step:.0f} examples per step "
                      f"(target {EXAMPLES_PER_STEP}, the seed's 4 x 4; LoRA prefers small batches)",
        "epochs": f"{epochs:g} epoch(s) of {train_examples:,} examples (~{steps} steps): enough to see "
                  f"~{EXAMPLES_SEEN:,} examples, between 1 and {MAX_EPOCHS:g} (measured here: ~1,400 seen reached 97.5 % "
                  "on the support tickets, the hand-tuned extraction run of the issue stopped at ~450)",
    }
    if budgeted:
        reasons["epochs"] = (f"at most {epochs:g} epochs of {train_examples:,} examples (~{steps} steps): the time "
                             "budget plans how many of them fit, and the task score keeps the best checkpoint")
    reasons["grad_accum"] = reasons["batch_size"]
    lr = None
    if params is not None:
        lr, reasons["lr"] = learning_rate(params, method, alpha=alpha)
    return Recipe("auto", lr, epochs, batch, accum, row, reasons)
