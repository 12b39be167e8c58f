"""The GPU catalogue: memory, bf16 dense peak, bandwidth and a typical on-demand price per GPU.

Shipped as ``data/gpus.json`` (with sources and date); ``load_gpu_catalog(extra_file)`` merges a
user's file of the same layout over it, so prices and new GPUs are one JSON edit away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError, catalog_entry
from tunesmith.estimate.memory import GIB


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    bf16_tflops: float
    bandwidth_gbs: float
    usd_per_hour: float
    source: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


def load_gpu_catalog(extra_file: str | Path | None = None) -> dict[str, GPU]:
    from tunesmith.estimate.arch import _read_json_catalog

    raw = _read_json_catalog(None, "gpus.json", "gpus")
    names = {k.lower(): k for k in _original_names(None)}
    if extra_file is not None:
        user = _read_json_catalog(Path(extra_file), "", "gpus")
        names.update({k.lower(): k for k in _original_names(Path(extra_file))})
        for k, v in user.items():
            raw[k] = {**raw.get(k, {}), **v}
    out: dict[str, GPU] = {}
    for key, e in raw.items():
        try:
            out[key] = GPU(
                name=names.get(key, key),
                memory_gib=float(e["memory_gib"]),
                bf16_tflops=float(e["bf16_tflops"]),
                bandwidth_gbs=float(e["bandwidth_gbs"]),
                usd_per_hour=float(e["usd_per_hour"]),
                source=str(e.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TunesmithError(
                f"GPU catalogue entry '{key}' is incomplete or not numeric ({err})",
                hint="each GPU needs memory_gib, bf16_tflops, bandwidth_gbs, usd_per_hour",
            ) from None
    return out


def _original_names(path: Path | None) -> list[str]:
    import json
    from importlib import resources

    text = (resources.files("tunesmith.estimate").joinpath("data", "gpus.json").read_text(encoding="utf-8")
            if path is None else path.read_text(encoding="utf-8"))
    return list(json.loads(text).get("gpus", {}))


def get_gpu(name: str, catalog: dict[str, GPU] | None = None) -> GPU:
    catalog = catalog if catalog is not None else load_gpu_catalog()
    return catalog_entry(catalog, name, what="GPU", shown=lambda key: catalog[key].name,
                         hint=f"known GPUs: {', '.join(g.name for g in catalog.values())}; "
                              "add your own with --gpu-catalog FILE")
