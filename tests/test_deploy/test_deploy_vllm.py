"""`--engine vllm`: the command carries every adapter and a --max-lora-rank that covers the largest rank."""

from __future__ import annotations

import pytest

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.vllm import format_command, max_lora_rank, vllm_command
from tunesmith.errors import TunesmithError

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)


def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts():
    assert max_lora_rank([4]) == 8
    assert max_lora_rank([8, 16]) == 16
    assert max_lora_rank([17, 4]) == 32  # vLLM's default of 16 would refuse this adapter
    assert max_lora_rank([300]) == 320
    with pytest.raises(TunesmithError, match="exceeds"):
        max_lora_rank([1024])


def test_vllm_command_from_adapters(tiny_model_dir, tmp_path):
    a = make_adapter(tiny_model_dir, tmp_path / "a", r=4)
    b = make_adapter(tiny_model_dir, tmp_path / "b", r=24)
    cfg = ServeConfig(port=9000, max_total_tokens=4096)
    argv = vllm_command(cfg, str(tiny_model_dir), {"support-tickets": a, "legal": b})
    assert argv[:3] == ["vllm", "serve", str(tiny_model_dir)]
    assert argv[argv.index("--max-lora-rank") + 1] == "32"
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 3] == [f"support-tickets={a}", f"legal={b}"]
    assert "--enable-lora" in argv and argv[argv.index("--port") + 1] == "9000"
    assert argv[argv.index("--max-model-len") + 1] == "4096"
    assert "'" not in format_command(argv) or " " in str(tmp_path)


def test_vllm_refuses_dora(tiny_model_dir, tmp_path):
    d = make_adapter(tiny_model_dir, tmp_path / "d", method="dora")
    with pytest.raises(TunesmithError, match="DoRA"):
        vllm_command(ServeConfig(), str(tiny_model_dir), {"d": d})
