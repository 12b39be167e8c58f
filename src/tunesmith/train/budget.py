"""``train.time_budget``: how many steps fit, fitted once from a probe and re-checked as training goes.

What the budget covers: everything ``tunesmith train`` does from its start (tokenising, loading the
model) to its last optimizer step, validations (loss and task scoring) and periodic checkpoints
included. A reserve of :data:`RESERVE` of the budget is kept back, for step-time noise and the final
save of the adapter. Data preparation and evaluation (``tunesmith run``) are not in it.

The probe is the first :data:`PROBE_STEPS` optimizer steps of the run itself, followed by one
validation: real training, not thrown away, under the schedule of the configured steps
(``train.epochs`` / ``train.max_steps``). The median of its steps after the first (which pays for
one-time start-up costs) is the step time; the validation's time is the validation cost. Then the
plan: the most steps that fit the rest of the budget with their validations, never more than the
configured steps, and the LR schedule is re-fitted from the probe's last step to the plan's last step
(:class:`FittedSchedule`), so its warm-up and decay complete. When not even a step fits after the
probe, the plan is the probe's steps: training stops there and saves what it trained, like any end of
training, and the plan says what would fit (a bigger budget, a cheaper validation). A plan never has
fewer steps than were already run.

The validation is sized to the budget when ``train.validation_examples`` is unset (a value the user
gives always wins): the probe's validation computes the loss on the first
:data:`FIRST_VALIDATION_EXAMPLES` examples of the fixed seeded order
(:class:`tunesmith.train.validation_set.ValidationBatches`), its time less the task score's is scaled
per token, and the plan takes the most examples with which :data:`SIZED_EVALS` validations (or as many
as ``train.eval_steps`` needs) stay within :data:`EVAL_SHARE` of the time left: the same examples at
every later validation. The task score's examples (``train.task_eval_examples``) are not sized here: unset,
they are 24 under a budget (train/config.py).

As training goes, the wall time of each step (checkpoints and epoch changes included; validations
apart) is watched: the step time is the larger of the median of the last few steps (a slow-down
shows at once, one slow step does not) and the mean since the plan or the last re-fit (periodic costs count). If
the run would end in the second half of the reserve, the schedule is re-fitted once to the steps that still fit
(a decay under way restarts from its current value and reaches 0 at the new last step). If it still runs late
after that, training stops before a step (and its validation) would end there: the schedule is then cut,
and ``train_summary.json`` says at which step and learning rate. If instead it would end more than
:data:`EARLY_SLACK` of the budget before the reserve (steps faster than the probe, or than the stretch a late
re-fit was fitted to), it is re-fitted once to the steps that fit then, never more than the configured ones.
So a run re-fits at most twice, once each way.

Torch-free (the config imports :func:`parse_duration`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from itertools import accumulate
from statistics import median
from typing import Any

PROBE_STEPS = 4  # optimizer steps timed before the plan; the first one pays for start-up and is not timed
RESERVE = 0.10  # of the budget, kept back for step-time noise and the final save
EVAL_SHARE = 0.25  # validations may take at most this share of the time left after the probe
MAX_EVALS = 10  # validations a budget plans after the probe, at most (the last one at the last step)
FIRST_VALIDATION_EXAMPLES = 8  # validation-loss examples of the probe's validation when the budget sizes them (never fewer after)
SIZED_EVALS = 4  # validations after the probe the validation loss is sized for (fewer when fewer steps are configured)
MORE_STEPS = 10  # the steps a bigger budget is suggested for when none fits after the probe
EARLY_SLACK = 0.05  # of the budget: a run projected to end this much before the reserve re-fits (once) to more steps
RECENT = (0.10, 6, 50)  # steps after the plan before a re-fit: this share of the planned steps, at least 6, at most 50

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.IGNORECASE)
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds (``900``, ``"900"``) or hours, minutes and seconds
    written together (``"15m"``, ``"90s"``, ``"1h30m"``, ``"1h 2m 3s"``)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or _PART.sub("", text).strip():
                raise ValueError(f"not a duration: {text!r}; write seconds (900) or e.g. 15m, 90s, 1h30m") from None
            units = [u.lower() for _, u in parts]
            if len(set(units)) != len(units) or units != sorted(units, key="hms".index):
                raise ValueError(f"not a duration: {text!r}; give hours, minutes, seconds once each, in that order")
            seconds = sum(float(n) * _SECONDS[u.lower()] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a time budget must be more than 0 seconds, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


# --- the learning-rate schedule, re-fittable without a jump ---------------------------------------

class FittedSchedule:
    """The LR multiplier of each step (a ``LambdaLR`` lambda): linear warm-up to 1, then cosine or
    linear decay to 0 at the last step, or constant 1 — the shapes of transformers' schedules, and the
    same values until it is re-fitted.

    :meth:`refit` changes the plan from a given step on, starting from the multiplier that step had
    (no jump): a warm-up still under way continues at the new plan's rate up to 1; a decay restarts
    from the current value and reaches 0 at the new last step. Its state is plain numbers, so
    ``LambdaLR.state_dict()`` keeps it in checkpoints (``--resume`` continues the re-fitted plan).
    """

    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        self.kind = kind
        # [first step, multiplier there, warm-up end, last step]; later segments win from their first step
        self.segments: list[list[float]] = [[0, 0.0 if warmup_steps > 0 else 1.0, warmup_steps, total_steps]]

    @property
    def total_steps(self) -> int:
        return int(self.segments[-1][3])

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        start, value, warm_end, total = next(s for s in reversed(self.segments) if s[0] <= step)
        if step < warm_end:
            return value + (1.0 - value) * (step - start) / (warm_end - start)
        decay_start = max(start, warm_end)
        peak = 1.0 if warm_end > start else value
        progress = min(1.0, max(0.0, (step - decay_start) / max(1, total - decay_start)))
        if self.kind == "linear":
            return peak * (1.0 - progress)
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    def refit(self, at_step: int, total_steps: int, warmup_steps: int) -> None:
        """From ``at_step`` (the next step to run) on: end at ``total_steps``; a warm-up under way ends at
        the pace of ``warmup_steps`` (the new plan's), at least one step on and before the last step."""
        value = self(at_step)
        _, _, warm_end, _ = next(s for s in reversed(self.segments) if s[0] <= at_step)
        new_warm_end = at_step  # decay from the current value
        if self.kind != "constant" and at_step < warm_end and total_steps - at_step >= 2:
            still = math.ceil((1.0 - value) * max(1, warmup_steps))
            new_warm_end = min(at_step + max(1, still), total_steps - 1)  # leave a step to decay in
        self.segments = [s for s in self.segments if s[0] < at_step] + [[at_step, value, new_warm_end, total_steps]]

    def warmup_end(self) -> int:
        """The step the multiplier reaches 1 (0: no warm-up)."""
        if self.kind == "constant":
            return 0
        return next((int(warm_end) for start, _, warm_end, _ in reversed(self.segments) if warm_end > start), 0)


# --- the plan ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    budget_s: float
    reserve_s: float
    setup_s: float  # from the start of `tunesmith train` to the first step
    probe_steps: int
    probe_s: float  # the probe's steps and its validation
    step_s: float  # median step time of the probe (its first step left out)
    eval_s: float  # one validation (loss, and task score when selecting by it); 0 without validation. With the
    # validation loss sized by the budget: the expected time of one on the chosen examples (the probe's was fewer)
    steps: int  # optimizer steps in all, probe included
    configured_steps: int  # what train.epochs / train.max_steps would run
    limited_by: str  # "time_budget" or "train.epochs" / "train.max_steps"
    lr_schedule: str  # train.scheduler
    warmup_steps: int  # the step the learning rate reaches its peak (0: none)
    eval_every: int | None  # validation every N steps (and at the last step); None without validation
    evaluations: int  # validations after the probe
    tokens: int  # expected tokens (the probe's mean per step x steps)
    eta_s: float  # expected time from the start to the last step
    # (defaults: plans kept in checkpoints written before these fields)
    task_s: float = 0.0  # the task score's part of a validation
    validation_examples: int | None = None  # validation-loss examples the budget chose; None: it does not size them
    validation_total: int | None = None  # validation-loss examples there are, when the budget sizes them
    probe_validation_examples: int | None = None  # of them, the probe's validation used
    exhausted: bool = False  # no step fitted after the probe: training stops at its last step

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        probe = (f"time budget {format_duration(self.budget_s)}: setup took {self.setup_s:.1f}s, the probe "
                 f"({self.probe_steps} steps{' + a validation' if self.eval_s else ''}) {self.probe_s:.1f}s at "
                 f"{self.step_s:.3f}s/step")
        if self.exhausted:
            return f"{probe}; {self.advice()}"
        val = (f", validation every {self.eval_every} steps and at the last ({self.evaluations} after the probe, "
               f"~{self.eval_s:.1f}s each)" if self.eval_every else "")
        if self.limited_by == "time_budget":
            limit = "the time budget"
        elif self.eta_s + self.step_s <= self.budget_s - self.reserve_s:
            limit = f"{self.limited_by} ({self.configured_steps} steps; the budget would allow more)"
        else:
            limit = f"{self.limited_by} ({self.configured_steps} steps, the probe's included; the budget allows no more)"
        lr = ("constant learning rate" if self.lr_schedule == "constant" else
              (f"warm-up to step {self.warmup_steps}, then " if self.warmup_steps else "")
              + f"{self.lr_schedule} decay to 0 at step {self.steps}")
        return (f"{probe}; plan {self.steps} steps (~{self.tokens:,} tokens), {lr}{val}; expected to end "
                f"{format_duration(self.eta_s)} after the start ({format_duration(self.reserve_s)} kept in "
                f"reserve); steps limited by {limit}" + (f"; {note}" if (note := self.validation_note()) else ""))

    def validation_note(self) -> str:
        """What the validation loss is computed on, and why (empty when the budget does not size it)."""
        n, total = self.validation_examples, self.validation_total
        if n is None or total is None or not self.evaluations:
            return ""
        if n == total:
            return f"validation loss on all {total} examples (they fit)"
        available = self.budget_s - self.reserve_s - self.setup_s - self.probe_s
        note = (f"validation loss on {n} of {total} examples to fit {format_duration(self.budget_s)} (the same "
                f"{n} at every validation; the probe's on {self.probe_validation_examples}): validations may take "
                f"{EVAL_SHARE:.0%} of the {available:.0f}s left; set train.validation_examples to choose")
        if n == self.probe_validation_examples and self.task_s and self.evaluations * self.eval_s > EVAL_SHARE * available:
            note += (f"; the task score alone takes {self.task_s:.1f}s per validation: lower train.task_eval_examples "
                     "or eval.max_new_tokens to validate more often")
        return note

    def advice(self) -> str:
        """An exhausted plan: what happened and what would fit."""
        need = (self.setup_s + self.probe_s + MORE_STEPS * self.step_s + self.eval_s) / (1 - RESERVE)
        cheaper = ""
        if self.eval_s:
            parts = f" (the task score {self.task_s:.1f}s of it)" if self.task_s else ""
            cheaper = (f", or a cheaper validation: it took {self.eval_s:.1f}s{parts}; set train.validation_examples "
                       "lower" + (", train.task_eval_examples or eval.max_new_tokens" if self.task_s else ""))
        return (f"the budget is exhausted after the probe's {self.steps} steps: no more steps fit before its "
                f"{format_duration(self.reserve_s)} reserve. Training stops at step {self.steps} and saves what it "
                f"trained. {MORE_STEPS} more steps and a validation would need a budget of about "
                f"{format_duration(need)}{cheaper}")


def validations_between(after: int, last: int, every: int | None) -> int:
    """Validations at steps ``after < s <= last`` when validating every ``every`` steps and at ``last``."""
    if not every or last <= after:
        return 0
    return last // every - after // every + (1 if last % every else 0)


def fit_steps(*, available_s: float, done: int, step_s: float, eval_s: float, eval_every: int | None,
              max_steps: int) -> tuple[int, int | None, int]:
    """(last step, validation interval, validations after ``done``) that fit ``available_s`` seconds from
    step ``done`` on. ``eval_every`` None with ``eval_s`` > 0: the interval is chosen so that at most
    :data:`MAX_EVALS` validations take at most :data:`EVAL_SHARE` of the time (at least one: the last step)."""
    step_s = max(step_s, 1e-9)
    if eval_s <= 0:
        last = max(done, min(max_steps, done + int(available_s // step_s)))
        return last, None, 0
    chosen = eval_every is None
    if chosen:
        n_evals = max(1, min(MAX_EVALS, int(EVAL_SHARE * available_s // eval_s)))
        last = done + int((available_s - n_evals * eval_s) // step_s)
        last = max(done, min(max_steps, last))  # never fewer steps than were run
        eval_every = max(1, math.ceil((last - done) / n_evals)) if last > done else 1
    else:
        last = max(done, min(max_steps, done + int(available_s // (step_s + eval_s / eval_every))))

    def cost(n: int) -> float:
        return (n - done) * step_s + validations_between(done, n, eval_every) * eval_s

    while last > done and cost(last) > available_s:  # a few steps at most: the estimates above are close
        last -= 1
    return last, eval_every, validations_between(done, last, eval_every)


def size_validation(*, available_s: float, done: int, step_s: float, eval_s: float, task_s: float,
                    tokens: list[int], used: int, eval_every: int | None, max_steps: int) -> tuple[int, float]:
    """(validation-loss examples, a validation's expected seconds with them): the most of ``tokens`` (each
    example's token count in the fixed order) with which the validations planned from step ``done`` on take at
    most :data:`EVAL_SHARE` of ``available_s``: :data:`SIZED_EVALS` of them (fewer when fewer steps are
    configured), or with ``eval_every`` as many as the steps that fit the rest need. ``eval_s``: the probe's
    validation, on the first ``used`` examples, ``task_s`` of it the task score (not sized); the rest scales
    with the examples' tokens. Never fewer than ``used``."""
    cumulative = list(accumulate(tokens, initial=0))
    per_token = max(0.0, eval_s - task_s) / max(1, cumulative[used])
    if eval_every is None:
        evals = min(SIZED_EVALS, max(1, max_steps - done))
    else:
        last = min(max_steps, done + int(max(0.0, (1 - EVAL_SHARE) * available_s) // max(step_s, 1e-9)))
        evals = max(1, validations_between(done, last, eval_every))
    loss_s = EVAL_SHARE * max(0.0, available_s) / evals - task_s  # for one validation's loss
    n = bisect_right(cumulative, loss_s / per_token) - 1 if per_token > 0 else len(tokens)
    n = max(used, min(len(tokens), n))
    return n, task_s + per_token * cumulative[n]


def make_plan(*, budget_s: float, setup_s: float, elapsed_s: float, probe_steps: int, step_times: list[float],
              eval_s: float, eval_every: int | None, configured_steps: int, limited_name: str,
              lr_schedule: str, warmup_ratio: float, tokens_per_step: float, task_s: float = 0.0,
              validation_tokens: list[int] | None = None, validation_used: int | None = None) -> Plan:
    """The plan after the probe; ``elapsed_s``: time since the start (setup, probe and its validation).
    ``validation_tokens``: the validation-loss examples' token counts in their fixed order when the budget
    sizes them (the probe's validation used the first ``validation_used``)."""
    step_s = median(step_times[1:] or step_times)
    reserve = RESERVE * budget_s
    available = budget_s - reserve - elapsed_s
    sized = validation_tokens is not None and validation_used is not None and eval_s > 0
    n_val, val_s = validation_used, eval_s
    if sized:
        n_val, val_s = size_validation(available_s=available, done=probe_steps, step_s=step_s, eval_s=eval_s,
                                       task_s=task_s, tokens=validation_tokens, used=validation_used,
                                       eval_every=eval_every, max_steps=configured_steps)
    last, every, n_evals = fit_steps(available_s=available, done=probe_steps, step_s=step_s, eval_s=val_s,
                                     eval_every=eval_every, max_steps=configured_steps)
    if last <= probe_steps:  # no step after the probe: no validation either, and the probe's examples stay
        every, n_evals, n_val, val_s = None, 0, validation_used, eval_s
    return Plan(budget_s=budget_s, reserve_s=reserve, setup_s=setup_s, probe_steps=probe_steps,
                probe_s=elapsed_s - setup_s, step_s=step_s, eval_s=val_s, steps=last, configured_steps=configured_steps,
                limited_by="time_budget" if last < configured_steps else limited_name, lr_schedule=lr_schedule,
                warmup_steps=round(warmup_ratio * last), eval_every=every, evaluations=n_evals,
                tokens=round(tokens_per_step * last),
                eta_s=elapsed_s + (last - probe_steps) * step_s + n_evals * val_s, task_s=task_s,
                validation_examples=n_val if sized else None,
                validation_total=len(validation_tokens) if sized else None,
                probe_validation_examples=validation_used if sized else None,
                exhausted=last <= probe_steps < configured_steps)


# --- pacing the loop --------------------------------------------------------------------------------

class BudgetPacer:
    """Tells the training loop when to validate and when to stop; makes the plan and keeps to it.

    ``clock``: seconds (monotonic); ``started``: its reading at the start of ``tunesmith train``.
    ``share``: makes a number the same on every rank (rank 0's), so that every rank decides alike;
    the identity in one process. The loop calls :meth:`validate_now` then :meth:`stop_now` after every
    optimizer step, on every rank. ``state.budget`` keeps the plan, so that ``--resume`` continues it
    (without the clock: the time before the restart is not known).

    ``validation_tokens``: when the budget sizes the validation loss, its examples' token counts in their
    fixed order; :attr:`validation_examples` then says how many of them the validation loss is to use now
    (the probe's few, then the plan's), else it is None. The task score is timed apart
    (:meth:`time_task_score`): it is not sized.
    """

    def __init__(self, *, budget_s: float, clock: Callable[[], float], started: float, schedule: FittedSchedule,
                 configured_steps: int, limited_name: str, warmup_ratio: float, has_validation: bool,
                 eval_every: int | None, on_plan: Callable[[Plan], None] | None = None,
                 share: Callable[[float], float] = lambda x: x, state=None,
                 validation_tokens: list[int] | None = None):
        self.budget_s, self.clock, self.started, self.schedule = budget_s, clock, started, schedule
        self.configured_steps, self.limited_name, self.warmup_ratio = configured_steps, limited_name, warmup_ratio
        self.has_validation, self.user_eval_every, self.on_plan, self.share = (
            has_validation, eval_every, on_plan, share)
        self.plan: Plan | None = None
        self.last_step = configured_steps  # the step training ends at: the plan's, after a re-fit the new one
        self.eval_every: int | None = None
        self.refits: list[dict[str, Any]] = []
        self.cut: dict[str, Any] | None = None
        self.resumed = False  # continuing a plan after --resume: no clock, no re-check
        self.validation_tokens = validation_tokens if has_validation else None
        self.validation_examples = (None if self.validation_tokens is None
                                    else min(FIRST_VALIDATION_EXAMPLES, len(self.validation_tokens)))
        self._last = self._now()
        self._setup_s = self._last - started
        first_step = 0
        if state is not None:
            first_step = state.step
            if state.budget:
                self._restore(state.budget)
        self.probe_until = min(configured_steps, first_step + PROBE_STEPS)
        self._step_times: list[float] = []
        self._tokens: list[int] = []
        self._val_started: float | None = None
        self._eval_times: list[float] = []
        self._task_times: list[float] = []
        self._since_plan: list[float] = []  # step times after the plan
        self._refitted_at = 0  # len(_since_plan) at the last re-fit: the step time is estimated from there on

    def _now(self) -> float:
        return self.share(self.clock())

    # the loop's questions

    def validate_now(self, state) -> bool:
        step = state.step
        if self.plan is not None and step < self.last_step and not self.resumed:
            self._end_before_overrun(step, self._now())
        due = self.has_validation and (
            step == self.probe_until if self.plan is None
            else step == self.last_step or bool(self.eval_every and step % self.eval_every == 0))
        if due:
            self._val_started = self._now()
        return due

    def stop_now(self, state) -> bool:
        now = self._now()
        step_end = self._val_started if self._val_started is not None else now
        step_s = step_end - self._last
        if self._val_started is not None:
            self._eval_times.append(now - self._val_started)
            self._val_started = None
        self._last = now
        if self.plan is None:
            self._step_times.append(step_s)
            self._tokens.append(state.history[-1]["tokens"] if state.history else 0)
            if state.step >= self.probe_until:
                self._make_plan(state.step, now)
            stop = state.step >= self.last_step
        else:
            self._since_plan.append(step_s)
            stop = state.step >= self.last_step or (not self.resumed and self._recheck(state.step, now))
        state.budget = self.state_dict()
        return stop

    def time_task_score(self, score: Callable[[], float]) -> float:
        """``score()``, timed: the task score's part of a validation (the plan sizes only the loss's)."""
        start = self._now()
        value = score()
        self._task_times.append(self._now() - start)
        return value

    # the plan and the re-check

    def _make_plan(self, step: int, now: float) -> None:
        plan = make_plan(budget_s=self.budget_s, setup_s=self._setup_s, elapsed_s=now - self.started,
                         probe_steps=step, step_times=self._step_times, eval_s=max(self._eval_times, default=0.0),
                         eval_every=self.user_eval_every, configured_steps=self.configured_steps,
                         limited_name=self.limited_name, lr_schedule=self.schedule.kind, warmup_ratio=self.warmup_ratio,
                         tokens_per_step=sum(self._tokens) / max(1, len(self._tokens)),
                         task_s=max(self._task_times, default=0.0), validation_tokens=self.validation_tokens,
                         validation_used=self.validation_examples)
        if step < plan.steps < self.configured_steps:  # a budget-limited plan: the schedule ends at its last step
            self.schedule.refit(step, plan.steps, plan.warmup_steps)
        self.plan = replace(plan, warmup_steps=self.schedule.warmup_end())
        self.last_step, self.eval_every = plan.steps, plan.eval_every
        if plan.validation_examples is not None:
            self.validation_examples = plan.validation_examples
        self._eval_times = []  # from now on: validations as planned (the plan's eval_s stands for the probe's)
        if self.on_plan:
            self.on_plan(self.plan)

    def _recheck(self, step: int, now: float) -> bool:
        """True: stop now. Re-fits the schedule once when the run would end past the budget, and once when it would
        end well before the reserve."""
        plan = self.plan
        assert plan is not None
        if len(self._since_plan) - self._refitted_at < self._window():
            return False
        step_s, eval_s, limit = self._step_s(), self._eval_s(), self._limit()
        projected = now + (self.last_step - step) * step_s + \
            validations_between(step, self.last_step, self.eval_every) * eval_s
        target = limit - plan.reserve_s / 2  # the plan's end: the budget less its reserve
        done = {refit.get("way", "late") for refit in self.refits}  # runs saved before early re-fits: late
        if "late" not in done and projected > limit:
            return self._refit(step, now, "late", step_s, eval_s, projected, max_steps=self.last_step)
        early = projected < target - EARLY_SLACK * self.budget_s
        if "early" not in done and early and self.last_step < self.configured_steps:
            return self._refit(step, now, "early", step_s, eval_s, projected, max_steps=self.configured_steps)
        return False

    def _refit(self, step: int, now: float, way: str, step_s: float, eval_s: float, projected: float,
               max_steps: int) -> bool:
        """Re-fit the schedule to the steps that fit the time left at ``step_s`` a step (at most ``max_steps``);
        True: none fits, stop now."""
        assert self.plan is not None
        last, _, _ = fit_steps(available_s=self._limit() - self.plan.reserve_s / 2 - now, done=step, step_s=step_s,
                               eval_s=eval_s, eval_every=self.eval_every, max_steps=max_steps)
        self.refits.append({"at_step": step, "way": way, "planned_steps": self.last_step, "steps": max(last, step),
                            "step_s": step_s, "projected_end_s": projected - self.started})
        self._refitted_at = len(self._since_plan)
        if last <= step:
            return self._stop_at_budget(step, "no step fits the time left")
        if last != self.last_step:
            self.schedule.refit(step, last, round(self.warmup_ratio * last))
            self.last_step = last
        return False

    def _end_before_overrun(self, step: int, now: float) -> None:
        """End the run at ``step`` when the next step and a validation after it would end past the budget: the
        weights it ends with are then validated within the budget (under a cut schedule they are usually the
        best), instead of being left out of the choice of the best checkpoint."""
        eval_s = self._eval_s() if self.has_validation else 0.0
        if now + self._step_s() + eval_s > self._limit():
            self._stop_at_budget(step, "the next step and a validation would end past the time budget")
            self.last_step = step

    def _step_s(self) -> float:
        """A step's expected wall time: the recent median or the mean since the plan (or the last re-fit), whichever
        is longer."""
        assert self.plan is not None
        times = self._since_plan[self._refitted_at:] or self._since_plan
        if not times:
            return self.plan.step_s
        return max(median(times[-max(3, self._window() // 2):]), sum(times) / len(times))

    def _window(self) -> int:
        """Steps after the plan before a re-fit (:data:`RECENT`)."""
        assert self.plan is not None
        share, at_least, at_most = RECENT
        return max(at_least, min(at_most, math.ceil(share * (self.plan.steps - self.plan.probe_steps))))

    def _eval_s(self) -> float:
        assert self.plan is not None
        return max([self.plan.eval_s, *self._eval_times])

    def _limit(self) -> float:
        assert self.plan is not None
        return self.started + self.budget_s - self.plan.reserve_s / 2  # the other half is for the final save

    def _stop_at_budget(self, step: int, why: str) -> bool:
        self.cut = {"at_step": step, "planned_steps": self.last_step, "lr_multiplier": self.schedule(step), "why": why}
        return True

    # what is kept

    def state_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.as_dict() if self.plan else None, "final_steps": self.last_step,
                "eval_every": self.eval_every, "refits": self.refits, "cut": self.cut}

    def _restore(self, saved: dict[str, Any]) -> None:
        if saved.get("plan") is None:
            return  # killed during the probe: probe again
        self.plan = Plan(**saved["plan"])
        self.last_step, self.eval_every, self.refits = saved["final_steps"], saved["eval_every"], saved["refits"]
        self.resumed = True
        self.validation_examples = self.plan.validation_examples  # None: all, as before

    def summary(self, state) -> dict[str, Any]:
        """The budget's part of train_summary.json: the plan, re-fits, a cut schedule, the time it took
        (rank 0's own clock: the other ranks have returned by then)."""
        return {**self.state_dict(), "lr_schedule": {"kind": self.schedule.kind, "segments": self.schedule.segments},
                "steps_done": state.step, "resumed": self.resumed,
                "elapsed_s": None if self.resumed else self.clock() - self.started,
                "schedule_completed": self.cut is None and state.step == self.schedule.total_steps}
