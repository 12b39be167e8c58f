"""Training time and cost from FLOPs, and the break-even of a fine-tune against an API.

Time: FLOPs / (GPUs x peak bf16 FLOP/s x MFU), with

* full fine-tuning ~ 6 N FLOPs per token (2N forward, 4N backward: activation and weight grads);
* LoRA/DoRA ~ 4 N per token (no weight gradients for the frozen base; the adapters are <1%);
* gradient checkpointing re-runs the forward: + 2 N per token;
* QLoRA: as LoRA, at a lower MFU (de-quantising each NF4 weight before every matmul).

MFU (model FLOP utilisation) is an assumption, stated in every output; the defaults are typical
of single-GPU Hugging Face training with SDPA attention and can be overridden.

Break-even: the fine-tune costs a one-off (training + evaluation) and a monthly price to serve
(per-token price of a hosted fine-tuned model, or a dedicated GPU's hours); the API costs
monthly tokens x its price. Days to break even = one-off / (monthly saving / 30.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunesmith.estimate.arch import Architecture
from tunesmith.estimate.hardware import GPU

DEFAULT_MFU = {"full": 0.40, "lora": 0.35, "dora": 0.30, "qlora": 0.20}
# Training on a CPU, as a share of its measured fp32 matmul peak (train.telemetry.measure_matmul_peak).
# Measured here: examples/support-tickets (SmolLM2-135M, LoRA, 80 steps of 4 x 512 tokens) took ~11 min on
# 2 cores, ~36 % of the probe's peak; 30 % leaves room for the sharing that makes CPU peaks vary.
CPU_MFU = 0.30
FLOPS_PER_TOKEN_FACTOR = {"full": 6.0, "lora": 4.0, "dora": 4.0, "qlora": 4.0}
DAYS_PER_MONTH = 30.4
HOURS_PER_MONTH = 730.0


@dataclass
class TrainingTime:
    method: str
    tokens: float  # tokens processed over all epochs
    flops: float
    flops_per_token: float
    mfu: float
    gpu: str
    num_gpus: int
    seconds: float
    usd: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def training_flops_per_token(arch: Architecture, method: str, *, gradient_checkpointing: bool = False) -> float:
    factor = FLOPS_PER_TOKEN_FACTOR[method] + (2.0 if gradient_checkpointing else 0.0)
    return factor * arch.total_params


def estimate_training_time(
    arch: Architecture,
    method: str,
    *,
    tokens: float,
    gpu: GPU,
    num_gpus: int = 1,
    mfu: float | None = None,
    gradient_checkpointing: bool = False,
    price_per_hour: float | None = None,
) -> TrainingTime:
    """Wall time and cost to push ``tokens`` (examples x tokens each x epochs) through training."""
    mfu = DEFAULT_MFU[method] if mfu is None else mfu
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU must be in (0, 1], got {mfu}")
    per_token = training_flops_per_token(arch, method, gradient_checkpointing=gradient_checkpointing)
    flops = per_token * tokens
    seconds = flops / (num_gpus * gpu.bf16_tflops * 1e12 * mfu)
    price = gpu.usd_per_hour if price_per_hour is None else price_per_hour
    return TrainingTime(method, tokens, flops, per_token, mfu, gpu.name, num_gpus, seconds, seconds / 3600 * price * num_gpus)


def estimate_seconds_at(arch: Architecture, method: str, *, tokens: float, peak_flops: float, mfu: float,
                        gradient_checkpointing: bool = False) -> float:
    """Wall time to train ``tokens`` on one device of ``peak_flops`` FLOP/s at ``mfu`` (e.g. this machine)."""
    if peak_flops <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"need a positive peak and an MFU in (0, 1], got {peak_flops}, {mfu}")
    return training_flops_per_token(arch, method, gradient_checkpointing=gradient_checkpointing) * tokens / (peak_flops * mfu)


def mfu_for_hours(arch: Architecture, method: str, *, tokens: float, gpu: GPU, hours: float,
                  num_gpus: int = 1, gradient_checkpointing: bool = False) -> float:
    """The MFU at which training ``tokens`` would take ``hours`` (to compare with quoted figures)."""
    flops = training_flops_per_token(arch, method, gradient_checkpointing=gradient_checkpointing) * tokens
    return flops / (hours * 3600 * num_gpus * gpu.bf16_tflops * 1e12)


def estimate_eval_seconds(arch: Architecture, gpu: GPU, *, examples: int, prompt_tokens: float,
                          new_tokens: int, batch_size: int = 16, weight_bytes_per_param: float = 2.0) -> float:
    """Greedy evaluation of base and tuned model: prefill at 40% MFU, decode bound by memory bandwidth.

    Each decode step reads every weight once for the whole batch, so a batch of ``batch_size``
    prompts generates ``new_tokens`` steps in new_tokens x weight_bytes / (60% of bandwidth).
    """
    prefill = 2 * arch.total_params * examples * prompt_tokens / (gpu.bf16_tflops * 1e12 * 0.4)
    steps = math.ceil(examples / batch_size) * new_tokens
    decode = steps * arch.total_params * weight_bytes_per_param / (gpu.bandwidth_gbs * 1e9 * 0.6)
    return 2 * (prefill + decode)  # base and tuned


@dataclass
class BreakEven:
    monthly_tokens: float
    api_usd_per_m: float
    api_monthly_usd: float
    serve_monthly_usd: float
    serve_basis: str
    one_off_usd: float
    monthly_saving_usd: float
    days: float | None  # None: never (no saving)

    @property
    def pays_off(self) -> bool:
        return self.days is not None


def break_even(*, monthly_tokens: float, api_usd_per_m: float, one_off_usd: float,
               ft_usd_per_m: float | None = None, hosting_usd_per_hour: float | None = None,
               hosting_hours_per_month: float = HOURS_PER_MONTH) -> BreakEven:
    """Monthly saving of serving the fine-tune instead of the API, and days until it repays ``one_off_usd``.

    Serving cost: ``ft_usd_per_m`` per million tokens (a hosted fine-tuned model), or a dedicated
    GPU at ``hosting_usd_per_hour`` for ``hosting_hours_per_month`` (default: always on).
    """
    if monthly_tokens < 0 or api_usd_per_m < 0 or one_off_usd < 0:
        raise ValueError("tokens, prices and costs must not be negative")
    api = monthly_tokens / 1e6 * api_usd_per_m
    if ft_usd_per_m is not None:
        serve = monthly_tokens / 1e6 * ft_usd_per_m
        basis = f"${ft_usd_per_m:g}/M tokens"
    elif hosting_usd_per_hour is not None:
        serve = hosting_usd_per_hour * hosting_hours_per_month
        basis = f"dedicated GPU ${hosting_usd_per_hour:g}/h x {hosting_hours_per_month:g} h/month"
    else:
        raise ValueError("give ft_usd_per_m or hosting_usd_per_hour")
    saving = api - serve
    days = one_off_usd / (saving / DAYS_PER_MONTH) if saving > 0 else None
    return BreakEven(monthly_tokens, api_usd_per_m, api, serve, basis, one_off_usd, saving, days)
