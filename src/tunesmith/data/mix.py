"""General instruction data mixed into train against catastrophic forgetting.

The default general set is built from the English files of the PyPI package ``chatterbot-corpus``
(BSD-3-Clause, https://github.com/gunthercox/chatterbot-corpus): ~2,000 short prompt/response
conversations in ``chatterbot_corpus/data/english/*.yml``. The files are read as data: the package
is located without being imported. Users may give their own file in any supported format instead.

Mixed-in records carry ``"source": "general"`` and only ever go to train (or to the separate
``general_eval.jsonl`` when ``data.mix.eval_fraction`` > 0), never to validation or test.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tunesmith.data.config import DataConfig
from tunesmith.data.formats import RowError, check_messages, row_to_record
from tunesmith.data.readers import ReadWarnings, data_files, iter_rows
from tunesmith.data.records import Record
from tunesmith.errors import DataError
from tunesmith.utils.io import write_jsonl

if TYPE_CHECKING:
    from tunesmith.data.length import TokenCounter

CHATTERBOT_HINT = "pip install 'chatterbot-corpus>=1.3,<2' (a data-only package), or set data.mix.source to your own file"


def chatterbot_dir() -> Path:
    try:
        dist = metadata.distribution("chatterbot-corpus")
    except metadata.PackageNotFoundError:
        raise DataError("data.mix.source is 'chatterbot' but the chatterbot-corpus package is not installed", hint=CHATTERBOT_HINT) from None
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if parts[:3] == ("chatterbot_corpus", "data", "english"):
            return Path(dist.locate_file(Path(*parts[:3])))
    raise DataError("chatterbot-corpus is installed but has no data/english folder", hint=CHATTERBOT_HINT)


# The last 20% of the name-sorted files: what evaluation's regression measurement reads when a run has no
# general_eval.jsonl (tunesmith.evaluate.general), i.e. when nothing was mixed in. Runs that mix chatterbot
# get CHATTERBOT_HELD_OUT in their general_eval.jsonl instead, and evaluation prefers that file.
CHATTERBOT_EVAL_FRACTION = 0.2
# Conversations of each topic (file) held out from mixing for the regression measurement: the ones whose
# seeded hash of (file name, position) is smallest. Fixed, small, spread over every topic, so mixing keeps
# nearly the whole corpus.
CHATTERBOT_HELD_OUT_PER_TOPIC = 3
CHATTERBOT_HELD_OUT_SEED = "tunesmith-chatterbot-held-out-v1"


def chatterbot_eval_files(files: list[Path]) -> list[Path]:
    """The last ceil(20%) of the name-sorted list: evaluation's fallback prompts for runs that mix nothing."""
    files = sorted(files, key=lambda p: p.name)
    n = math.ceil(len(files) * CHATTERBOT_EVAL_FRACTION)
    return files[len(files) - n :] if n else []


def read_chatterbot_file(path: Path) -> list[Record]:
    """The conversations of one chatterbot YAML file as records (alternating user/assistant turns)."""
    records: list[Record] = []
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for i, conv in enumerate(doc.get("conversations") or [], start=1):
        if not isinstance(conv, list):
            continue
        turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
        if len(turns) % 2:
            turns = turns[:-1]  # a trailing prompt without response
        if len(turns) < 2:
            continue
        messages = [{"role": "user" if j % 2 == 0 else "assistant", "content": t} for j, t in enumerate(turns)]
        records.append({"id": f"chatterbot:{path.name}:{i}", "messages": messages, "source": "general"})
    return records


def _held_out_rank(record_id: str) -> str:
    return hashlib.sha256(f"{CHATTERBOT_HELD_OUT_SEED}:{record_id}".encode()).hexdigest()


