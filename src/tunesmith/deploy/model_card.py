"""The model card (README.md) written beside an exported model: base, data, training config, eval numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tunesmith.utils.io import write_text


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _table(d: dict) -> list[str]:
    rows = ["| key | value |", "| --- | --- |"]
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False)
        cell = str(v).replace("|", r"\|")
        rows.append(f"| {k} | {cell} |")
    return rows


def build_model_card(*, base: str, adapter, method: str, dtype: str, run_dir: str | Path | None) -> str:
    run = Path(run_dir) if run_dir else None
    stats = _read_json(run / "data" / "stats.json") if run else None
    metrics = _read_json(run / "metrics.json") if run else None
    train_cfg = None
    if run and (run / "config.yaml").is_file():
        try:
            train_cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError:
            train_cfg = None
    front = {"base_model": base, "library_name": "transformers", "tags": ["tunesmith", method, "merged"]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", "# Merged fine-tuned model", ""]
    lines += [
        f"- **Base model:** `{base}`",
        f"- **Method:** {method} (rank {adapter.rank}{', DoRA' if adapter.use_dora else ''}), merged into the base"
        + (" de-quantised from NF4 exactly as in training" if method == "qlora" else ""),
        f"- **Saved dtype:** {dtype}",
        f"- **Adapter:** `{adapter.path}`",
        "",
    ]
    lines += ["## Evaluation (headline numbers)", ""]
    lines += _table(metrics) if isinstance(metrics, dict) else ["(no metrics.json in the run folder)"]
    lines += ["", "## Data", ""]
    lines += _table(stats) if isinstance(stats, dict) else ["(no data/stats.json in the run folder)"]
    lines += ["", "## Training config", ""]
    if train_cfg is not None:
        lines += ["```yaml", yaml.safe_dump(train_cfg, sort_keys=False).strip(), "```"]
    else:
        lines += ["(no config.yaml in the run folder)"]
    lines += ["", "## Adapter config", "", "```json", json.dumps(adapter.config, indent=2), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, **kwargs) -> Path:
    path = Path(folder) / "README.md"
    write_text(path, build_model_card(**kwargs))
    return path
