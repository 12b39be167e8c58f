"""Input files and a prepare() shortcut shared by the data tests: write rows, prepare them, account for every row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.data.config import DataConfig
from tunesmith.data.prepare import prepare_data


def write_lines(path: Path, lines: list[str | dict[str, Any]], newline: str = "\n") -> Path:
    text = newline.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + newline
    path.write_text(text, encoding="utf-8", newline="")
    return path


def prepare(path: Path, out: Path | None = None, **cfg: Any):
    cfg.setdefault("max_rejected_fraction", 1.0)
    cfg.setdefault("validation_fraction", 0.0)
    cfg.setdefault("test_fraction", 0.0)
    cfg.setdefault("report", False)
    return prepare_data(DataConfig(train_file=str(path), **cfg), None, out, seed=0, base_dir=path.parent)


def all_records(data) -> list[dict[str, Any]]:
    return data.train + data.validation + data.test


def accounted(stats: dict[str, Any]) -> int:
    return stats["kept"] + stats["rejected"] + stats["duplicates"] + stats["leakage_removed"] + stats["unused_by_max_examples"]


def alpaca(i: int, **extra: Any) -> dict[str, Any]:
    """A distinct alpaca row: 30 words drawn (seeded by ``i``) from a 2,000-word vocabulary."""
    import random

    rng = random.Random(i)
    text = " ".join(f"w{rng.randrange(2000)}" for _ in range(30))
    return {"instruction": f"Answer ticket {i}", "input": text, "output": f"Answer number {i}: {rng.choice(['yes', 'no'])}", **extra}
