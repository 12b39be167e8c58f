"""PEFT adapters with non-zero B matrices on tiny models, for the deploy/serve/eval tests; and ``one_torch_thread``.

``one_torch_thread`` is an autouse module-scoped fixture: it applies to each test module that imports it
(``from support.adapters import one_torch_thread  # noqa: F401``) and to no other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    method: str = "lora",
    seed: int = 0,
    r: int = 4,
    scale: float = 0.5,
    targets=("q_proj", "k_proj", "v_proj", "o_proj", "up_proj"),
) -> Path:
    """Save a PEFT adapter for the model in ``base_dir`` whose B matrices are random (so merges change outputs)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if method == "qlora":
        from tunesmith.deploy.merge import bnb_nf4_config

        kwargs["quantization_config"] = bnb_nf4_config(torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, **kwargs)
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), use_dora=(method == "dora"), lora_dropout=0.0)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            elif "lora_magnitude" in name:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Deploy/serve tests use tiny models: on the shared 2-core CI box one torch thread is several times
    faster than two (no thread waiting on a descheduled sibling). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
