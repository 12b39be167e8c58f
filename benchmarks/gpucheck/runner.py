"""Sections in order, each reporting ok / failed (with its traceback) / skipped (with the reason); the time guard
that skips what would overrun the budget, and the watchdog that stops a run past its hard limit."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from gpucheck.device import GIB, Device


class Skip(Exception):
    """The section cannot run here; the message says why."""


@dataclass
class Result:
    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    reason: str = ""
    metrics: dict = field(default_factory=dict)


class Runner:
    """Runs sections in order: a failure prints its traceback and the next section runs; a section whose time
    estimate exceeds what is left of the budget is skipped with the reason."""

    def __init__(self, budget_s: float, device: Device | None, start: float):
        self.budget_s = budget_s
        self.start = start  # time.monotonic() when the process began
        self.device = device
        self.results: list[Result] = []
        self.current = ""

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, name: str, est_s: float | None, fn, *args) -> Result:
        """``est_s``: seconds the section needs (None: set-up that always runs)."""
        self.current = name
        print(f"\n== {name} ==", flush=True)
        t0 = time.monotonic()
        if est_s is not None and self.left() < est_s:
            res = Result(name, "skipped", reason=f"time guard: {self.left():.0f}s of the {self.budget_s:.0f}s budget "
                                                 f"left, this section needs about {est_s:.0f}s")
        else:
            try:
                res = Result(name, "ok", metrics=fn(*args) or {})
            except Skip as e:
                res = Result(name, "skipped", reason=str(e))
            except Exception as e:  # noqa: BLE001 - report it and go on with the next section
                traceback.print_exc()
                sys.stdout.flush()
                res = Result(name, "failed", reason=f"{type(e).__name__}: {e}".strip()[:500])
        res.seconds = time.monotonic() - t0
        if self.device is not None:
            self.device.release()
            left_behind = self.device.resident_bytes()
            if left_behind > GIB // 2:
                print(f"  note: {left_behind / GIB:.1f} GiB still allocated on the GPU after this section")
        self.results.append(res)
        tail = f": {res.reason}" if res.reason else ""
        print(f"-- {name}: {res.status.upper() if res.status == 'failed' else res.status} "
              f"({res.seconds:.1f}s){tail}", flush=True)
        self.current = ""
        return res

    def get(self, name: str) -> Result | None:
        return next((r for r in self.results if r.name == name), None)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == "failed"]


def start_watchdog(runner: Runner, hard_s: float, finish) -> threading.Timer:
    """Stop the process at ``hard_s`` after start even if a section hangs, printing what is known so far."""

    def fire() -> None:
        print(f"\ntime guard: {hard_s:.0f}s reached during '{runner.current}', stopping here", flush=True)
        runner.results.append(Result(runner.current or "?", "failed", reason="stopped by the time guard"))
        with contextlib.suppress(Exception):
            finish()
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(max(1.0, hard_s - (time.monotonic() - runner.start)), fire)
    timer.daemon = True
    timer.start()
    return timer
