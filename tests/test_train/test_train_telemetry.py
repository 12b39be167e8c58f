"""MFU is computed against an honest peak and never shown above 100%; known third-party noise is
silenced narrowly while the model is loaded and wrapped."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from tunesmith.estimate.hardware import load_gpu_catalog
from tunesmith.train.telemetry import PeakFlops, catalogue_gpu, device_peak, step_line
from tunesmith.utils.quiet import model_loading_noise_silenced


def _record(mfu):
    return {"step": 3, "loss": 1.0, "lr": 1e-4, "grad_norm": 0.5, "tokens_per_s": 1000.0, "mfu": mfu}


def test_a_measured_peak_that_a_step_beats_is_measured_again_and_the_higher_value_kept():
    measured = iter([200.0])
    peak = PeakFlops(100.0, "measured", measure=lambda: next(measured))  # start-up measure on a busy machine
    assert peak.mfu(50.0) == 0.5
    assert peak.mfu(150.0) == 0.75  # 150% of the stale peak: re-measured at 200
    assert peak.flops_per_s == 200.0 and peak.remeasured == 1 and peak.steps_over_peak == 0
    assert peak.mfu(100.0) == 0.5


def test_a_step_faster_than_every_measurement_gets_no_mfu_rather_than_one_above_100_percent():
    peak = PeakFlops(100.0, "measured", measure=lambda: 90.0, remeasures_left=2)  # the machine stays busy
    values = [peak.mfu(150.0) for _ in range(4)]
    assert values == [None] * 4
    assert peak.flops_per_s == 100.0  # a lower re-measurement never lowers the peak
    assert peak.remeasured == 2 and peak.steps_over_peak == 4  # re-measuring is bounded
    assert peak.summary()["steps_over_peak"] == 4


def test_a_nominal_peak_is_never_exceeded_in_what_is_reported():
    peak = PeakFlops(989e12, "nominal")
    assert peak.mfu(500e12) == pytest.approx(500 / 989)
    assert peak.mfu(1200e12) is None and peak.steps_over_peak == 1
    assert PeakFlops(None, "unknown GPU").mfu(1.0) is None


def test_the_step_line_prints_mfu_only_as_a_fraction_of_the_peak():
    assert step_line(_record(0.42), 10).endswith("MFU 42%")
    for bad in (None, 1.56, 0.0):
        assert "MFU" not in step_line(_record(bad), 10)


@pytest.mark.parametrize(("device_name", "entry"), [
    ("NVIDIA H100 80GB HBM3", "H100-80GB"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA L40S", "L40S"),  # not the L4
    ("NVIDIA L4", "L4"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"),
    ("Tesla T4", "T4"),
    ("NVIDIA A10G", "A10G"),
])
def test_cuda_device_names_find_their_gpu_catalogue_entry(device_name, entry):
    assert catalogue_gpu(device_name).name == entry


def test_a_gpu_peak_is_the_catalogues_nominal_figure_and_says_so():
    gpu = load_gpu_catalog()["h100-80gb"]
    peak = device_peak(torch.device("cuda"), torch.bfloat16, device_name="NVIDIA H100 80GB HBM3")
    assert peak.flops_per_s == gpu.bf16_tflops * 1e12 and peak.measure is None
    assert "nominal" in peak.source and "H100-80GB" in peak.source
    # the catalogue has no fp32 figure, and an unknown GPU has none at all: no MFU, and the reason is stated
    fp32 = device_peak(torch.device("cuda"), torch.float32, device_name="NVIDIA H100 80GB HBM3")
    unknown = device_peak(torch.device("cuda"), torch.bfloat16, device_name="NVIDIA B9000")
    assert fp32.flops_per_s is None and "float32" in fp32.source
    assert unknown.flops_per_s is None and "not in the GPU catalogue" in unknown.source


def test_a_cpu_peak_is_measured_and_can_be_measured_again():
    peak = device_peak(torch.device("cpu"), torch.float32)
    assert peak.flops_per_s > 0 and peak.measure is not None and "measured" in peak.source


def test_the_two_known_messages_are_silenced_while_loading_and_nothing_else(tiny_model, caplog):
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    msg = "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip install kernels`"
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):  # the noise is real outside
        getattr(tiny_model, "is_gradient_checkpointing")
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with model_loading_noise_silenced():
            getattr(tiny_model, "is_gradient_checkpointing")
            bnb.warning(msg, "offline")
            bnb.warning("some other bitsandbytes warning")
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
        bnb.warning(msg, "after loading")  # the filter is gone once the model is loaded
    assert [str(w.message) for w in seen] == ["another deprecation"]
    assert [r.getMessage() for r in caplog.records] == [
        "some other bitsandbytes warning", msg % "after loading"]


@pytest.mark.parametrize("method, factor", [("lora", 4), ("full", 6)])
def test_the_lm_head_is_counted_on_label_tokens_only(tiny_model, method, factor):
    """The loss projects only label positions through the LM head, so its FLOPs count per label token: counted
    on every token, a tiny model (whose head dominates) showed an MFU above 100% on a quick CPU."""
    from tunesmith.train.telemetry import training_flops

    cfg = tiny_model.config
    head = cfg.vocab_size * cfg.hidden_size
    matmuls = sum(p.numel() for p in tiny_model.parameters()) - tiny_model.get_input_embeddings().weight.numel()
    if not cfg.tie_word_embeddings:
        matmuls -= head
    flops = training_flops(tiny_model, method=method, seq_len=0)
    assert flops.per_label_token == factor * head
    assert flops.per_token == factor * matmuls
    assert flops.per_second(tokens_per_s=100.0, label_tokens_per_s=10.0) == 100 * flops.per_token + 10 * flops.per_label_token
