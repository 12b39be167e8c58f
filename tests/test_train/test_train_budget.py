"""train.time_budget: the budget arithmetic on a fake clock (steps, LR schedule and validations fit), the
re-check when steps run slower than the probe; and a real tiny-model run that plans, fits and says so."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
import torch
from support.train_runs import ENV, resume_run_config, run_cli, urgency_conversation

from tunesmith.config import build_config
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.train.budget import (
    EVAL_SHARE,
    FIRST_VALIDATION_EXAMPLES,
    SIZED_EVALS,
    BudgetPacer,
    FittedSchedule,
    fit_steps,
    validations_between,
)
from tunesmith.train.validation_set import ValidationBatches


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("90s", 90), ("1h30m", 5400), ("900", 900), (900, 900),
                                           ("1h 2m 3s", 3723), ("2.5m", 150)])
def test_a_time_budget_is_read_from_seconds_or_hours_minutes_seconds(text, seconds):
    assert build_config({"train": {"time_budget": text}}).train.time_budget == seconds


@pytest.mark.parametrize("text, why", [("15x", "not a duration"), ("m", "not a duration"), ("0", "more than 0"),
                                       ("-5", "more than 0"), ("1m1h", "in that order"), ("1m2m", "once each")])
def test_a_bad_time_budget_is_a_config_error_naming_the_key(text, why):
    with pytest.raises(ConfigError, match=rf"train.time_budget: .*{why}"):
        build_config({"train": {"time_budget": text}})


# --- the arithmetic, on a fake clock ------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeState:
    step: int = 0
    history: list[dict] = field(default_factory=list)
    budget: dict | None = None


@dataclass
class Simulated:
    pacer: BudgetPacer
    schedule: FittedSchedule
    lrs: list[float]  # the lr each step ran with
    lr_after: float  # the scheduler's lr after the last step: where the schedule ended
    validated_at: list[int]
    end: float  # the fake clock when training stopped
    validated_on: list[tuple]  # the examples of each validation's loss (with a sized validation)


@dataclass
class SizedValidation:
    """A validation the budget sizes: ``examples`` of ``tokens`` tokens each, the loss costing ``s_per_token``,
    the task score ``task_s`` on top."""

    examples: int = 90
    tokens: int = 900
    s_per_token: float = 150.0 / (90 * 900)  # all 90 examples: 150 s
    task_s: float = 12.0

    def batches(self) -> ValidationBatches:
        examples = [_Example(f"v{i}", [0] * self.tokens) for i in range(self.examples)]
        return ValidationBatches(examples, lambda chosen: [e.id for e in chosen], seed=5)


@dataclass
class _Example:
    id: str
    input_ids: list[int]


def _simulate(step_time, *, budget=100.0, setup=5.0, eval_s=4.0, configured=1000, warmup_ratio=0.1,
              kind="cosine", eval_every=None, sized: SizedValidation | None = None) -> Simulated:
    """Drive the pacer as the training loop does (step, lr schedule step, validate?, stop?), each step
    and validation advancing the fake clock; ``step_time(step)``: seconds of optimizer step ``step``.
    ``sized``: the validation loss is sized by the budget (as train.run does with train.validation_examples
    unset), each validation costing what its examples' tokens and the task score cost."""
    clock = FakeClock()
    schedule = FittedSchedule(kind, round(warmup_ratio * configured), configured)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    clock.now = setup  # the pacer is made when setup (tokenising, the model load) is done
    pacer = BudgetPacer(budget_s=budget, clock=clock, started=0.0, schedule=schedule, configured_steps=configured,
                        limited_name="train.epochs", warmup_ratio=warmup_ratio, has_validation=eval_s > 0,
                        eval_every=eval_every, **({"validation_tokens": sized.batches().token_counts} if sized else {}))
    val = sized.batches() if sized else None
    state, lrs, validated, validated_on = FakeState(), [], [], []
    while state.step < configured:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
        state.step += 1
        state.history.append({"tokens": 100})
        clock.now += step_time(state.step)
        if pacer.validate_now(state):
            validated.append(state.step)
            if val is None:
                clock.now += eval_s
            else:  # as train.run applies the pacer's size, then the loop validates: the loss, the task score
                val.resize(pacer.validation_examples)
                validated_on.append(tuple(val))
                clock.now += sized.s_per_token * sized.tokens * val.n
                pacer.time_task_score(lambda: setattr(clock, "now", clock.now + sized.task_s))
        if pacer.stop_now(state):
            break
    return Simulated(pacer, schedule, lrs, opt.param_groups[0]["lr"], validated, clock.now, validated_on)


