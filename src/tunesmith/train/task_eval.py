"""The task score of the validation split during training (``train.select_by: task_score``).

Scored as `tunesmith eval` scores the test split: the scorer built from the ``eval:`` section
(:func:`tunesmith.evaluate.task_scoring.task_scorer_from_config`), answers from the evaluation's
batched greedy generation with ``eval.max_new_tokens`` and ``eval.batch_size``, the same prompts
(every turn before the last answer) and references (the last answer). The score is the mean
per-example score: the evaluation's ``accuracy``. Validation loss alone does not show an answer that
invents a value; this does.

Up to ``train.task_eval_examples`` validation examples (the first ones: the split is already
shuffled) are scored, the same ones at every validation. In data-parallel runs every rank answers
its share and the sums are added up, so every rank gets the same score.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import RunConfig
from tunesmith.data.records import is_text_record, prompt_messages, reference_answer
from tunesmith.evaluate.generate import generate_greedy, render_prompts
from tunesmith.evaluate.task_scoring import TaskScorer, task_scorer_from_config, user_text
from tunesmith.train.parallel import Distributed


def scorable(records: list[dict]) -> list[dict]:
    """Validation records a task scorer can score: conversations that end with an answer to compare."""
    return [r for r in records if not is_text_record(r) and any(m["role"] == "assistant" for m in r["messages"])]


class ValidationScorer:
    """Callable: model -> mean task score on the chosen validation examples (same on every rank)."""

    def __init__(self, records: list[dict], scorer: TaskScorer, tokenizer, *, max_new_tokens: int, batch_size: int,
                 dist: Distributed):
        self.n = len(records)
        self.scorer, self.tokenizer, self.dist = scorer, tokenizer, dist
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        mine = records[dist.rank :: dist.world_size]
        convs = [prompt_messages(r) for r in mine]
        self.tools = [r.get("tools") for r in mine]
        self.prompts = render_prompts(tokenizer, convs, self.tools) if convs else []
        self.references = [reference_answer(r) for r in mine]
        self.sources = [user_text(c) for c in convs]

    def describe(self) -> str:
        return f"{self.scorer.kind} on {self.n} validation examples, greedy, {self.max_new_tokens} new tokens"

    def __call__(self, model) -> float:
        answers = generate_greedy(model, self.tokenizer, self.prompts, max_new_tokens=self.max_new_tokens,
                                  batch_size=self.batch_size) if self.prompts else []
        total = sum(self.scorer(a, ref, source=src, tools=fns).score
                    for a, ref, src, fns in zip(answers, self.references, self.sources, self.tools, strict=True))
        return self.dist.global_sum(float(total)) / self.n


def validation_scorer(cfg: RunConfig, validation: list[dict], tokenizer, dist: Distributed) -> ValidationScorer | None:
    """The scorer of the first ``train.task_eval_examples`` scorable validation records (unset: 24 under a time
    budget, else 64); None when none is."""
    records = scorable(validation)[: cfg.train.task_eval_count]
    if not records:
        return None
    scorer = task_scorer_from_config(cfg.eval, Path(cfg.base_dir), records=records)
    return ValidationScorer(records, scorer, tokenizer, max_new_tokens=cfg.eval.max_new_tokens,
                            batch_size=cfg.eval.batch_size, dist=dist)
