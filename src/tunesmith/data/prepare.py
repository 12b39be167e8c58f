"""Prepare a dataset: read every input row, validate, scrub PII, deduplicate, check lengths and
consistency, split, check leakage, mix general data, write.

Every input row ends up in exactly one place and ``stats.json`` counts them::

    rows_read = kept (train + validation + test task rows) + rejected + duplicates
                + leakage_removed + unused_by_max_examples

``rejected.jsonl`` holds each rejected row with its file, line, field, reason, hint and original
text; ``removed.jsonl`` names each duplicate or leaking row and the row it duplicates.

Streaming: rows are read one at a time and spooled to disk as canonical records; what stays in
memory per row is a few integers (hashes, label index) plus the MinHash signature (4 bytes x
``dedup.num_perm``) for near-duplicate detection. Only the split files are shuffled through
bounded in-memory buckets.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.consistency import ConsistencyChecker
from tunesmith.data.dedup import SignatureStore, cross_matches, find_near_duplicates
from tunesmith.data.readers import ReadWarnings, detect_container, iter_jsonl_lines, iter_rows
from tunesmith.data.rowproc import ChunkRunner
from tunesmith.data.records import Record
from tunesmith.data.split import SPLITS, TEST, TRAIN, VALIDATION, assign_splits
from tunesmith.errors import DataError
from tunesmith.utils.io import atomic_dir, read_jsonl, write_json

BATCH = 4096
BUCKET_ROWS = 200_000  # rows per shuffle bucket when writing split files


class PreparedData:
    """The prepared splits. Created from lists, or backed by a prepared folder whose split files
    are read (as lists) the first time each split is used."""

    def __init__(
        self,
        train: list[Record] | None = None,
        validation: list[Record] | None = None,
        test: list[Record] | None = None,
        rejected: list[dict[str, Any]] | None = None,
        stats: dict[str, Any] | None = None,
        *,
        source_dir: Path | None = None,
    ):
        self._splits: dict[str, list[Record] | None] = {"train": train, "validation": validation, "test": test}
        self._rejected = rejected
        self.stats = stats or {}
        self.source_dir = source_dir

    def _load(self, name: str) -> list[Record]:
        value = self._splits.get(name)
        if value is None:
            path = self.source_dir / f"{name}.jsonl" if self.source_dir else None
            value = read_jsonl(path) if path and path.is_file() else []
            self._splits[name] = value
        return value

    @property
    def train(self) -> list[Record]:
        return self._load("train")

    @train.setter
    def train(self, v: list[Record]) -> None:
        self._splits["train"] = v

    @property
    def validation(self) -> list[Record]:
        return self._load("validation")

    @validation.setter
    def validation(self, v: list[Record]) -> None:
        self._splits["validation"] = v

    @property
    def test(self) -> list[Record]:
        return self._load("test")

    @test.setter
    def test(self, v: list[Record]) -> None:
        self._splits["test"] = v

    @property
    def rejected(self) -> list[dict[str, Any]]:
        if self._rejected is None:
            path = self.source_dir / "rejected.jsonl" if self.source_dir else None
            self._rejected = read_jsonl(path) if path and path.is_file() else []
        return self._rejected

    def split(self, name: str) -> list[Record]:
        return getattr(self, name)


# ---------------------------------------------------------------------------------------------
# helpers


class _Sink:
    """An append-only JSONL file with a row counter."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.n = 0

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.n += 1

    def close(self) -> None:
        self.f.close()