def split_chatterbot(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(mixing pool, held-out set): per topic, the CHATTERBOT_HELD_OUT_PER_TOPIC conversations with the smallest
    seeded hash of their id are held out. Deterministic; the two parts are disjoint and cover ``records``."""
    by_topic: dict[str, list[Record]] = {}
    for r in records:
        by_topic.setdefault(r["id"].split(":")[1], []).append(r)
    held = {r["id"] for topic in by_topic.values()
            for r in sorted(topic, key=lambda r: _held_out_rank(r["id"]))[:CHATTERBOT_HELD_OUT_PER_TOPIC]}
    return [r for r in records if r["id"] not in held], [r for r in records if r["id"] in held]


def chatterbot_records() -> list[Record]:
    return [r for path in sorted(chatterbot_dir().glob("*.yml"), key=lambda p: p.name) for r in read_chatterbot_file(path)]


def load_chatterbot() -> list[Record]:
    """Training-side chatterbot conversations: all but the fixed held-out set."""
    return split_chatterbot(chatterbot_records())[0]


def chatterbot_held_out() -> list[Record]:
    """The fixed held-out conversations (never mixed into training), for the regression measurement."""
    return split_chatterbot(chatterbot_records())[1]


@dataclass(frozen=True)
class GeneralPool:
    records: list[Record]  # usable general rows, "source": "general"
    held_out: list[Record]  # rows never mixed in, for the regression measurement (chatterbot's fixed set)
    rejected: list[dict[str, Any]]  # {"file", "line", "reason"} of a user file's rows that failed validation


def load_general(source: str, base_dir: Path, fmt: str = "auto") -> GeneralPool:
    """The general rows of ``data.mix.source``: chatterbot (less its held-out set), or a user's file or folder of
    general instructions, read and validated as task rows are (a row that fails is rejected with its reason).
    They keep their own context: ``data.system_prompt`` is the task's, not theirs (docs/data.md, mixing general data)."""
    if source == "chatterbot":
        records, held_out = split_chatterbot(chatterbot_records())
        return GeneralPool(records, held_out, [])
    path = Path(source).expanduser()
    path = path if path.is_absolute() else (base_dir / path).resolve()
    if not path.exists():
        raise DataError(f"data.mix.source {path} does not exist",
                        hint="give a file or folder of general instructions, or 'chatterbot'")
    records: list[Record] = []
    rejected: list[dict[str, Any]] = []
    for file in data_files(path):  # a folder stands for the data files in it
        for raw in iter_rows(file, max_line_bytes=10_000_000, warnings=ReadWarnings()):
            if raw.row is None:
                p = raw.problem
                rejected.append({"file": str(file), "line": raw.line, "field": p.field if p else None,
                                 "reason": p.reason if p else "unreadable row", "hint": p.hint if p else ""})
                continue
            try:
                rec, _ = row_to_record(raw.row, "mixed" if fmt == "auto" else fmt)
                if "messages" in rec:
                    check_messages(rec["messages"])
            except RowError as e:
                rejected.append({"file": str(file), "line": raw.line, "field": e.field, "reason": e.reason, "hint": e.hint})
                continue
            rec["id"] = f"general:{file.name}:{raw.line}"
            rec["source"] = "general"
            records.append(rec)
    if not records:
        first = f"; first problem: {rejected[0]['file']} line {rejected[0]['line']}: {rejected[0]['reason']}" if rejected else ""
        raise DataError(f"data.mix.source {path} has no usable rows{first}",
                        hint="use a file in a supported format (alpaca, openai, sharegpt, ...)")
    return GeneralPool(records, [], rejected)


def general_count(n_task_train: int, ratio: float) -> int:
    """How many general rows make them ``ratio`` of the final train split."""
    if ratio <= 0 or n_task_train == 0:
        return 0
    return round(n_task_train * ratio / (1 - ratio))


def sample_general(pool: list[Record], n: int, eval_fraction: float, seed: int) -> tuple[list[Record], list[Record], dict[str, Any]]:
    """(train part, general eval part, stats). The eval part is drawn from rows not used for training."""
    rng = random.Random(seed + 7919)
    order = list(range(len(pool)))
    rng.shuffle(order)
    n_eval = round(len(pool) * eval_fraction) if eval_fraction > 0 else 0
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    take = min(n, len(train_idx))
    stats = {"requested": n, "added": take, "pool": len(pool), "eval": n_eval}
    if take < n:
        stats["shortfall"] = n - take
    return [pool[i] for i in train_idx[:take]], [pool[i] for i in eval_idx], stats


# ---- the mixing stage of a preparation -----------------------------------------------------------

@dataclass(frozen=True)
class MixResult:
    general_train: list[Record]  # general rows for train (only train)
    stats: dict[str, Any]  # stats.json "mix"


def mix_general(cfg: DataConfig, n_task_train: int, out: Path, *, counter: TokenCounter | None, max_seq_length: int | None,
                base_dir: Path, seed: int) -> MixResult:
    """General rows for ``data.mix.ratio`` of the final train split (with ``n_task_train`` task rows);
    with ``data.mix.eval_fraction``, a separate slice goes to ``out/general_eval.jsonl``."""
    stats: dict[str, Any] = {"ratio": cfg.mix.ratio}
    if cfg.mix.ratio <= 0:
        return MixResult([], stats)
    loaded = load_general(cfg.mix.source, base_dir, cfg.mix.format)
    pool, too_long, pii_found = _clean_general(loaded.records, cfg, counter, max_seq_length)
    stats.update(too_long_dropped=too_long, pii_found=pii_found)
    general_train, general_eval, s = sample_general(pool, general_count(n_task_train, cfg.mix.ratio), cfg.mix.eval_fraction, seed)
    stats.update(s, source=cfg.mix.source, unreadable_rows=len(loaded.rejected), held_out=len(loaded.held_out))
    stats["actual_ratio"] = round(len(general_train) / (len(general_train) + n_task_train), 4) if general_train else 0.0
    if loaded.rejected:
        write_jsonl(out / "general_rejected.jsonl", loaded.rejected)
    # evaluation reads general_eval.jsonl before anything else: rows that were never trained on
    if general_eval or loaded.held_out:
        write_jsonl(out / "general_eval.jsonl", loaded.held_out + general_eval)
    return MixResult(general_train, stats)


def _clean_general(pool: list[Record], cfg: DataConfig, counter: TokenCounter | None, max_seq_length: int | None) -> tuple[list[Record], int, int]:
    """General rows get the same PII treatment and length limit as task rows (they are not input
    rows, so the ones that do not fit are dropped from the pool and counted, not rejected)."""
    pii_found = 0
    from tunesmith.data.pii import PiiScanner

    scanner = PiiScanner.from_config(cfg.pii)
    if scanner is not None:
        for r in pool:
            pii_found += scanner.apply(r, redact=cfg.pii.mode == "redact")
    if counter is None:
        return pool, 0, pii_found
    from tunesmith.data.checks import LENGTH_BATCH

    kept: list[Record] = []
    for start in range(0, len(pool), LENGTH_BATCH):
        batch = pool[start : start + LENGTH_BATCH]
        kept += [r for r, n in zip(batch, counter.count(batch), strict=True) if n <= max_seq_length]
    return kept, len(pool) - len(kept), pii_found
