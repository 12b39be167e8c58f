"""General instruction data mixed into train against catastrophic forgetting.

The default general set is built from the English files of the PyPI package ``chatterbot-corpus``
(BSD-3-Clause, https://github.com/gunthercox/chatterbot-corpus): ~2,000 short prompt/response
conversations in ``chatterbot_corpus/data/english/*.yml``. The files are read as data: the package
is located without being imported. Users may give their own file in any supported format instead.

Mixed-in records carry ``"source": "general"`` and only ever go to train (or to the separate
``general_eval.jsonl`` when ``data.mix.eval_fraction`` > 0), never to validation or test.
"""

from __future__ import annotations

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


# The last 20% of the name-sorted files are held out for the forgetting measurement of evaluation
# (tunesmith.evaluate.general); training mixes only the rest.
CHATTERBOT_EVAL_FRACTION = 0.2


def chatterbot_eval_files(files: list[Path]) -> list[Path]:
    """The eval-only part of ``files``: the last ceil(20%) of the name-sorted list."""
    files = sorted(files, key=lambda p: p.name)
    n = math.ceil(len(files) * CHATTERBOT_EVAL_FRACTION)
    return files[len(files) - n :] if n else []


def load_chatterbot() -> list[Record]:
    """Training-side chatterbot conversations (the eval-only files are skipped)."""
    records: list[Record] = []
    files = sorted(chatterbot_dir().glob("*.yml"), key=lambda p: p.name)
    held_out = set(chatterbot_eval_files(files))
    for path in files:
        if path in held_out:
            continue
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


def load_general(source: str, base_dir: Path, fmt: str = "auto", system_prompt: str | None = None) -> tuple[list[Record], int]:
    """(general records, rows that could not be read)."""
    if source == "chatterbot":
        records = load_chatterbot()
        if system_prompt:
            for r in records:
                r["messages"].insert(0, {"role": "system", "content": system_prompt})
        return records, 0
    path = Path(source).expanduser()
    path = path if path.is_absolute() else (base_dir / path).resolve()
    records, bad = [], 0
    for file in data_files(path):  # a folder stands for the data files in it
        for raw in iter_rows(file, max_line_bytes=10_000_000, warnings=ReadWarnings()):
            if raw.row is None:
                bad += 1
                continue
            try:
                rec, _ = row_to_record(raw.row, "mixed" if fmt == "auto" else fmt, system_prompt=system_prompt)
                if "messages" in rec:
                    check_messages(rec["messages"])
            except RowError:
                bad += 1
                continue
            rec["id"] = f"general:{file.name}:{raw.line}"
            rec["source"] = "general"
            records.append(rec)
    if not records:
        raise DataError(f"data.mix.source {path} has no usable rows", hint="use a file in a supported format (alpaca, openai, sharegpt, ...)")
    return records, bad


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
    pool, bad = load_general(cfg.mix.source, base_dir, cfg.mix.format, cfg.system_prompt)
    pool, too_long, pii_found = _clean_general(pool, cfg, counter, max_seq_length)
    stats.update(too_long_dropped=too_long, pii_found=pii_found)
    general_train, general_eval, s = sample_general(pool, general_count(n_task_train, cfg.mix.ratio), cfg.mix.eval_fraction, seed)
    stats.update(s, source=cfg.mix.source, unreadable_rows=bad)
    stats["actual_ratio"] = round(len(general_train) / (len(general_train) + n_task_train), 4) if general_train else 0.0
    if general_eval:
        with open(out / "general_eval.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in general_eval)
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