def _iter_spool(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def resolve_inputs(cfg: DataConfig, base_dir: Path, input_path: Path | None = None) -> list[tuple[Path, InputFile]]:
    specs = cfg.inputs()
    if input_path is not None:
        specs = [InputFile(path=str(input_path), format=cfg.format, columns=cfg.columns)] + list(cfg.files)
    if not specs:
        raise DataError("no input data: data.train_file and data.files are both empty", hint="set data.train_file to your data file")
    out = []
    for spec in specs:
        p = Path(spec.path).expanduser()
        p = p if p.is_absolute() else (base_dir / p).resolve()
        if not p.is_file():
            raise DataError(f"data file {p} does not exist", hint="check data.train_file / data.files (relative to the config file)")
        out.append((p, spec))
    return out


def fingerprint(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], extra: dict[str, Any]) -> str:
    """Identifies a preparation: config, input files (path, size, mtime) and tokenizer settings."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for p, _ in inputs:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the stages


def prepare_data(
    cfg: DataConfig,
    input_path: Path | None = None,
    out_dir: Path | None = None,
    *,
    seed: int,
    base_dir: Path | None = None,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    truncation: str = "reject",
    fingerprint_extra: dict[str, Any] | None = None,
) -> PreparedData:
    """Prepare the data described by ``cfg`` (plus ``input_path`` as the train file if given).

    With ``out_dir`` the folder is written atomically and the returned splits are read from it on
    first use; without it, everything is prepared in a temporary folder and returned in memory.
    Raises :class:`DataError` (after writing the folder, without split files) when the share of
    rejected rows exceeds ``cfg.max_rejected_fraction``.
    """
    base_dir = Path(base_dir) if base_dir is not None else (Path(input_path).parent if input_path else Path.cwd())
    inputs = resolve_inputs(cfg, base_dir, input_path)
    fp = fingerprint(cfg, inputs, {"seed": seed, "max_seq_length": max_seq_length, "truncation": truncation, **(fingerprint_extra or {})})
    if out_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="tunesmith-data-"))
        try:
            stats = _prepare_into(cfg, inputs, tmp, seed=seed, base_dir=base_dir, tokenizer=tokenizer,
                                  max_seq_length=max_seq_length, truncation=truncation, fp=fp)
            data = PreparedData(stats=stats, source_dir=tmp)
            for s in (*SPLITS, "rejected"):
                getattr(data, s)  # load into memory before the folder goes
            data.source_dir = None
            _raise_if_too_many_rejected(stats, cfg, tmp)
            return data
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        stats = _prepare_into(cfg, inputs, tmp, seed=seed, base_dir=base_dir, tokenizer=tokenizer,
                              max_seq_length=max_seq_length, truncation=truncation, fp=fp)
    _readable(out_dir)
    _raise_if_too_many_rejected(stats, cfg, out_dir)
    return PreparedData(stats=stats, source_dir=out_dir)


def _readable(folder: Path) -> None:
    """Temporary folders/files are created private (0700/0600); give the result the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        folder.chmod(0o777 & ~umask)
        for f in folder.iterdir():
            f.chmod(0o666 & ~umask)
    except OSError:
        pass


def _raise_if_too_many_rejected(stats: dict[str, Any], cfg: DataConfig, where: Path) -> None:
    if stats.get("failure") == "no_usable_rows":
        raise DataError(
            f"no usable rows: {stats['rows_read']} read, {stats['rejected']} rejected, {stats['duplicates']} duplicates",
            hint=f"see {where / 'rejected.jsonl'} for why each row was rejected",
        )
    if stats.get("status") == "failed":
        top = ", ".join(f"{k}: {v}" for k, v in Counter(stats["rejected_by_kind"]).most_common(4))
        raise DataError(
            f"{stats['rejected']} of {stats['rows_read']} input rows ({stats['rejected_fraction']:.1%}) were rejected, "
            f"above data.max_rejected_fraction={cfg.max_rejected_fraction} ({top})",
            hint=f"see {where / 'rejected.jsonl'} (line numbers, reasons, what to do); fix the data or raise the threshold",
        )


