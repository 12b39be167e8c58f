"""The machine `tunesmith advise` runs on, measured: its device and its peak FLOP/s, for a time estimate
beside the GPU catalogue's.

The measurement is training's own (``train.telemetry``: a short fp32 matmul probe on a CPU, the
datasheet bf16 peak of a known GPU), imported inside :func:`probe_machine` so that importing advise
loads no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tunesmith.estimate.cost import CPU_MFU, DEFAULT_MFU


@dataclass(frozen=True)
class Machine:
    name: str
    device: str  # cpu | cuda
    peak_flops: float | None  # None: a GPU the datasheet table does not know
    peak_source: str
    memory_bytes: int | None

    def mfu(self, method: str) -> float:
        return CPU_MFU if self.device == "cpu" else DEFAULT_MFU[method]


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def probe_machine(seconds: float = 0.3) -> Machine:
    """The first GPU if there is one, else the CPU with its matmul peak measured now (``seconds`` long)."""
    import torch

    from tunesmith.train.telemetry import device_peak, measure_matmul_peak

    if torch.cuda.is_available():
        dev = torch.device("cuda", 0)
        peak = device_peak(dev, torch.bfloat16)  # the nominal bf16 peak training's MFU uses
        return Machine(torch.cuda.get_device_name(dev), "cuda", peak.flops_per_s, peak.source,
                       int(torch.cuda.get_device_properties(dev).total_memory))
    peak = measure_matmul_peak(seconds=seconds)
    return Machine(f"this CPU ({torch.get_num_threads()} threads)", "cpu", peak,
                   "fp32 matmul probe, measured now", _ram_bytes())
