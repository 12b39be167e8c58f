"""The files an OpenAI fine-tuning job of the routing-code task would have, in OpenAI chat JSONL.

    data/files/file-RoutingTrain01.jsonl   the job's training_file (560 conversations)
    data/files/file-RoutingValid01.jsonl   the job's validation_file (80)
    data/test.jsonl                        the team's own fixed test set (160), never trained on

The conversations are examples/routing-codes' (seeded, no downloads): a customer message in, one of ten made-up
queue codes out. Seeded: the same files every time.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from tunesmith.utils.io import write_jsonl

HERE = Path(__file__).resolve().parent
SPLITS = (("files/file-RoutingTrain01.jsonl", 560), ("files/file-RoutingValid01.jsonl", 80), ("test.jsonl", 160))


def routing_rows() -> list[dict]:
    spec = importlib.util.spec_from_file_location("routing_codes", HERE.parent / "routing-codes" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen.generate(sum(n for _, n in SPLITS), seed=13)


def chat(row: dict) -> dict:
    return {"messages": [{"role": "system", "content": row["instruction"]},
                         {"role": "user", "content": row["input"]},
                         {"role": "assistant", "content": row["output"]}]}


def main() -> None:
    rows = routing_rows()
    random.Random(42).shuffle(rows)
    start = 0
    for name, n in SPLITS:
        write_jsonl(HERE / "data" / name, [chat(r) for r in rows[start:start + n]])
        print(f"wrote {n} conversations to {HERE / 'data' / name}")
        start += n


if __name__ == "__main__":
    main()
