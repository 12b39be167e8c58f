"""The device: synchronisation, peak memory, peak FLOP/s."""

from __future__ import annotations

import gc
import time

GIB = 2**30


class Device:
    def __init__(self, cpu: bool):
        import torch

        self.cpu = cpu
        self.torch = torch.device("cpu" if cpu else "cuda")
        self.context_bytes = 0
        if not cpu:
            if not torch.cuda.is_available():
                raise SystemExit("no CUDA device visible: run on the GPU machine, or pass --cpu-dry-run")
            torch.cuda.init()
            a = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
            (a @ a).sum().item()  # cuBLAS handle and workspace
            free, total = torch.cuda.mem_get_info()
            self.context_bytes = total - free - torch.cuda.memory_reserved()

    def sync(self) -> None:
        if not self.cpu:
            import torch

            torch.cuda.synchronize()

    def release(self) -> None:
        gc.collect()
        if not self.cpu:
            import torch

            torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        self.release()
        if not self.cpu:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        """Peak memory since ``reset_peak``: on a GPU what nvidia-smi would show at the peak (the allocator's peak
        reservation + the CUDA context measured at start); on the CPU the process's peak RSS (whole run)."""
        from tunesmith.train.telemetry import peak_memory_bytes

        if self.cpu:
            rss = peak_memory_bytes(self.torch)
            return {"bytes": rss, "note": "process peak RSS (whole run)"}
        import torch

        alloc, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        return {"bytes": reserved + self.context_bytes, "allocated": alloc, "reserved": reserved,
                "context": self.context_bytes}

    def resident_bytes(self) -> int:
        if self.cpu:
            return 0
        import torch

        return torch.cuda.memory_allocated()


def flops_text(x: float) -> str:
    return f"{x / 1e12:.0f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def measure_bf16_matmul_peak(device: Device, seconds: float = 1.0) -> float:
    """Achieved bf16 matmul FLOP/s of this device (8192^3 on a GPU; a small fp32 one on the CPU dry run)."""
    import torch

    if device.cpu:
        from tunesmith.train.telemetry import measure_matmul_peak

        return measure_matmul_peak(seconds=0.2, n=256)
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        reps += 10
    return 2 * n**3 * reps / (time.perf_counter() - t0)