def _probe_then(seconds: float):
    return lambda step: 3.0 if step == 1 else seconds  # the first step pays for start-up


def test_the_plan_fits_steps_schedule_and_validations_into_the_budget():
    """budget 100 s, reserve 10 s; setup 5 s, probe: 4 steps (3 s, then 1 s each) and a 4 s validation ->
    75 s left for steps of 1 s and validations of 4 s, at most a quarter of it validating (4 validations)."""
    sim = _simulate(_probe_then(1.0))
    plan = sim.pacer.plan
    assert (plan.setup_s, plan.probe_steps, plan.step_s, plan.eval_s) == (5.0, 4, 1.0, 4.0)
    assert plan.steps == 60 and plan.eval_every == 15 and plan.evaluations == 4
    assert plan.limited_by == "time_budget" and plan.configured_steps == 1000 and plan.tokens == 6000
    # validations: the probe's, then every 15 steps, the last one at the last step
    assert sim.validated_at == [4, 15, 30, 45, 60]
    # the 60 steps and their validations fit: 15 s used + 56 x 1 s + 4 x 4 s = 87 s <= 90 s; one more step
    # would need another validation (61 is not a multiple of 15): 92 s
    assert sim.end == plan.eta_s == 87.0 <= plan.budget_s - plan.reserve_s
    assert 15 + 57 * 1.0 + validations_between(4, 61, 15) * 4.0 > 90
    # the LR schedule completes at the plan's last step: warm-up reaches the peak, decay ends at 0
    assert len(sim.lrs) == 60
    peak_at = sim.lrs.index(max(sim.lrs))
    assert max(sim.lrs) == 1.0 and peak_at == plan.warmup_steps == 10
    assert all(a < b for a, b in zip(sim.lrs[:peak_at], sim.lrs[1:peak_at + 1]))  # warm-up rises, no jump back
    assert all(a > b for a, b in zip(sim.lrs[peak_at:], sim.lrs[peak_at + 1:]))  # then decays
    assert sim.lrs[-1] > 0 and sim.lr_after == 0.0  # the last step ran the decay's last value; it ended at 0
    # the probe ran under the configured schedule (warm-up of 100 steps); the plan continued it without a jump
    assert sim.lrs[:4] == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert sim.lrs[4] == pytest.approx(0.04)
    summary = sim.pacer.summary(FakeState(step=60))
    assert summary["schedule_completed"] and summary["refits"] == [] and summary["cut"] is None


def test_a_roomy_budget_keeps_the_configured_steps_and_their_schedule():
    sim = _simulate(_probe_then(1.0), budget=10_000.0, configured=200)
    assert sim.pacer.plan.steps == 200 and sim.pacer.plan.limited_by == "train.epochs"
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler("cosine", opt, num_warmup_steps=20, num_training_steps=200)
    expected = []
    for _ in range(200):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        hf.step()
    assert sim.lrs == pytest.approx(expected, abs=1e-12) and sim.lr_after == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_the_fitted_schedule_has_transformers_shapes_until_refitted(kind):
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler(kind, opt, num_warmup_steps=5, num_training_steps=50)
    ours = FittedSchedule(kind, 5, 50)
    assert [hf.lr_lambdas[0](s) for s in range(51)] == pytest.approx([ours(s) for s in range(51)], abs=1e-12)


def test_steps_slower_than_the_probe_refit_the_schedule_once_and_it_still_completes():
    slow = _simulate(lambda step: 3.0 if step == 1 else (1.0 if step <= 20 else 1.6))
    pacer = slow.pacer
    assert pacer.plan.steps == 60
    assert len(pacer.refits) == 1 and pacer.cut is None
    refit = pacer.refits[0]
    assert 20 < refit["at_step"] < pacer.last_step < 60 == refit["planned_steps"]
    assert slow.end <= 90  # still inside the budget less its reserve
    assert len(slow.lrs) == pacer.last_step and slow.lrs[-1] > 0 and slow.lr_after == 0.0  # decay completed
    at = refit["at_step"]
    assert all(a > b for a, b in zip(slow.lrs[at - 1:], slow.lrs[at:]))  # no jump at the re-fit: decay goes on
    assert slow.validated_at[-1] == pacer.last_step  # the last weights are validated too
    assert pacer.summary(FakeState(step=pacer.last_step))["schedule_completed"]


