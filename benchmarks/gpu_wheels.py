"""The wheels the GPU check's device lacks, in a folder of at most 64 MiB (the device has no network).

    python benchmarks/gpu_wheels.py --cuda 12.8 --out .gpu-wheels    # on a machine with PyPI access

The device has Python 3.12 with torch (CUDA), transformers, peft, accelerate, safetensors, tokenizers, typer, rich
and matplotlib (and what they pull in: numpy, pyyaml, jinja2, psutil, huggingface-hub, httpx, fsspec, ...).
Wheels for CPython 3.12 (``--python``) / manylinux x86_64 are downloaded without dependency resolution, in groups,
and a group is kept only if it still fits the budget, in this order (``--groups`` changes it):

* ``tunesmith``: what tunesmith itself imports and the device lacks (pydantic, the server's fastapi/uvicorn, ...)
* ``trl``: TRL's SFTTrainer for the baseline, with datasets, pyarrow and pandas (pyarrow alone is ~41 MiB)
* ``bitsandbytes``: for QLoRA, cut down to the one CUDA build ``--cuda`` names (the full wheel carries builds for
  every CUDA and ROCm version: 41 MiB; one CUDA 12.x build ~7 MiB, one 13.x build ~4 MiB)
* ``liger``: liger-kernel (Triton comes with CUDA torch)

A group left out is reported here, and the GPU check then prints "<package>: not installed, skipped".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MIB = 2**20
GROUPS = {
    "tunesmith": ["pydantic>=2.8,<3", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
                  "fastapi>=0.115,<1", "starlette", "annotated-doc", "uvicorn>=0.30,<1", "h11", "anyio", "sniffio",
                  "prometheus-client>=0.20,<1", "python-multipart"],
    # datasets 4.x accepts pyarrow 21 (41 MiB); datasets 5 needs pyarrow >= 24 (50+ MiB)
    # datasets 4 imports httpx (newer huggingface-hub releases use httpx2 instead)
    "trl": ["trl>=1.10,<2", "datasets>=4.7,<5", "pyarrow==21.0.0", "pandas>=2.1.1", "dill<0.4.2",
            "multiprocess<0.70.20", "xxhash", "httpx<1", "httpcore", "certifi", "idna"],
    "bitsandbytes": ["bitsandbytes>=0.50,<1"],
    "liger": ["liger-kernel"],
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def download(specs: list[str], dest: Path, python: str) -> list[Path]:
    cp = "cp" + python.replace(".", "")
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", cp, "--abi", "abi3",
              "--abi", "none", *(x for p in PLATFORMS for x in ("--platform", p))]
    before = set(dest.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "-d", str(dest), *target, *specs], check=True)
    return sorted(set(dest.glob("*.whl")) - before)


def cuda_build_for(cuda: str, builds: list[str]) -> str:
    """The build bitsandbytes itself loads for runtime ``cuda`` (its own rule): the exact version, else the highest
    one below it of the same major, else the lowest one above it of the same major. ``builds``: e.g. cuda128."""
    want = tuple(int(x) for x in cuda.split(".")[:2])
    versions = {(int(b[4:-1]), int(b[-1])): b for b in builds if b.startswith("cuda") and b[4:].isdigit()}
    same = sorted(v for v in versions if v[0] == want[0])
    below = [v for v in same if v <= want]
    pick = want if want in versions else (below[-1] if below else (same[0] if same else None))
    if pick is None:
        raise SystemExit(f"bitsandbytes has no build for CUDA {cuda} (it has {', '.join(sorted(builds))})")
    return versions[pick]


def keep_one_cuda_build(wheel: Path, cuda: str, build: str | None = None) -> Path:
    """Rewrite a bitsandbytes wheel with only the native library bitsandbytes would load for CUDA ``cuda`` (or
    ``build``) and the CPU one; the RECORD lines of the dropped files go too (pip writes its own on install)."""
    with zipfile.ZipFile(wheel) as z:
        libs = {n: Path(n).stem.removeprefix("libbitsandbytes_") for n in z.namelist()
                if Path(n).name.startswith("libbitsandbytes_")}
        tag = build or cuda_build_for(cuda, list(libs.values()))
        if tag not in libs.values():
            raise SystemExit(f"{wheel.name} has no {tag} build (it has {', '.join(sorted(libs.values()))})")
        keep = {n for n, build in libs.items() if build in (tag, "cpu")}
        dropped = {Path(n).name for n in libs if n not in keep}
        out = wheel.with_name(wheel.name + ".tmp")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in z.infolist():
                if item.filename in libs and item.filename not in keep:
                    continue
                data = z.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    data = b"\n".join(line for line in data.split(b"\n")
                                      if Path(line.split(b",")[0].decode()).name not in dropped)
                dst.writestr(item, data)
    out.replace(wheel)
    print(f"bitsandbytes: kept libbitsandbytes_{tag} for CUDA {cuda} (and the CPU library)")
    return wheel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuda", required=True, help="CUDA version of the device's torch (torch.version.cuda), e.g. 12.8")
    ap.add_argument("--out", type=Path, default=Path(".gpu-wheels"))
    ap.add_argument("--budget-mib", type=float, default=64.0)
    ap.add_argument("--python", default="3.12", help="the device's Python version")
    ap.add_argument("--bnb-build", help="keep this bitsandbytes build instead (e.g. cuda126 for a 12.8 runtime: "
                    "bitsandbytes falls back to the highest 12.x build below the runtime, and it is 1 MiB smaller)")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"priority order, a subset of {','.join(GROUPS)}")
    args = ap.parse_args()
    if any(args.out.glob("*.whl")):
        raise SystemExit(f"{args.out} already holds wheels: remove it (or pass another --out)")
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for group in args.groups.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            wheels = download(GROUPS[group], Path(tmp), args.python)
            if group == "bitsandbytes":
                wheels = [keep_one_cuda_build(w, args.cuda, args.bnb_build) for w in wheels]
            size = sum(w.stat().st_size for w in wheels)
            names = ", ".join(f"{w.name.split('-')[0]} {w.stat().st_size / MIB:.1f}" for w in wheels)
            if total + size > args.budget_mib * MIB:
                print(f"left out {group} ({size / MIB:.1f} MiB: {names}): {total / MIB:.1f} MiB already taken of "
                      f"{args.budget_mib:.0f}")
                continue
            for w in wheels:
                w.replace(args.out / w.name)
            total += size
            print(f"kept {group} ({size / MIB:.1f} MiB: {names})")
    print(f"{args.out}: {total / MIB:.1f} MiB of {args.budget_mib:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
