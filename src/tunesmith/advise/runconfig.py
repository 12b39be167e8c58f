"""The ready run config that `tunesmith advise --output FILE` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunesmith.advise.recommend import Advice, recommended_seq_len
from tunesmith.config import RunConfig, build_config
from tunesmith.utils.io import write_text


def run_config_dict(advice: Advice, base: RunConfig, *, data_path: Path | None = None,
                    stratify_field: str | None = None) -> dict[str, Any]:
    """``base`` with the recommended model, method, batch, sequence length and the advise answers."""
    d = base.model_dump(mode="json")
    d.pop("base_dir", None)
    if advice.arch is not None and advice.answers.model:
        d["model"]["name_or_path"] = advice.arch.hf_id or advice.answers.model
    d["model"]["dtype"] = "auto"
    train = d["train"]
    plan = advice.plan
    if plan is not None:
        train["method"] = "qlora" if plan.method == "qlora" else plan.method
        if plan.batch_size != base.train.batch_size:
            effective = base.train.batch_size * base.train.grad_accum
            train["batch_size"] = plan.batch_size
            train["grad_accum"] = max(1, effective // plan.batch_size)
    if train["method"] == "full":
        train.pop("lora", None)  # a full fine-tune with lora settings is a config error
    train["max_seq_length"] = recommended_seq_len(advice.facts, base.train.max_seq_length)
    train["completion_only_loss"] = advice.answers.data_kind != "domain"
    if data_path is not None and data_path.is_file():
        d["data"]["train_file"] = str(data_path.resolve())
        if stratify_field:
            d["data"]["stratify_field"] = stratify_field
    d["advise"] = advice.answers.model_dump(mode="json")
    return d


def write_run_config(path: str | Path, data: dict[str, Any]) -> RunConfig:
    """Validate ``data`` as a RunConfig (relative paths against ``path``'s folder) and write it atomically."""
    path = Path(path)
    cfg = build_config(data, source=str(path), base_dir=path.resolve().parent)
    header = "# Written by `tunesmith advise`; the advise: section records the answers it used.\n"
    write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return cfg