def test_steps_faster_after_a_late_refit_give_the_time_back_in_a_second_refit(monkeypatch):
    """Steps slow down for a while (the late re-fit fits fewer steps to that pace), then run at the probe's pace
    again: the run would end well before the reserve, so it re-fits once more, to more steps, and still ends
    inside the budget with its schedule completed."""
    import tunesmith.train.budget as budget

    pace = lambda step: 3.0 if step == 1 else (1.6 if 20 < step <= 30 else 1.0)  # noqa: E731
    sim = _simulate(pace)
    pacer = sim.pacer
    assert [r["way"] for r in pacer.refits] == ["late", "early"] and pacer.cut is None
    late, early = pacer.refits
    assert late["steps"] < 60 and early["steps"] == pacer.last_step > late["steps"]
    assert sim.end <= 90.0
    assert len(sim.lrs) == pacer.last_step and sim.lrs[-1] > 0 and sim.lr_after == 0.0
    at = early["at_step"]
    assert all(a >= b for a, b in zip(sim.lrs[at - 1:], sim.lrs[at:]))  # the decay goes on, slower, without a jump
    assert sim.validated_at[-1] == pacer.last_step
    monkeypatch.setattr(budget, "EARLY_SLACK", 1.0)  # no early re-fit: the late one's steps, ending sooner
    without = _simulate(pace)
    assert [r["way"] for r in without.pacer.refits] == ["late"]
    assert without.pacer.last_step == late["steps"] and without.end < sim.end


def test_steps_faster_than_the_probe_add_steps_once_never_past_the_configured_ones():
    sim = _simulate(lambda step: 3.0 if step == 1 else (2.0 if step <= 4 else 1.0), configured=1000)
    assert [r["way"] for r in sim.pacer.refits] == ["early"]
    assert sim.pacer.last_step > sim.pacer.plan.steps and sim.end <= 90.0
    capped = _simulate(lambda step: 3.0 if step == 1 else (2.0 if step <= 4 else 1.0), configured=40)
    assert capped.pacer.last_step <= 40


def test_a_run_still_late_after_its_refit_stops_at_the_budget_and_says_the_schedule_was_cut():
    late = _simulate(lambda step: 3.0 if step == 1 else (1.0 if step <= 20 else 1.6 if step <= 40 else 4.0))
    pacer = late.pacer
    assert len(pacer.refits) == 1 and pacer.cut is not None
    assert late.end <= 95.0  # stopped before the next step would end in the reserve's second half
    cut = pacer.cut
    assert cut["at_step"] == len(late.lrs) == pacer.last_step < cut["planned_steps"]
    assert late.validated_at[-1] == cut["at_step"]  # the weights it ends with are validated, within the budget
    assert cut["lr_multiplier"] > 0 and late.lr_after == pytest.approx(cut["lr_multiplier"])
    summary = pacer.summary(FakeState(step=cut["at_step"]))
    assert not summary["schedule_completed"] and summary["cut"] == cut


def test_a_budget_exhausted_by_the_probe_stops_there_keeping_its_steps_and_says_what_would_fit():
    """setup 85 s of a 100 s budget: after the probe no step fits. Training stops at the probe's last step
    (train.run then saves it as at any end of training), the schedule is not squeezed into 0 steps, and the
    plan says what would fit."""
    sim = _simulate(_probe_then(1.0), setup=85.0)
    pacer, plan = sim.pacer, sim.pacer.plan
    assert plan.exhausted and plan.steps == plan.probe_steps == 4 and len(sim.lrs) == 4
    assert plan.evaluations == 0 and plan.eval_every is None and sim.validated_at == [4]
    text = plan.describe()
    assert "the budget is exhausted after the probe's 4 steps" in text
    assert "Training stops at step 4 and saves what it trained" in text
    # what would fit: 85 s setup + 10 s probe and validation + 10 more steps + a validation, over 90% -> 2m01s
    assert "10 more steps and a validation would need a budget of about 2m01s" in text
    assert "a cheaper validation: it took 4.0s" in text
    summary = pacer.summary(FakeState(step=4))
    assert summary["steps_done"] == 4 and summary["plan"]["exhausted"] and not summary["schedule_completed"]
    assert summary["cut"] is None and summary["lr_schedule"]["segments"] == [[0, 0.0, 100, 1000]]


