"""Dataset facts and the recommendation: the seed's own scenarios give the seed's answers."""

from __future__ import annotations

import json

import pytest

from tunesmith.advise.config import AdviseConfig
from tunesmith.advise.dataset import measure_dataset
from tunesmith.advise.recommend import advise, plan_options
from tunesmith.data.answer_format import answer_format
from tunesmith.estimate.arch import Architecture
from tunesmith.estimate.hardware import load_gpu_catalog

from support.tickets import LABELS, write_tickets


@pytest.fixture(scope="module")
def gpus():
    return load_gpu_catalog()


# ---------------------------------------------------------------------------- dataset facts


def test_dataset_facts_dedup_labels_and_lengths(tmp_path, tokenizer):
    path = write_tickets(tmp_path / "t.jsonl", 200, duplicates=15, weights=(6, 1, 1, 1))
    with open(path, "a") as f:
        f.write("{not json\n")
    facts = measure_dataset(path, tokenizer=tokenizer)
    assert (facts.rows, facts.unique, facts.duplicates, facts.rejected) == (215, 200, 15, 1)
    assert facts.dominant_shape == "short" and facts.format_consistency == 1.0
    assert set(facts.labels) == set(LABELS) and sum(facts.labels.values()) == 200
    assert facts.labels["billing"] > 100 and facts.imbalance > 4
    assert facts.label_source == "short answers"
    assert facts.token_counter.startswith("tokenizer")
    assert 20 < facts.token_p50 <= facts.token_p95 <= facts.token_max < 200
    approx = measure_dataset(path)  # no tokenizer: ~4 characters per token
    assert approx.token_counter.startswith("approx")
    assert approx.token_p50 == pytest.approx(facts.token_p50, rel=0.6)


def test_dataset_facts_label_field_and_prepared_folder(tmp_path):
    path = write_tickets(tmp_path / "t.jsonl", 60)
    facts = measure_dataset(path, stratify_field="category")
    assert facts.label_source == "field 'category'" and sum(facts.labels.values()) == 60
    from tunesmith.data.config import DataConfig
    from tunesmith.data.prepare import prepare_data

    prepare_data(DataConfig(), path, tmp_path / "prepared", seed=0)
    assert measure_dataset(tmp_path / "prepared").unique == 60


def test_dataset_answer_shapes_measure_inconsistency(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": ['{"a": 1}', "yes", "a long free-form sentence that goes on", "two\nlines"][i % 4]}]}
            for i in range(40)]
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = measure_dataset(p)
    # the data stage's answer classes (data/answer_format.py): one line of <= 3 words is "short"
    assert facts.answer_shapes == {"json": 10, "short": 10, "prose": 20}
    assert facts.dominant_shape == "prose" and facts.format_consistency == 0.5
    assert answer_format('[1, 2]') == "json" and answer_format("{broken") == "short"


def test_advise_and_the_data_stage_classify_answers_alike(tmp_path):
    """One classifier: advise's answer shapes are the data stage's answer_formats for the same rows."""
    from tunesmith.data.config import DataConfig, DedupConfig
    from tunesmith.data.prepare import prepare_data

    answers = ['{"a": 1}', "yes", "four words long here", "a\nb", "```py\nx = 1\n```", "- one\n- two", "Billing", "High urgency"]
    rows = [{"messages": [{"role": "user", "content": f"question number {i}"},
                          {"role": "assistant", "content": answers[i % len(answers)]}]} for i in range(40)]
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = prepare_data(DataConfig(validation_fraction=0.0, test_fraction=0.0, dedup=DedupConfig(near=False, cross_split=False)),
                         p, None, seed=0).stats["consistency"]
    facts = measure_dataset(p)
    assert facts.answer_shapes == stats["answer_formats"] == {"short": 15, "prose": 10, "json": 5, "code": 5, "list": 5}
    assert facts.dominant_shape == stats["majority_format"] == "short"


# ---------------------------------------------------------------------------- the seed's scenarios


def test_support_ticket_classification_1200_examples_fine_tunes_with_lora_or_qlora(tmp_path, gpus):
    facts = measure_dataset(write_tickets(tmp_path / "t.jsonl", 1200, duplicates=30))
    answers = AdviseConfig(prompt_engineering_tried=True, narrow_task=True, data_kind="task", model="llama-3.1-8b",
                           monthly_inference_tokens=20e6, api_price_per_m=30, ft_price_per_m=0.10)
    a = advise(answers, arch=Architecture.from_catalog("llama-3.1-8b"), gpus=gpus, facts=facts, seq_len=512)
    assert a.verdict == "fine-tune"
    assert a.method in ("lora", "qlora")
    assert a.examples == 1200  # measured after dedup
    text = " ".join(a.reasons)
    assert "1,200 unique examples after removing 30 duplicates" in text
    assert "100% of answers share one shape (short)" in text  # the data stage's class for a label-like line
    assert a.plan.fits and a.plan.memory.total_bytes <= a.plan.gpu.memory_bytes
    assert a.breakeven is not None and a.breakeven.days is not None and a.breakeven.days < 30
    assert a.breakeven.api_monthly_usd == pytest.approx(600)


def test_knowledge_base_that_changes_weekly_gets_rag(gpus):
    answers = AdviseConfig(prompt_engineering_tried=True, knowledge_changes_often=True, needs_citations=True)
    a = advise(answers, arch=Architecture.from_catalog("llama-3.1-8b"), gpus=gpus)
    assert a.verdict == "rag"
    assert any("changes often" in r for r in a.reasons)
    # with enough consistent data for a narrow task as well: both
    both = advise(answers.model_copy(update={"examples": 2000, "narrow_task": True, "consistent_format": True}),
                  arch=None, gpus=gpus)
    assert both.verdict == "both"


def test_300_examples_is_not_yet(gpus):
    a = advise(AdviseConfig(examples=300, narrow_task=True, prompt_engineering_tried=True), arch=None, gpus=gpus)
    assert a.verdict == "not-yet"
    assert any("300 examples are fewer than the 500" in r and "collect 200+ more" in r for r in a.reasons)
    assert any("prompt-engineer" in r for r in a.reasons)


def test_prompt_engineering_not_tried_comes_first(gpus):
    a = advise(AdviseConfig(examples=5000, narrow_task=True, prompt_engineering_tried=False), arch=None, gpus=gpus)
    assert a.verdict == "prompt-engineer-first"
    assert a.reasons[0].startswith("Prompt engineering")


@pytest.mark.parametrize("kind,n,verdict", [("domain", 5000, "not-yet"), ("domain", 12000, "fine-tune"),
                                             ("instruction", 499, "not-yet"), ("instruction", 500, "fine-tune")])
def test_minimum_examples_per_kind(gpus, kind, n, verdict):
    a = advise(AdviseConfig(examples=n, data_kind=kind, narrow_task=True), arch=None, gpus=gpus)
    assert a.verdict == verdict


def test_broad_inconsistent_task_is_not_fine_tuned(gpus):
    a = advise(AdviseConfig(examples=3000, narrow_task=False, consistent_format=False, prompt_engineering_tried=True),
               arch=None, gpus=gpus)
    assert a.verdict == "prompt-engineer-first"


def test_domain_adaptation_prefers_full_when_it_fits(gpus):
    arch = Architecture.from_catalog("smollm2-360m")
    a = advise(AdviseConfig(examples=20000, data_kind="domain", narrow_task=True), arch=arch, gpus=gpus, seq_len=1024)
    assert a.method == "full"
    small = advise(AdviseConfig(examples=20000, data_kind="domain", narrow_task=True, gpu="T4"),
                   arch=Architecture.from_catalog("llama-3.1-8b"), gpus=gpus)
    assert small.method == "qlora" and small.plan.gpu.name == "T4"  # full and bf16 LoRA cannot fit 15 GiB


def test_plan_falls_back_to_checkpointing_then_batch_one(gpus):
    arch = Architecture.from_catalog("llama-3.1-8b")
    [opt] = plan_options(arch, [gpus["a10g"]], methods=("lora",), batch_size=4, seq_len=1024, tokens=1e6)
    assert opt.fits and opt.gradient_checkpointing and opt.batch_size == 1
    [no] = plan_options(Architecture.from_catalog("llama-3.1-70b"), [gpus["a100-80gb"]], methods=("lora",),
                        batch_size=4, seq_len=1024, tokens=1e6)
    assert not no.fits


def test_no_saving_never_breaks_even(gpus):
    a = advise(AdviseConfig(examples=1000, narrow_task=True, monthly_inference_tokens=1e6, api_price_per_m=0.5),
               arch=Architecture.from_catalog("llama-3.1-8b"), gpus=gpus)
    assert a.breakeven is not None and a.breakeven.days is None
    assert any("never at this volume" in r for r in a.reasons)


def test_no_signal_and_no_saving_falls_back_to_prompt_engineering(gpus):
    a = advise(AdviseConfig(examples=1000, monthly_inference_tokens=1e6, api_price_per_m=0.5),
               arch=Architecture.from_catalog("llama-3.1-8b"), gpus=gpus)
    assert a.verdict == "prompt-engineer-first"
    assert any("rests on the data count alone" in r for r in a.reasons)
    assert any("nothing argues for fine-tuning yet" in r for r in a.reasons)


def test_one_verdict_function_applies_the_rules_in_order():
    """decide() is the only place a verdict is set; the first rule that applies decides."""
    from tunesmith.advise.recommend import decide, read_signals
    from tunesmith.estimate.cost import break_even

    never = break_even(monthly_tokens=1e6, api_usd_per_m=0.5, one_off_usd=10, ft_usd_per_m=1.0)
    pays = break_even(monthly_tokens=1e9, api_usd_per_m=30, one_off_usd=10, ft_usd_per_m=0.1)
    cases = [
        (dict(prompt_engineering_tried=False, examples=5000, knowledge_changes_often=True), never, ("prompt-engineer-first", "untried")),
        (dict(examples=100, needs_citations=True, narrow_task=True), None, ("rag", "rag")),
        (dict(examples=5000, needs_citations=True, narrow_task=True), never, ("both", "both")),
        (dict(examples=100, narrow_task=True), None, ("not-yet", "too-few")),
        (dict(examples=5000, narrow_task=False), None, ("prompt-engineer-first", "broad")),
        (dict(examples=5000), never, ("prompt-engineer-first", "no-saving")),
        (dict(examples=5000), pays, ("fine-tune", "fine-tune")),
        (dict(examples=5000, narrow_task=True), never, ("fine-tune", "fine-tune")),
    ]
    for answers, be, expected in cases:
        a = AdviseConfig(**answers)
        assert decide(a, read_signals(a, None), be) == expected, answers
