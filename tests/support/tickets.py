"""Synthetic support-ticket classification rows (instruction/input/output/category) for the advise tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

LABELS = ["billing", "bug", "account", "feature_request"]
WORDS = ["invoice", "charged", "twice", "login", "password", "crash", "app", "error", "refund", "export", "csv", "dark", "mode", "slow", "page", "upgrade", "plan"]


def write_tickets(path: Path, n: int, *, duplicates: int = 0, weights=(1, 1, 1, 1), seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choices(LABELS, weights=weights)[0]
        text = f"Ticket {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
        rows.append({"instruction": "Classify this support ticket.", "input": text, "output": label, "category": label})
    rows += rows[:duplicates]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
