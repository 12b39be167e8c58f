"""The forgetting guard (train.forgetting_guard): the KL term touches general rows only, the replay cache
is reused and invalidated, and auto turns it on for adapter methods."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import build_config
from tunesmith.errors import ConfigError
from tunesmith.train.batching import collate_packed, collate_padded
from tunesmith.train.guard import base_answers, replay_records
from tunesmith.train.loss import CausalLMLoss
from tunesmith.train.methods import build_trainable_model
from tunesmith.train.tokenize import tokenize_records


def _conv(i, source=None):
    r = {"id": f"r:{i}", "messages": [{"role": "user", "content": f"Question number {i}?"},
                                       {"role": "assistant", "content": f"Answer {i} is here."}]}
    return {**r, "source": source} if source else r


def _lora(model_dir):
    cfg = build_config({"model": {"name_or_path": str(model_dir)}, "seed": 3,
                        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.0}}})
    model, _ = build_trainable_model(cfg)
    # a non-zero adapter, so the tuned model differs from its base
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def _kl_grad_norm(model, batch) -> float:
    model.zero_grad()
    plain = CausalLMLoss(model)(**batch.loss_inputs())
    guarded = CausalLMLoss(model, kl_weight=1.0)(**batch.loss_inputs())
    (guarded - plain).backward()  # the guard's share of the loss
    return sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)


def test_kl_term_acts_on_general_rows_only(tiny_model_dir, tokenizer):
    model = _lora(tiny_model_dir)
    task, _ = tokenize_records(tokenizer, [_conv(1), _conv(2)], max_seq_length=128)
    general, _ = tokenize_records(tokenizer, [_conv(3, "general")], max_seq_length=128)
    assert not any(e.general for e in task) and all(e.general for e in general)

    task_only = collate_padded(task, tokenizer.pad_token_id)
    assert task_only.general is None
    assert _kl_grad_norm(model, task_only) == 0.0  # task rows: cross-entropy, nothing else

    mixed = collate_packed([task + general], tokenizer.pad_token_id)
    assert mixed.general is not None and mixed.general.any() and not mixed.general.all()
    assert _kl_grad_norm(model, mixed) > 0.0  # the general row goes through the KL term


def test_kl_replaces_cross_entropy_of_general_rows_and_is_zero_at_the_base(tiny_model_dir, tokenizer):
    model = _lora(tiny_model_dir)
    task, _ = tokenize_records(tokenizer, [_conv(1)], max_seq_length=128)
    general, _ = tokenize_records(tokenizer, [_conv(3, "general")], max_seq_length=128)
    mixed = collate_packed([task + general], tokenizer.pad_token_id)
    task_alone = collate_packed([task], tokenizer.pad_token_id)
    with torch.no_grad():
        guarded = float(CausalLMLoss(model, kl_weight=1.0)(**mixed.loss_inputs()))
        task_ce = float(CausalLMLoss(model)(**task_alone.loss_inputs()))
        assert guarded > task_ce  # the tuned model has drifted from the base: KL > 0
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()  # adapter off: tuned == base, the KL term vanishes
        assert float(CausalLMLoss(model, kl_weight=1.0)(**mixed.loss_inputs())) == pytest.approx(
            float(CausalLMLoss(model)(**task_alone.loss_inputs())), rel=1e-5)


def test_base_answers_are_cached_and_regenerated_when_model_or_prompts_change(tmp_path):
    calls = []

    def generate(prompts):
        calls.append(len(prompts))
        return [f"base says {p[-1]['content']}" for p in prompts]

    cache = tmp_path / "guard" / "base_answers.json"
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "who are you?"}]]
    first, cached = base_answers(cache, "model-a", prompts, 32, generate)
    assert first == ["base says hi", "base says who are you?"] and not cached and calls == [2]
    again, cached = base_answers(cache, "model-a", prompts, 32, generate)
    assert again == first and cached and calls == [2]  # reused: no second generation
    base_answers(cache, "model-b", prompts, 32, generate)  # another model
    assert calls == [2, 2]
    base_answers(cache, "model-b", prompts[:1], 32, generate)  # other prompts
    assert calls == [2, 2, 1]
    base_answers(cache, "model-b", prompts[:1], 64, generate)  # another answer length
    assert calls == [2, 2, 1, 1]


def test_replay_rows_keep_the_prompt_and_take_the_base_answer():
    general = [{"id": "g:1", "source": "general", "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]},
        {"id": "g:2", "source": "general", "messages": [
            {"role": "user", "content": "Q"}, {"role": "assistant", "content": "corpus"}]}]
    rows = replay_records(general, ["mine", ""])
    assert rows == [{"id": "g:1", "source": "general", "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "mine"}]},
        {"id": "g:2", "source": "general", "messages": [
            {"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}]}]


def test_auto_guard_is_on_for_adapters_and_mixes_general_rows():
    default = build_config({})  # auto: the KL guard for adapters (measured: docs/forgetting.md)
    assert default.train.method == "lora" and default.train.guard_mode == "kl" and default.data.mix.ratio == 0.2
    lora = build_config({"train": {"method": "lora", "forgetting_guard": "auto"}})
    assert lora.train.guard_mode == "kl" and lora.data.mix.ratio > 0
    for sharded in ({"distributed": "fsdp"}, {"distributed": "deepspeed", "zero_stage": 3}):
        cfg = build_config({"train": {"method": "lora", **sharded}})  # the KL's base forward cannot run rank by rank
        assert cfg.train.guard_mode == "off" and cfg.data.mix.ratio == 0
    zero2 = build_config({"train": {"method": "lora", "distributed": "deepspeed", "zero_stage": 2}})
    assert zero2.train.guard_mode == "kl"
    full = build_config({"train": {"method": "full", "forgetting_guard": "auto"}})
    assert full.train.guard_mode == "off" and full.data.mix.ratio == 0
    own = build_config({"train": {"method": "lora", "forgetting_guard": "auto"}, "data": {"mix": {"ratio": 0.3}}})
    assert own.data.mix.ratio == 0.3
    off = build_config({"train": {"method": "lora", "forgetting_guard": "off"}})
    assert off.data.mix.ratio == 0


@pytest.mark.parametrize("train, match", [
    ({"method": "full", "forgetting_guard": "kl"}, "frozen base"),
    ({"method": "lora", "forgetting_guard": "replay+kl", "distributed": "fsdp"}, "sharded"),
    ({"method": "lora", "forgetting_guard": "replay"}, "data.mix.ratio is 0"),
])
def test_guards_that_cannot_work_are_refused(train, match):
    data = {"mix": {"ratio": 0.0}} if "ratio is 0" in match else {}
    with pytest.raises((ConfigError, ValueError), match=match):
        build_config({"train": train, "data": data})


def test_a_bare_yaml_off_turns_the_guard_off(tmp_path):
    from tunesmith.config import load_config

    (tmp_path / "c.yaml").write_text("train:\n  forgetting_guard: off\n")
    assert load_config(tmp_path / "c.yaml").train.guard_mode == "off"
    assert load_config(None, ["train.forgetting_guard=off"]).train.guard_mode == "off"


def test_kl_base_forward_on_general_rows_only_gives_the_full_batch_term(tiny_model_dir, tokenizer):
    """The base forward runs on the rows holding a general token; the loss is the one a base forward of the
    whole batch gives (rows: task only, general only, and both mixed in one row)."""
    from tunesmith.train.loss import _label_logits, base_model, summed_token_loss
    from tunesmith.train.tokenize import IGNORE_INDEX

    model = _lora(tiny_model_dir)
    task, _ = tokenize_records(tokenizer, [_conv(1), _conv(2)], max_seq_length=128)
    general, _ = tokenize_records(tokenizer, [_conv(3, "general"), _conv(4, "general")], max_seq_length=128)
    batch = collate_packed([[task[0]], [general[0]], [task[1], general[1]]], tokenizer.pad_token_id)
    with torch.no_grad():
        got = float(summed_token_loss(model, batch, kl_weight=1.0))
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE_INDEX
        gen = batch.general[:, 1:][keep]
        logits = _label_logits(model, batch, keep)
        with base_model(model):
            base = _label_logits(model, batch, keep)[gen]  # the whole batch through the base
        want = torch.nn.functional.cross_entropy(logits[~gen], targets[keep][~gen], reduction="sum") + \
            torch.nn.functional.kl_div(logits[gen].log_softmax(-1), base.log_softmax(-1), log_target=True, reduction="sum")
    assert got == pytest.approx(float(want), rel=1e-5)


def test_kl_on_all_holds_every_token_of_a_general_row_and_no_task_token(tiny_model_dir, tokenizer):
    """train.guard.kl_on: all: the KL term on each token of a general example that continues it (its prompt too,
    never across to the next packed example); task rows keep their cross-entropy on their answers alone."""
    from tunesmith.train.loss import _label_logits, base_model, summed_token_loss
    from tunesmith.train.tokenize import IGNORE_INDEX

    model = _lora(tiny_model_dir)
    task, _ = tokenize_records(tokenizer, [_conv(1)], max_seq_length=128)
    general, _ = tokenize_records(tokenizer, [_conv(3, "general"), _conv(4, "general")], max_seq_length=128)
    batch = collate_packed([[task[0]], general], tokenizer.pad_token_id)
    targets, flags, pos = batch.labels[:, 1:], batch.general[:, 1:], batch.position_ids[:, 1:]
    ce_at = (targets != IGNORE_INDEX) & ~flags
    kl_at = flags & (pos != 0)
    assert int(kl_at.sum()) == sum(len(e.input_ids) - 1 for e in general)  # every token but each example's first
    assert int(kl_at.sum()) > int((flags & (targets != IGNORE_INDEX)).sum())  # more than the answers
    with torch.no_grad():
        got = float(summed_token_loss(model, batch, kl_weight=1.0, kl_on="all"))
        answers_only = float(summed_token_loss(model, batch, kl_weight=1.0))
        tuned = _label_logits(model, batch, kl_at)
        with base_model(model):
            base = _label_logits(model, batch, kl_at)
        want = torch.nn.functional.cross_entropy(_label_logits(model, batch, ce_at), targets[ce_at], reduction="sum") + \
            torch.nn.functional.kl_div(tuned.log_softmax(-1), base.log_softmax(-1), log_target=True, reduction="sum")
    assert got == pytest.approx(float(want), rel=1e-5)
    assert got != pytest.approx(answers_only, rel=1e-4)


def test_packing_gives_general_examples_rows_of_their_own(tokenizer):
    from tunesmith.train.batching import epoch_batches

    task, _ = tokenize_records(tokenizer, [_conv(i) for i in range(12)], max_seq_length=128)
    general, _ = tokenize_records(tokenizer, [_conv(i, "general") for i in range(12, 18)], max_seq_length=128)
    batches = epoch_batches(task + general, batch_size=2, packing=True, row_length=96, pad_id=tokenizer.pad_token_id,
                            seed=1, epoch=0)
    rows = [(b.general[r] if b.general is not None else torch.zeros(1, dtype=torch.bool), b.labels[r])
            for b in batches for r in range(b.input_ids.shape[0])]
    kinds = set()
    for flags, labels in rows:
        real = flags[: int((labels != -100).nonzero().max()) + 1]  # the row's examples, not its padding
        assert bool(real.all()) or not bool(real.any())  # never task and general in one row
        kinds.add(bool(real.any()))
    assert kinds == {True, False}
    assert sum(int((b.labels != -100).sum()) for b in batches) == sum(
        sum(1 for x in e.labels if x != -100) - (e.labels[0] != -100) for e in task + general)