def _prepare_into(
    cfg: DataConfig,
    inputs: list[tuple[Path, InputFile]],
    out: Path,
    *,
    seed: int,
    base_dir: Path,
    tokenizer: Any,
    max_seq_length: int | None,
    truncation: str,
    fp: str,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    work = out / ".work"
    work.mkdir()
    rejected = _Sink(out / "rejected.jsonl")
    removed = _Sink(out / "removed.jsonl")
    rejected_kinds: Counter[str] = Counter()
    warnings_out: dict[str, dict[str, Any]] = {}
    dd = cfg.dedup
    near_scopes = list(dict.fromkeys(dd.near_scope)) if (dd.near or dd.cross_split) else []  # scopes with signatures
    sig_stores = {s: SignatureStore(dd.num_perm) for s in near_scopes}
    exact_seen: dict[str, dict[int, int]] = {s: {} for s in (dd.exact_scope if dd.exact else [])}
    ids: list[str] = []  # spool index -> record id
    spool_meta: list[tuple[str | None, str | None]] = []  # spool index -> (label, answer format)
    formats: Counter[str] = Counter()
    pii_counts: Counter[str] = Counter(dict.fromkeys(cfg.pii.types, 0) if cfg.pii.mode != "off" else {})
    rows_with_pii = 0
    rows_read = 0
    dup_counts: Counter[str] = Counter()
    per_file: dict[str, dict[str, int]] = {}
    n_workers = _n_workers(cfg, inputs)
    runner = ChunkRunner(cfg, n_workers)

    # ---- pass 1: read, validate, PII, exact dedup, spool -----------------------------------------
    spool_path = work / "spool.jsonl"
    try:
        with open(spool_path, "w", encoding="utf-8") as spool:
            for path, spec in inputs:
                warns = ReadWarnings()
                container = detect_container(path) if spec.container == "auto" else spec.container
                if container == "jsonl":
                    items = iter_jsonl_lines(path)
                else:
                    items = iter_rows(path, container, max_line_bytes=cfg.max_line_bytes, warnings=warns, fix=cfg.fix_encoding)
                n_file = 0
                for res in runner.run(items, spec, str(path), path.name):
                    n_file += res.n_rows
                    for k, v in res.warnings.counts.items():
                        warns.counts[k] = warns.counts.get(k, 0) + v
                        warns.first_line.setdefault(k, res.warnings.first_line[k])
                    for r in res.rejects:
                        rejected_kinds[r["kind"]] += 1
                        rejected.write(r)
                    pii_counts.update(res.pii_counts)
                    rows_with_pii += res.rows_with_pii
                    keep = np.ones(len(res.oks), dtype=bool)
                    for j, ok in enumerate(res.oks):
                        dup_of = None
                        for scope, key in ok.keys.items():
                            first = exact_seen[scope].get(key)
                            if first is not None:
                                dup_of = (scope, first)
                                break
                        if dup_of is not None:
                            keep[j] = False
                            dup_counts[f"exact_{dup_of[0]}"] += 1
                            removed.write({"id": ok.rid, "kind": "exact_duplicate", "scope": dup_of[0], "duplicate_of": ids[dup_of[1]]})
                            continue
                        idx = len(ids)
                        for scope, key in ok.keys.items():
                            exact_seen[scope][key] = idx
                        ids.append(ok.rid)
                        spool_meta.append((ok.label, ok.answer_format))
                        formats[ok.fmt] += 1
                        spool.write(ok.line + "\n")
                    for s in near_scopes:
                        sig_stores[s].extend(res.sigs[s][keep])
                rows_read += n_file
                per_file[str(path)] = {"rows": n_file}
                if warns.counts:
                    warnings_out[str(path)] = {k: {"count": v, "first_line": warns.first_line[k]} for k, v in warns.counts.items()}
    finally:
        runner.close()
    exact_seen.clear()
    n_spool = len(ids)
    timings["read_validate_pii_exact"] = time.perf_counter() - t_start

    # ---- near-duplicates ---------------------------------------------------------------------------
    t = time.perf_counter()
    near_dup = np.zeros(n_spool, dtype=bool)
    for scope in near_scopes if dd.near else []:
        sigs = sig_stores[scope].array
        nd = find_near_duplicates(sigs, dd.threshold)
        new = nd.is_duplicate & ~near_dup
        for i in np.nonzero(new)[0].tolist():
            removed.write({"id": ids[i], "kind": "near_duplicate", "scope": scope, "duplicate_of": ids[int(nd.rep[i])],
                           "similarity": round(float(nd.similarity[i]), 3)})
        dup_counts[f"near_{scope}"] += int(new.sum())
        near_dup |= new
    timings["near_dedup"] = time.perf_counter() - t

    # ---- pass 2: length, consistency ---------------------------------------------------------------
    t = time.perf_counter()
    counter = None
    if tokenizer is not None and cfg.check_length and max_seq_length:
        from tunesmith.data.length import TokenCounter

        counter = TokenCounter(tokenizer, max_seq_length, truncation)
    schema = _load_schema(cfg, base_dir)
    checker = ConsistencyChecker(schema)
    survivors: list[int] = []  # spool index of each row in spool2
    labels: list[str | None] = []
    token_lengths: list[int] = []
    truncated = 0
    spool2_path = work / "spool2.jsonl"

    def finish(batch: list[tuple[int, Record]], spool2) -> None:
        nonlocal truncated
        lengths = counter.count([r for _, r in batch]) if counter else [None] * len(batch)
        for (i, rec), n_tok in zip(batch, lengths, strict=True):
            if n_tok is not None and n_tok > max_seq_length:
                if truncation == "truncate":
                    new, n_new, cut = counter.truncate(rec, n_tok)
                else:
                    new, n_new, _cut = None, n_tok, 0
                if new is None:
                    how = "the prompt cannot be cut enough" if truncation == "truncate" else "train.truncation is 'reject'"
                    _reject_record(rejected, rejected_kinds, rec, "too_long",
                                   f"{n_tok} tokens with the chat template, over train.max_seq_length={max_seq_length} ({how})",
                                   "shorten the example, raise train.max_seq_length, or set train.truncation: truncate")
                    continue
                rec, n_tok = new, n_new
                truncated += 1
            err = checker.schema_error(rec)
            if err is not None and cfg.consistency.json_schema_action == "reject":
                _reject_record(rejected, rejected_kinds, rec, "schema", err, "fix the answer so it matches data.consistency.json_schema")
                continue
            checker.add(rec)
            if n_tok is not None:
                token_lengths.append(n_tok)
            survivors.append(i)
            labels.append(rec.get("label"))
            spool2.write(json.dumps(rec, ensure_ascii=False) + "\n")

    if counter is None and not checker.needs_records:
        # nothing needs the records themselves: copy the lines through
        with open(spool2_path, "w", encoding="utf-8") as spool2, open(spool_path, encoding="utf-8") as src:
            for i, line in enumerate(src):
                if near_dup[i]:
                    continue
                label, fmt = spool_meta[i]
                checker.add_known(ids[i], label, fmt)
                survivors.append(i)
                labels.append(label)
                spool2.write(line)
    else:
        with open(spool2_path, "w", encoding="utf-8") as spool2:
            batch: list[tuple[int, Record]] = []
            for i, rec in enumerate(_iter_spool(spool_path)):
                if near_dup[i]:
                    continue
                batch.append((i, rec))
                if len(batch) >= 512:
                    finish(batch, spool2)
                    batch = []
            if batch:
                finish(batch, spool2)
    spool_path.unlink()
    timings["length_consistency"] = time.perf_counter() - t

    # ---- max_examples, splits, leakage -------------------------------------------------------------
    t = time.perf_counter()
    n_surv = len(survivors)
    use = np.ones(n_surv, dtype=bool)
    unused = 0
    if cfg.max_examples is not None and n_surv > cfg.max_examples:
        rng = random.Random(seed)
        keep = rng.sample(range(n_surv), cfg.max_examples)
        use[:] = False
        use[keep] = True
        unused = n_surv - cfg.max_examples
    used_idx = np.nonzero(use)[0]
    assign = np.full(n_surv, -1, dtype=np.int8)
    assign[used_idx] = assign_splits([labels[i] for i in used_idx.tolist()], cfg.validation_fraction, cfg.test_fraction, seed)
    leak_removed = 0
    leakage: dict[str, Any] = {"checked": bool(dd.cross_split and near_scopes), "found": 0, "action": dd.cross_split_action}
    if dd.cross_split and near_scopes:
        surv = np.asarray(survivors, dtype=np.int64)
        train_rows = np.nonzero(assign == TRAIN)[0]
        held_rows = np.nonzero((assign == VALIDATION) | (assign == TEST))[0]
        leak = np.zeros(len(held_rows), dtype=bool)
        partner = np.full(len(held_rows), -1, dtype=np.int64)
        sim = np.zeros(len(held_rows), dtype=np.float32)
        for scope in near_scopes:
            sigs = sig_stores[scope].array
            m, s = cross_matches(sigs[surv[held_rows]], sigs[surv[train_rows]], dd.threshold)
            new = (m >= 0) & ~leak
            partner[new] = m[new]
            sim[new] = s[new]
            leak |= new
        leakage["found"] = int(leak.sum())
        leakage["by_split"] = {
            "validation": int((leak & (assign[held_rows] == VALIDATION)).sum()),
            "test": int((leak & (assign[held_rows] == TEST)).sum()),
        }
        examples = []
        for j in np.nonzero(leak)[0].tolist():
            r = int(held_rows[j])
            entry = {"id": ids[survivors[r]], "split": SPLITS[assign[r]], "near_duplicate_in_train": ids[survivors[int(train_rows[partner[j]])]],
                     "similarity": round(float(sim[j]), 3)}
            if len(examples) < 50:
                examples.append(entry)
            if dd.cross_split_action == "remove":
                removed.write({**entry, "kind": "leakage"})
                assign[r] = -2
                leak_removed += 1
        leakage["examples"] = examples
    sig_stores.clear()
    timings["split_leakage"] = time.perf_counter() - t

    split_counts = {name: int((assign == k).sum()) for k, name in enumerate(SPLITS)}
    label_by_split: dict[str, dict[str, int]] = {}
    if any(lbl is not None for lbl in labels):
        for k, name in enumerate(SPLITS):
            c = Counter(labels[i] for i in np.nonzero(assign == k)[0].tolist())
            label_by_split[name] = {str(a): b for a, b in sorted(c.items(), key=lambda x: str(x[0]))}

    # ---- mixing general data -----------------------------------------------------------------------
    mix_stats: dict[str, Any] = {"ratio": cfg.mix.ratio}
    general_train: list[Record] = []
    if cfg.mix.ratio > 0:
        from tunesmith.data.mix import general_count, load_general, sample_general

        pool, bad = load_general(cfg.mix.source, base_dir, cfg.mix.format, cfg.system_prompt)
        n_gen = general_count(split_counts["train"], cfg.mix.ratio)
        general_train, general_eval, s = sample_general(pool, n_gen, cfg.mix.eval_fraction, seed)
        mix_stats.update(s, source=cfg.mix.source, unreadable_rows=bad)
        mix_stats["actual_ratio"] = round(len(general_train) / (len(general_train) + split_counts["train"]), 4) if general_train else 0.0
        if general_eval:
            with open(out / "general_eval.jsonl", "w", encoding="utf-8") as f:
                for r in general_eval:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")

    # ---- write ---------------------------------------------------------------------------------------
    t = time.perf_counter()
    rejected.close()
    removed.close()
    n_rejected = rejected.n
    rejected_fraction = n_rejected / rows_read if rows_read else 0.0
    kept = sum(split_counts.values())
    failure = None
    if rows_read > 0 and rejected_fraction > cfg.max_rejected_fraction:
        failure = "too_many_rejected"
    elif kept == 0:
        failure = "no_usable_rows"
    failed = failure is not None
    if not failed:
        _write_splits(out, work, spool2_path, assign, general_train, seed)
    shutil.rmtree(work, ignore_errors=True)
    timings["write"] = time.perf_counter() - t

    n_dups = sum(dup_counts.values())
    stats: dict[str, Any] = {
        "status": "failed" if failed else "ok",
        "failure": failure,
        "fingerprint": fp,
        "input_files": [str(p) for p, _ in inputs],
        "input_file": str(inputs[0][0]),
        "per_file": per_file,
        "formats": dict(formats),
        "rows_read": rows_read,
        "rejected": n_rejected,
        "rejected_fraction": round(rejected_fraction, 6),
        "max_rejected_fraction": cfg.max_rejected_fraction,
        "rejected_by_kind": dict(rejected_kinds.most_common()),
        "duplicates": n_dups,
        "duplicates_by_kind": dict(dup_counts),
        "leakage_removed": leak_removed,
        "unused_by_max_examples": unused,
        "kept": kept,
        **{f"{s}_examples": split_counts[s] for s in SPLITS},
        "general_train_examples": len(general_train),
        "truncated": truncated,
        "warnings": warnings_out,
        "pii": {"mode": cfg.pii.mode, "counts": dict(pii_counts), "rows_with_pii": rows_with_pii},
        "dedup": {"exact": dd.exact, "exact_scope": dd.exact_scope, "near": dd.near, "near_scope": near_scopes if dd.near else [], "threshold": dd.threshold,
                  "num_perm": dd.num_perm},
        "leakage": leakage,
        "mix": mix_stats,
        "labels_by_split": label_by_split,
        "consistency": checker.summary(),
        "token_lengths": _length_summary(token_lengths, max_seq_length) if counter else None,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "workers": n_workers,
    }
    stats["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    if rows_read != kept + n_rejected + n_dups + leak_removed + unused:  # a bug, not a user error
        raise RuntimeError(f"row accounting does not add up: {rows_read} read vs {kept}+{n_rejected}+{n_dups}+{leak_removed}+{unused}")
    write_json(out / "stats.json", stats)
    if cfg.report:
        from tunesmith.data.report import write_reports

        write_reports(out, stats)
    return stats


def _n_workers(cfg: DataConfig, inputs: list[tuple[Path, InputFile]]) -> int:
    """Worker processes for the first pass: ``data.workers``, or for inputs over 64 MB one per CPU
    core (at most 4); small inputs run in-process (starting workers costs about a second)."""
    if cfg.workers is not None:
        return cfg.workers
    size = sum(p.stat().st_size for p, _ in inputs)
    if size < 64 * 2**20:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _reject_record(sink: _Sink, kinds: Counter[str], rec: Record, kind: str, reason: str, hint: str) -> None:
    file, _, line = rec["id"].rpartition(":")
    kinds[kind] += 1
    sink.write({"file": file, "line": int(line) if line.isdigit() else None, "kind": kind, "field": None,
                "reason": reason, "hint": hint, "raw": json.dumps(rec, ensure_ascii=False)})


def _load_schema(cfg: DataConfig, base_dir: Path) -> dict[str, Any] | None:
    s = cfg.consistency.json_schema
    if s is None or isinstance(s, dict):
        return s
    p = Path(s).expanduser()
    p = p if p.is_absolute() else base_dir / p
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"data.consistency.json_schema: cannot read {p}: {e}", hint="give a JSON Schema file or an inline mapping") from None


def _length_summary(lengths: list[int], max_len: int | None) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    lo, hi = int(a.min()), int(a.max()) + 1
    edges = np.unique(np.linspace(lo, hi, 21).round().astype(int))
    hist, _ = np.histogram(a, bins=edges)
    return {
        "count": int(len(a)), "min": int(a.min()), "mean": round(float(a.mean()), 1), "p50": int(np.percentile(a, 50)),
        "p95": int(np.percentile(a, 95)), "max": int(a.max()), "max_seq_length": max_len,
        "histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
    }


def _write_splits(out: Path, work: Path, spool2: Path, assign: np.ndarray, general: list[Record], seed: int) -> None:
    """Write each split shuffled (seeded), through buckets of at most ~BUCKET_ROWS rows in memory.
    General rows are shuffled into train."""
    rng = random.Random(seed + 1)
    n_rows = {k: int((assign == k).sum()) + (len(general) if k == TRAIN else 0) for k in range(3)}
    n_buckets = {k: max(1, -(-n_rows[k] // BUCKET_ROWS)) for k in range(3)}
    buckets = {k: [open(work / f"b{k}_{b}.jsonl", "w", encoding="utf-8") for b in range(n_buckets[k])] for k in range(3)}  # noqa: SIM115
    try:
        with open(spool2, encoding="utf-8") as f:
            for i, line in enumerate(f):
                k = int(assign[i])
                if k >= 0:
                    buckets[k][rng.randrange(n_buckets[k])].write(line)
        for r in general:
            buckets[TRAIN][rng.randrange(n_buckets[TRAIN])].write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        for files in buckets.values():
            for fh in files:
                fh.close()
    for k, name in enumerate(SPLITS):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as dst:
            for b in range(n_buckets[k]):
                p = work / f"b{k}_{b}.jsonl"
                lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
                rng.shuffle(lines)
                dst.writelines(lines)
                p.unlink()


def save_prepared(data: PreparedData, out_dir: Path) -> None:
    from tunesmith.utils.io import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_jsonl(out_dir / f"{s}.jsonl", data.split(s))
    write_jsonl(out_dir / "rejected.jsonl", data.rejected)
    write_json(out_dir / "stats.json", data.stats)


def load_prepared(out_dir: Path) -> PreparedData:
    out_dir = Path(out_dir)
    missing = [s for s in SPLITS if not (out_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise DataError(f"prepared data in {out_dir} lacks {', '.join(missing)}", hint="run `tunesmith data prepare` first")
    stats = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").is_file() else {}
    return PreparedData(stats=stats, source_dir=out_dir)