@pytest.mark.parametrize("configured", [4, 1000], ids=["probe-is-the-run", "probe-then-more"])
def test_a_plan_never_has_fewer_steps_than_were_run(configured):
    """The probe and its setup past the budget (200 s of 100 s): the plan is the probe's steps, never a
    negative number, and says why."""
    sim = _simulate(_probe_then(1.0), setup=200.0, configured=configured)
    plan = sim.pacer.plan
    assert plan.steps == 4 and plan.tokens == 400 and plan.warmup_steps >= 0 and plan.evaluations == 0
    assert len(sim.lrs) == 4
    text = plan.describe()
    assert not re.search(r"(?<![\w.])-\d", text), text  # no negative number anywhere in what is printed
    if configured == 4:
        assert "plan 4 steps" in text and "the budget allows no more" in text and not plan.exhausted
    else:
        assert plan.exhausted and "exhausted after the probe's 4 steps" in text
    # the arithmetic itself clamps: no time left is 0 steps more, not fewer
    assert fit_steps(available_s=-50.0, done=4, step_s=1.0, eval_s=4.0, eval_every=None, max_steps=10)[0] == 4
    assert fit_steps(available_s=-50.0, done=4, step_s=1.0, eval_s=0.0, eval_every=None, max_steps=10)[0] == 4
    assert fit_steps(available_s=-50.0, done=4, step_s=1.0, eval_s=4.0, eval_every=3, max_steps=10)[0] == 4


def test_the_budget_sizes_the_validation_loss_to_fit_and_keeps_the_same_examples():
    """CPU-like numbers: steps of 20 s, a full validation loss of 150 s (90 examples of 900 tokens) plus a
    12 s task score, 15 minutes. The probe's validation runs on the first 8 examples, not the whole split;
    the plan then takes the most examples with which its validations stay within EVAL_SHARE of the time
    left, the same examples at every later validation."""
    sized = SizedValidation()
    sim = _simulate(lambda step: 30.0 if step == 1 else 20.0, budget=900.0, setup=30.0, sized=sized)
    plan, pacer = sim.pacer.plan, sim.pacer
    n = plan.validation_examples
    assert plan.validation_total == 90 and plan.probe_validation_examples == FIRST_VALIDATION_EXAMPLES == 8
    assert 8 < n < 90 and pacer.validation_examples == n
    # the probe validated 8 examples; every later validation the same n (a superset of the probe's 8)
    first, *later = sim.validated_on
    assert len(first) == 8 and later and all(v == later[0] for v in later) and len(later[0]) == n
    assert set(first) <= set(later[0])
    # they fit: the planned validations within EVAL_SHARE of the time left after the probe ...
    available = plan.budget_s - plan.reserve_s - plan.setup_s - plan.probe_s
    per_validation = sized.task_s + n * sized.tokens * sized.s_per_token
    assert plan.eval_s == pytest.approx(per_validation)
    assert plan.evaluations * plan.eval_s <= EVAL_SHARE * available + 1e-9 and plan.evaluations >= SIZED_EVALS
    # ... and one example more would not fit the validations it is sized for
    assert SIZED_EVALS * (per_validation + sized.tokens * sized.s_per_token) > EVAL_SHARE * available
    assert sim.end <= plan.budget_s - plan.reserve_s and sim.validated_at[-1] == pacer.last_step
    # far more steps than with the whole split validated (150 s + 12 s per validation)
    whole = _simulate(lambda step: 30.0 if step == 1 else 20.0, budget=900.0, setup=30.0, eval_s=162.0)
    assert plan.steps > whole.pacer.plan.steps
    assert f"validation loss on {n} of 90 examples to fit 15m00s" in plan.describe()


