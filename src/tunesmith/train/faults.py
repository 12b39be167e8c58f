"""Fault injection for the resume tests: a named test helper, inert unless its variable is set.

``TUNESMITH_FAULT_KILL_AFTER_STEP=N`` makes a training process SIGKILL itself right after
optimizer step N has been logged (before that step's checkpoint, if one is due), so the tests
can check that ``--resume`` recovers from a hard kill at a known point.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

KILL_AFTER_STEP = "TUNESMITH_FAULT_KILL_AFTER_STEP"


def kill_after_step_hook() -> Callable[[dict], None] | None:
    """An ``on_step`` hook that kills this process after step N, or None when the variable is unset."""
    fault_step = int(os.environ.get(KILL_AFTER_STEP, "0"))
    if not fault_step:
        return None

    def kill(record: dict) -> None:
        if record["step"] == fault_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill
