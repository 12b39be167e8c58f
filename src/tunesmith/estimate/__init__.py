"""Estimates before anything is loaded: model shapes (arch.py), peak training memory (memory.py),
training time, cost and break-even (cost.py), and the GPU catalogue (hardware.py).

Used by ``tunesmith advise`` and by the training pre-flight; depends on neither. Pure Python: no
torch, transformers or peft at import (an import contract in pyproject.toml keeps it so).
"""