def test_validation_batches_are_a_seeded_subset_the_same_at_every_size():
    sized = SizedValidation(examples=20)
    a, b = sized.batches(), sized.batches()
    assert list(a) == [f"v{i}" for i in range(20)]  # all: the split's own order, batched as before
    a.resize(5)
    b.resize(5)
    assert list(a) == list(b) and len(a) == 5 and a.n == 5 and a.describe() == "5 of 20"
    small = set(a)
    assert a.resize(9) and small < set(a) and not a.resize(9)  # a larger subset keeps the smaller one's
    assert a.resize(500) is True and a.n == 20 and a.resize(0) and a.n == 1


def test_without_validation_the_budget_is_all_steps():
    sim = _simulate(_probe_then(1.0), eval_s=0.0)
    # 100 - 10 reserve - (5 setup + 6 probe) = 79 s of 1 s steps after the probe's 4
    assert sim.pacer.plan.steps == 83 and sim.validated_at == [] and sim.lr_after == 0.0


def test_a_configured_validation_interval_is_kept_and_counted():
    sim = _simulate(_probe_then(1.0), eval_every=10)
    plan = sim.pacer.plan
    # 15 s for setup and probe + 51 steps of 1 s + 6 validations of 4 s (every 10 steps and at the last) = 90 s
    assert plan.eval_every == 10 and plan.steps == 55 and sim.validated_at == [4, 10, 20, 30, 40, 50, 55]
    assert sim.end == 90.0


# --- a real run --------------------------------------------------------------------------------------

def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_budgeted_tiny_run_prints_its_plan_fits_and_writes_it_into_the_summary(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=None, epochs=1000, save_steps=None, save_every_epoch=False,
                  lora={"r": 4, "dropout": 0.0})
    r = run_cli("train", str(cfg), "name=b", "--budget", "12s")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "b"
    summary = json.loads((run / "train_summary.json").read_text())
    budget = summary["time_budget"]
    plan = budget["plan"]
    assert plan["budget_s"] == 12 and plan["probe_steps"] == 4 and plan["step_s"] > 0 and plan["tokens"] > 0
    assert plan["limited_by"] == "time_budget" and plan["configured_steps"] > plan["steps"]
    assert plan["eval_every"] >= 1 and plan["eval_s"] > 0
    out = " ".join(r.stdout.split())  # the console wraps long lines (with trailing spaces) at its width
    assert f"plan {plan['steps']} steps" in out
    assert out.index(f"plan {plan['steps']} steps") < out.index("train: done")  # printed before training ends
    rows = _read_jsonl(run / "train_metrics.jsonl")
    assert summary["steps"] == len(rows) == budget["steps_done"]
    # every step ran at the schedule's lr; it ended where it was planned to (or the summary says it was cut)
    schedule = FittedSchedule(budget["lr_schedule"]["kind"], 0, 1)
    schedule.segments = budget["lr_schedule"]["segments"]
    assert [row["lr"] for row in rows] == pytest.approx([1e-3 * schedule(s) for s in range(len(rows))], abs=1e-12)
    if budget["cut"] is None:
        assert summary["steps"] == budget["final_steps"] and budget["schedule_completed"]
        assert schedule(summary["steps"]) == 0.0
    else:
        assert "cut the LR schedule" in out
    # the best checkpoint is chosen by the task score of the validations, which the plan counted
    assert summary["select_by"] == "task_score"
    assert [v["step"] for v in summary["val_history"]][0] == 4 and all("task_score" in v for v in summary["val_history"])


