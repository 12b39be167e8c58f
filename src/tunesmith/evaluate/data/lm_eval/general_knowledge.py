"""The dataset of ``tunesmith_general_knowledge.yaml``: ``general_knowledge.jsonl`` next to this file.

lm-eval calls :func:`load` through the task's ``custom_dataset: !function`` (a ``json`` dataset path in the
YAML would be resolved against the working directory, not this folder). Read as plain JSON: no cache, no
network.
"""

from __future__ import annotations

import json
from pathlib import Path

JSONL = Path(__file__).with_name("general_knowledge.jsonl")


def load(**_task_metadata):
    import datasets

    rows = [json.loads(line) for line in JSONL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
