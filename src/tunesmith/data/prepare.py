"""Prepare a dataset: read rows, validate, quarantine rejects, split, write.

Every input row ends up in exactly one place: a split file or ``rejected.jsonl`` (with its line
number and reason). ``stats.json`` counts them so nothing is lost silently.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.config import DataConfig
from tunesmith.data.formats import READERS, RowError, detect_format
from tunesmith.data.records import Record
from tunesmith.errors import DataError
from tunesmith.utils.io import read_jsonl, write_json, write_jsonl

SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    train: list[Record]
    validation: list[Record]
    test: list[Record]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Record]:
        return getattr(self, name)


def read_records(path: Path, cfg: DataConfig) -> tuple[list[Record], list[dict[str, Any]]]:
    """Read a JSONL file into records; rows that fail go to the returned rejects with line and reason."""
    records: list[Record] = []
    rejected: list[dict[str, Any]] = []
    fmt = cfg.format
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise RowError(f"each line must be a JSON object, got {type(row).__name__}")
                row_fmt = detect_format(row) if fmt == "auto" else fmt
                record = READERS[row_fmt](row, system_prompt=cfg.system_prompt)
            except json.JSONDecodeError as e:
                rejected.append({"file": str(path), "line": lineno, "reason": f"malformed JSON: {e.msg} at column {e.colno}", "raw": line.rstrip("\n")})
                continue
            except RowError as e:
                rejected.append({"file": str(path), "line": lineno, "reason": str(e), "raw": line.rstrip("\n")})
                continue
            record["id"] = f"{path.name}:{lineno}"
            if cfg.stratify_field and isinstance(row.get(cfg.stratify_field), str):
                record["label"] = row[cfg.stratify_field]
            records.append(record)
    return records, rejected


def split_records(records: list[Record], cfg: DataConfig, seed: int) -> dict[str, list[Record]]:
    """Seeded split; stratified by ``label`` when records carry one (each label keeps its share)."""
    rng = random.Random(seed)
    groups: dict[Any, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.get("label")].append(r)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for key in sorted(groups, key=str):
        items = groups[key]
        rng.shuffle(items)
        n_test = round(len(items) * cfg.test_fraction)
        n_val = round(len(items) * cfg.validation_fraction)
        out["test"] += items[:n_test]
        out["validation"] += items[n_test : n_test + n_val]
        out["train"] += items[n_test + n_val :]
    for s in SPLITS:
        rng.shuffle(out[s])
    return out


def prepare_data(cfg: DataConfig, input_path: Path, out_dir: Path | None, *, seed: int) -> PreparedData:
    if not input_path.is_file():
        raise DataError(f"data file {input_path} does not exist", hint="set data.train_file (relative to the config file)")
    records, rejected = read_records(input_path, cfg)
    n_rows = len(records) + len(rejected)
    if cfg.max_examples is not None and len(records) > cfg.max_examples:
        rng = random.Random(seed)
        records = rng.sample(records, cfg.max_examples)
    if not records:
        raise DataError(f"{input_path}: no usable rows ({len(rejected)} rejected)", hint="see rejected.jsonl for why")
    splits = split_records(records, cfg, seed)
    stats = {
        "input_file": str(input_path),
        "rows_read": n_rows,
        "rejected": len(rejected),
        "kept": len(records),
        "unused_by_max_examples": n_rows - len(rejected) - len(records),
        **{f"{s}_examples": len(splits[s]) for s in SPLITS},
    }
    data = PreparedData(**splits, rejected=rejected, stats=stats)
    if out_dir is not None:
        save_prepared(data, out_dir)
    return data


def save_prepared(data: PreparedData, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_jsonl(out_dir / f"{s}.jsonl", data.split(s))
    write_jsonl(out_dir / "rejected.jsonl", data.rejected)
    write_json(out_dir / "stats.json", data.stats)


def load_prepared(out_dir: Path) -> PreparedData:
    missing = [s for s in SPLITS if not (out_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise DataError(f"prepared data in {out_dir} lacks {', '.join(missing)}", hint="run `tunesmith data` first")
    stats = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").is_file() else {}
    return PreparedData(**{s: read_jsonl(out_dir / f"{s}.jsonl") for s in SPLITS}, stats=stats)