class TickingClock:
    """A fake clock that moves ``tick`` seconds at every reading: the budget sees a run as slow as asked."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def _train_in_process(tmp_path, tiny_model_dir, clock, **train):
    """Train the tiny model in this process on 16 conversations, validating on 12; returns (run folder, summary)."""
    from tunesmith.data.prepared import PreparedData
    from tunesmith.train.run import train_from_config

    cfg = build_config({
        "name": "budgeted", "output_dir": str(tmp_path / "runs"), "seed": 3,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.0}, "batch_size": 2, "grad_accum": 1, "lr": 1e-3,
                  "max_seq_length": 64, "save_every_epoch": False, "preflight": False, "select_by": "val_loss",
                  **train},
    })
    out = train_from_config(cfg, PreparedData(train=[urgency_conversation(i) for i in range(16)],
                                              validation=[urgency_conversation(i) for i in range(100, 112)]), clock=clock)
    summary = json.loads((cfg.run_dir / "train_summary.json").read_text())
    assert out.steps == summary["steps"]
    return cfg.run_dir, summary


def test_a_budget_exhausted_after_the_probe_saves_the_steps_it_trained(tmp_path, tiny_model_dir, capsys):
    """Each clock reading 50 s on, a 60 s budget is spent before the probe ends: the run still ends as any
    run does (adapter, summary, metrics) with the probe's 4 steps, and says the budget was exhausted."""
    run, summary = _train_in_process(tmp_path, tiny_model_dir, TickingClock(50.0), time_budget=60, max_steps=20)
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "adapter" / "adapter_config.json").is_file()
    assert summary["steps"] == 4 and summary["time_budget"]["steps_done"] == 4
    assert summary["time_budget"]["plan"]["exhausted"] and summary["time_budget"]["final_steps"] == 4
    assert len(_read_jsonl(run / "train_metrics.jsonl")) == 4
    assert [v["step"] for v in summary["val_history"]] == [4] and summary["used_best_checkpoint"]
    out = " ".join(capsys.readouterr().out.split())
    assert "the budget is exhausted after the probe's 4 steps" in out and "saves what it trained" in out
    assert "the time budget was exhausted after 4 steps" in out


@pytest.mark.parametrize("explicit", [3, None], ids=["user-value", "unset"])
def test_the_budget_sizes_the_validation_loss_only_when_the_user_did_not(tmp_path, tiny_model_dir, explicit):
    """train.validation_examples given: every validation's loss is on that many examples, whatever the budget.
    Unset: the probe's validation is on the first 8 of the 12, the plan's on as many as fit (here all: the
    budget is roomy), and the probe's loss, on other examples, is not compared with the later ones."""
    train = {"time_budget": "1h", "max_steps": 8, "eval_steps": 4}
    if explicit is not None:
        train["validation_examples"] = explicit
    _, summary = _train_in_process(tmp_path, tiny_model_dir, TickingClock(0.001), **train)
    plan, used = summary["time_budget"]["plan"], [v["val_examples"] for v in summary["val_history"]]
    assert [v["step"] for v in summary["val_history"]] == [4, 8]
    if explicit is not None:
        assert used == [3, 3] and plan["validation_examples"] is None
    else:
        assert used == [8, 12] and plan["validation_examples"] == plan["validation_total"] == 12
        assert summary["best_step"] == 8  # chosen among validations on the same examples


def test_resume_continues_the_plan_of_the_killed_run(tmp_path, tiny_model_dir):
    """The plan is in every checkpoint: --resume trains to its last step on its schedule (without the clock)."""
    # 20 s, not less: under a heavy load a shorter budget can plan no more than the 8 steps the kill needs
    cfg = resume_run_config(tmp_path, tiny_model_dir, max_steps=None, epochs=1000, save_steps=6, save_every_epoch=False,
                  time_budget="20s")
    r = run_cli("train", str(cfg), "name=k", env={**ENV, "TUNESMITH_FAULT_KILL_AFTER_STEP": "8"})
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])
    run = tmp_path / "runs" / "k"
    saved = json.loads((run / "checkpoints" / "step-000006" / "state.json").read_text())["budget"]
    assert saved["plan"]["steps"] == saved["final_steps"] > 8
    r = run_cli("train", str(cfg), "name=k", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "continues the time budget's plan" in r.stdout.replace("\n", " ")
    summary = json.loads((run / "train_summary.json").read_text())
    budget = summary["time_budget"]
    assert budget["resumed"] and budget["plan"] == saved["plan"] and budget["cut"] is None
    assert summary["steps"] == saved["final_steps"] and budget["schedule_completed"]
    rows = _read_jsonl(run / "train_metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, saved["final_steps"] + 1))
    schedule = FittedSchedule(budget["lr_schedule"]["kind"], 0, 1)
    schedule.segments = budget["lr_schedule"]["segments"]
    assert [row["lr"] for row in rows] == pytest.approx([1e-3 * schedule(s) for s in range(len(rows))], abs=1e-12)
    assert schedule(summary["steps"]) == 0.0


def test_run_takes_budget_as_the_time_budget(tmp_path, tiny_model_dir):
    cfg = resume_run_config(tmp_path, tiny_model_dir)
    r = run_cli("run", str(cfg), "--budget", "soon")
    assert r.returncode == 2 and "train.time_budget: not a duration: 'soon'" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
