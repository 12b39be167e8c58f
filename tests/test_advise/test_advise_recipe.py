"""The recipe follows the model, the method and the data: the learning rate by model size and method, rows
that pack several examples, epochs from the data size; the seed's recipe stays available by name."""

from __future__ import annotations

import pytest

from tunesmith.estimate.recipe import LORA_LR_ANCHORS, choose_recipe, learning_rate

SMOL, LLAMA_8B = 134_515_008, 8_030_261_248


def test_lora_rate_depends_on_model_size_and_full_fine_tuning_takes_a_tenth():
    small, why_small = learning_rate(SMOL, "lora")
    big, why_big = learning_rate(LLAMA_8B, "lora")
    assert small == 2e-3 and "measured here" in why_small  # the support-tickets run
    assert big == 3e-4 and "Tinker" in why_big
    assert learning_rate(SMOL, "full")[0] == pytest.approx(small / 10)
    assert learning_rate(LLAMA_8B, "full")[0] == pytest.approx(3e-5)
    assert "LoRA Without Regret" in learning_rate(LLAMA_8B, "full")[1]
    assert learning_rate(SMOL, "qlora")[0] == learning_rate(SMOL, "dora")[0] == small
    # between anchors: monotone, within the neighbours' rates
    mid = learning_rate(360e6, "lora")[0]
    assert 1e-3 < mid < 2e-3
    rates = [learning_rate(n, "lora")[0] for n in (1e8, 5e8, 2e9, 6e9, 3e10, 1e11)]
    assert rates == sorted(rates, reverse=True)
    assert [lr for _, lr, _ in LORA_LR_ANCHORS] == sorted((lr for _, lr, _ in LORA_LR_ANCHORS), reverse=True)


def test_lora_rate_scales_with_alpha():
    assert learning_rate(SMOL, "lora", alpha=16)[0] == pytest.approx(4e-3)
    assert "alpha 16" in learning_rate(SMOL, "lora", alpha=16)[1]
    assert learning_rate(SMOL, "full", alpha=16)[0] == pytest.approx(2e-4)  # no adapters: alpha does not matter


def test_the_issues_extraction_task_packs_several_examples_per_row():
    """~210-token emails: the seed recipe's rows of 256 hold one each; the default rows hold four."""
    seed = choose_recipe("seed", params=SMOL, method="lora", train_examples=800, token_mean=210, token_max=240)
    assert (seed.epochs, seed.batch_size, seed.grad_accum, seed.lr, seed.max_seq_length) == (3, 4, 4, 2e-4, 256)
    auto = choose_recipe("auto", params=SMOL, method="lora", train_examples=800, token_mean=210, token_max=240)
    assert auto.max_seq_length >= 3 * 210 and auto.max_seq_length % 64 == 0
    assert auto.lr == 2e-3
    examples_per_step = auto.batch_size * auto.grad_accum * auto.max_seq_length / 210
    assert 14 <= examples_per_step <= 20  # ~16, the seed's 4 x 4 examples
    assert auto.epochs == pytest.approx(1.2)  # 1,000 examples seen
    # the seed's rows follow the longest example, capped by the config's maximum
    assert choose_recipe("seed", params=SMOL, method="lora", train_examples=800, token_mean=210, token_max=3000,
                         seed_max_seq_length=1024).max_seq_length == 1024


@pytest.mark.parametrize("n,epochs", [(100, 3.0), (500, 2.0), (1000, 1.0), (20_000, 1.0)])
def test_epochs_follow_the_data_size(n, epochs):
    assert choose_recipe("auto", params=SMOL, method="lora", train_examples=n, token_mean=100,
                         token_max=150).epochs == epochs


def test_under_a_time_budget_the_recipe_plans_the_most_epochs_and_the_budget_cuts():
    budgeted = choose_recipe("auto", params=SMOL, method="lora", train_examples=720, token_mean=210, token_max=240,
                             budgeted=True)
    assert budgeted.epochs == 3.0 and "time budget plans how many" in budgeted.reasons["epochs"]
    assert choose_recipe("auto", params=SMOL, method="lora", train_examples=720, token_mean=210,
                         token_max=240).epochs == pytest.approx(1.4)


def test_long_examples_get_rows_of_their_own_length_and_approximate_counts_get_room():
    r = choose_recipe("auto", params=SMOL, method="lora", train_examples=1000, token_mean=1500, token_max=3000)
    assert r.max_seq_length == 3008  # the longest example must fit (the data stage rejects longer ones)
    approx = choose_recipe("auto", params=SMOL, method="lora", train_examples=1000, token_mean=100, token_max=200,
                           length_margin=1.25)
    assert approx.max_seq_length >= 1.25 * 4 * 100


def test_unknown_model_size_leaves_the_rate_and_unknown_recipe_is_an_error():
    assert choose_recipe("auto", params=None, method="lora", train_examples=100, token_mean=10, token_max=20).lr is None
    with pytest.raises(ValueError, match="unknown recipe"):
        choose_recipe("fast", params=SMOL, method="lora", train_examples=100, token_mean=10, token_max=20)


def test_time_and_memory_on_this_machine():
    """The local estimate is the catalogue's FLOPs at the machine's peak and MFU (30 % of a CPU's probe)."""
    from tunesmith.advise.machine import Machine
    from tunesmith.advise.recommend import local_estimate, local_reason
    from tunesmith.estimate.arch import Architecture
    from tunesmith.estimate.cost import training_flops_per_token

    arch = Architecture.from_catalog("smollm2-135m")
    kw = dict(method="lora", tokens=1e6, batch_size=4, seq_len=512, lora_r=16, lora_targets=None)
    gpu = local_estimate(arch, Machine("NVIDIA H200", "cuda", 989e12, "datasheet bf16 peak", 139 * 2**30), **kw)
    assert gpu.seconds == pytest.approx(training_flops_per_token(arch, "lora") * 1e6 / (989e12 * 0.35))
    assert gpu.fits and gpu.memory.dtype == "bfloat16"
    cpu = local_estimate(arch, Machine("this CPU (2 threads)", "cpu", 1e11, "fp32 matmul probe", 2**30), **kw)
    assert cpu.seconds == pytest.approx(training_flops_per_token(arch, "lora") * 1e6 / (1e11 * 0.30))
    assert cpu.memory.dtype == "float32" and cpu.fits is False
    assert "does NOT fit" in local_reason(cpu) and "100 GFLOP/s" in local_reason(cpu)
    unknown = local_estimate(arch, Machine("Some GPU", "cuda", None, "not in the datasheet table", None), **kw)
    assert unknown.seconds is None and unknown.fits is None and "time unknown" in local_reason(unknown)
