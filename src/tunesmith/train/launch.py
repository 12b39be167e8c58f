"""Launch `tunesmith train` on several processes through torchrun (never a home-made launcher)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tunesmith.console import console
from tunesmith.errors import TunesmithError


def torchrun_command(config: Path, overrides: list[str], *, nproc: int, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, resume: bool = False) -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    torchrun = str(exe) if exe.exists() else shutil.which("torchrun")
    if torchrun is None:
        raise TunesmithError("torchrun is not installed", hint="it ships with torch: reinstall torch")
    cmd = [torchrun, f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise TunesmithError("multi-node training needs --rdzv-endpoint host:port (node 0's address)")
        cmd += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"]
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "tunesmith.cli", "train", str(config), *overrides]
    if resume:
        cmd.append("--resume")
    return cmd


def launch_torchrun(config: Path, overrides: list[str], **kw) -> int:
    cmd = torchrun_command(config, overrides, **kw)
    console.print("[bold]launch[/]: " + " ".join(cmd))
    return subprocess.call(cmd)
