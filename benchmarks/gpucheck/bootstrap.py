"""What must happen before tunesmith is imported: wheels the device lacks, and this checkout's source on the path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install_wheels(folder: Path) -> Path:
    """Install the wheels in ``folder`` (no index, no dependency resolution) into ``folder/site`` and put that
    first on the path: the device has no network, so packages it lacks travel as wheels."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--wheels {folder}: no .whl files there (benchmarks/gpu_wheels.py makes the folder)")
    target = folder / "site"
    marker = target / ".installed"
    names = "\n".join(w.name for w in wheels)
    if not (marker.is_file() and marker.read_text() == names):
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                              "--disable-pip-version-check", "--target", str(target), *map(str, wheels)], check=False)
        if pip.returncode != 0:
            raise SystemExit(f"--wheels: installing the wheels in {folder} failed (pip's message above)")
        marker.write_text(names)
        print(f"installed {len(wheels)} wheels into {target} in {time.monotonic() - t0:.0f}s", flush=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return target


def use_checkout_source() -> None:
    """Import tunesmith from this checkout (the device runs a copy of the working tree, nothing installed)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
