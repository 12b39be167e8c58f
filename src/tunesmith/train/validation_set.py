"""The examples the validation loss is computed on: all of the validation split, or a fixed subset.

The subset is the first ``n`` examples of the split in an order shuffled once by the run's seed, so
it is the same examples at every validation (their losses compare), and a larger ``n`` keeps a
smaller one's examples. ``train.validation_examples`` sets ``n``; under ``train.time_budget`` with it
unset, the budget's plan does (:mod:`tunesmith.train.budget`): the probe's validation on the first
few, then as many as the planned validations leave time for.

Torch-free: the micro-batches are made by the ``make_batches`` it is given. It is a sequence of those
batches, so the training loop reads it as the list of validation batches it always gets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any


class ValidationBatches(Sequence):
    """The validation loss's micro-batches over the first :attr:`n` of :attr:`total` examples in a seeded
    order (``n`` None: all of them)."""

    def __init__(self, examples: list, make_batches: Callable[[list], list], *, seed: int, n: int | None = None):
        self.total = len(examples)
        self._examples, self._make_batches = examples, make_batches
        self.order = list(range(self.total))
        random.Random(seed).shuffle(self.order)
        # each example's token count in that order: what a validation of the first k costs scales with
        self.token_counts = [len(examples[i].input_ids) for i in self.order]
        self.n = 0
        self._batches: list[Any] = []
        self.resize(self.total if n is None else n)

    def resize(self, n: int) -> bool:
        """Use the first ``n`` examples of the order (clamped to 1..total); True when that changed them."""
        n = max(1, min(self.total, n))
        if n == self.n:
            return False
        chosen = sorted(self.order[:n])  # in the split's own order: all of them batch exactly as the split does
        self._batches = self._make_batches([self._examples[i] for i in chosen])
        self.n = n
        return True

    def describe(self) -> str:
        return f"all {self.total}" if self.n == self.total else f"{self.n} of {self.total}"

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, i):
        return self._batches[i]
