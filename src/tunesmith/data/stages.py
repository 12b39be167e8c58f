"""The stages of one preparation, run in order by :meth:`Preparation.run` into a folder.

1. ``read``: stream every input row through validation, PII and hashing (:mod:`.rowproc`); spool
   the records and their MinHash signatures to disk; then mark exact duplicates (sorted hashes).
2. ``remove_near_duplicates``: cluster the signatures (:mod:`.dedup`).
3. ``check``: token lengths (reject/truncate) and answer consistency, second pass over the spool.
4. ``split``: ``max_examples``, seeded stratified splits, leakage of held-out rows into train.
5. ``mix``: general data for train (and ``general_eval.jsonl``).
6. ``write``: split files (shuffled), ``stats.json``, reports.

Every row is counted in exactly one bucket; :meth:`Preparation.stats` checks the sum.
"""

from __future__ import annotations

import json
import os
from array import array
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.compact import Codes, IdTable
from tunesmith.data.consistency import ANSWER_FORMATS, ConsistencyChecker
from tunesmith.data.dedup import SignatureStore, cross_matches, find_near_duplicates
from tunesmith.data.pii import PiiScanner, PiiTally
from tunesmith.data.readers import ReadWarnings, detect_container, iter_jsonl_lines, iter_rows
from tunesmith.data.records import Record
from tunesmith.data.rowproc import ChunkRunner
from tunesmith.data.split import SPLITS, TEST, TRAIN, VALIDATION, assign_splits
from tunesmith.errors import DataError
from tunesmith.utils.io import write_json

BUCKET_ROWS = 200_000  # rows per shuffle bucket when writing split files
LENGTH_BATCH = 512


class _Sink:
    """An append-only JSONL file with a row counter."""

    def __init__(self, path: Path):
        self.f = open(path, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - closed in close()
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


DETECT_ROWS = 1000


def detect_file_format(path: Path, container: str, cfg: DataConfig, columns: dict[str, str]) -> tuple[str, int] | None:
    """(format, line) of the first row among the first DETECT_ROWS whose format can be told; the
    whole file is then read in that format, so a stray row of another format is rejected rather
    than silently becoming another kind of example. None: no row tells (all will be rejected)."""
    from tunesmith.data.formats import RowError, apply_columns, detect_format

    rows = iter_rows(path, container, max_line_bytes=cfg.max_line_bytes, warnings=ReadWarnings(), fix=cfg.fix_encoding)
    try:
        for k, raw in enumerate(rows):
            if k >= DETECT_ROWS:
                break
            if raw.row is None:
                continue
            try:
                return detect_format(apply_columns(raw.row, columns)), raw.line
            except RowError:
                continue
    finally:
        close = getattr(rows, "close", None)
        if close:
            close()
    return None


def n_workers(cfg: DataConfig, inputs: list[tuple[Path, InputFile]]) -> int:
    """Worker processes for the first pass: ``data.workers``, or for inputs over 64 MB one per CPU
    core (at most 4); small inputs run in-process (starting workers costs about a second)."""
    if cfg.workers is not None:
        return cfg.workers
    size = sum(p.stat().st_size for p, _ in inputs)
    if size < 64 * 2**20:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


class Preparation:
    def __init__(
        self,
        cfg: DataConfig,
        inputs: list[tuple[Path, InputFile]],
        out: Path,
        *,
        seed: int,
        base_dir: Path,
        tokenizer: Any,
        max_seq_length: int | None,
        truncation: str,
        fingerprint: str,
    ):
        self.cfg, self.inputs, self.out, self.seed, self.base_dir = cfg, inputs, out, seed, base_dir
        self.tokenizer, self.max_seq_length, self.truncation, self.fingerprint = tokenizer, max_seq_length, truncation, fingerprint
        self.work = out / ".work"
        self.work.mkdir()
        self.timings: dict[str, float] = {}
        self.rejected = _Sink(out / "rejected.jsonl")
        self.removed = _Sink(out / "removed.jsonl")
        self.rejected_kinds: Counter[str] = Counter()
        self.dup_counts: Counter[str] = Counter()
        self.file_of_name = {p.name: str(p) for p, _ in inputs}
        dd = cfg.dedup
        # scopes with MinHash signatures: they serve near dedup and the leakage check
        self.sig_scopes = list(dict.fromkeys(dd.near_scope)) if (dd.near or dd.cross_split) else []
        self.sig_stores = {s: SignatureStore(dd.num_perm, self.work / f"signatures-{s}.u32") for s in self.sig_scopes}
        self.workers = n_workers(cfg, inputs)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            for name, stage in (
                ("read_validate_pii_exact", self.read),
                ("near_dedup", self.remove_near_duplicates),
                ("length_consistency", self.check),
                ("split_leakage", self.split),
                ("mix", self.mix),
                ("write", self.write),
            ):
                t = time.perf_counter()
                stage()
                self.timings[name] = time.perf_counter() - t
        finally:
            self.rejected.close()
            self.removed.close()
            shutil.rmtree(self.work, ignore_errors=True)
        self.timings["total"] = time.perf_counter() - t0
        stats = self.stats()
        write_json(self.out / "stats.json", stats)
        if self.cfg.report:
            from tunesmith.data.report import write_reports

            write_reports(self.out, stats)
        return stats

    # ---- 1. read ------------------------------------------------------------------------------------

    def read(self) -> None:
        cfg = self.cfg
        self.exact_scopes = list(dict.fromkeys(cfg.dedup.exact_scope)) if cfg.dedup.exact else []
        self.exact_keys = {s: array("Q") for s in self.exact_scopes}  # row -> 64-bit hash of the normalised text
        self.ids = IdTable()  # row (spool index) -> record id
        self.label_tab, self.short_tab = Codes(), Codes(cap=1000)
        self.label_codes, self.fmt_codes, self.short_codes = array("i"), array("b"), array("i")
        self.formats: Counter[str] = Counter()
        self.pii = PiiTally()
        self.rows_read = 0
        self.per_file: dict[str, dict[str, int]] = {}
        self.read_warnings: dict[str, dict[str, Any]] = {}
        self.spool_path = self.work / "spool.jsonl"
        runner = ChunkRunner(cfg, self.workers)
        failed = True
        try:
            with open(self.spool_path, "wb") as spool:
                for path, spec in self.inputs:
                    self._read_file(path, spec, runner, spool)
            failed = False
        finally:
            runner.close(failed=failed)
        self._mark_exact_duplicates()

    def _read_file(self, path: Path, spec: InputFile, runner: ChunkRunner, spool) -> None:
        cfg = self.cfg
        warns = ReadWarnings()
        container = detect_container(path) if spec.container == "auto" else spec.container
        detected = None
        if spec.format == "auto":
            detected = detect_file_format(path, container, cfg, spec.columns)
            if detected is not None:
                spec = spec.model_copy(update={"format": detected[0]})
        if container == "jsonl":  # parsed in the workers
            items: Any = iter_jsonl_lines(path)
        else:
            items = iter_rows(path, container, max_line_bytes=cfg.max_line_bytes, warnings=warns, fix=cfg.fix_encoding)
        n_file = 0
        for res in runner.run(items, spec, str(path), path.name, detected[1] if detected else None):
            n_file += res.n_rows
            for k, v in res.warnings.counts.items():
                warns.counts[k] = warns.counts.get(k, 0) + v
                warns.first_line.setdefault(k, res.warnings.first_line[k])
            for r in res.rejects:
                self.rejected_kinds[r["kind"]] += 1
                self.rejected.write(r)
            self.pii.add(res.pii)
            for ok in res.oks:
                for scope in self.exact_scopes:
                    self.exact_keys[scope].append(ok.keys[scope])
                self.ids.append(ok.rid)
                self.label_codes.append(self.label_tab.code(ok.label))
                self.fmt_codes.append(-1 if ok.answer_format is None else ANSWER_FORMATS.index(ok.answer_format))
                self.short_codes.append(self.short_tab.code(ok.short_answer))
                self.formats[ok.fmt] += 1
                spool.write(ok.line)
            for s in self.sig_scopes:
                self.sig_stores[s].extend(res.sigs[s])
        self.rows_read += n_file
        self.per_file[str(path)] = {"rows": n_file, "format": spec.format}
        if detected is not None:
            self.per_file[str(path)]["format_detected_at_line"] = detected[1]
        if warns.counts:
            self.read_warnings[str(path)] = {k: {"count": v, "first_line": warns.first_line[k]} for k, v in warns.counts.items()}

    def _mark_exact_duplicates(self) -> None:
        """First occurrence wins: a row whose normalised text (per scope, in the configured order)
        appeared on an earlier row is an exact duplicate of that row. Equal examples have equal
        prompts, so the earliest row with a prompt is never itself a duplicate."""
        n = len(self.ids)
        self.exact_dup = np.zeros(n, dtype=bool)
        rows = np.arange(n)
        for scope in self.exact_scopes:
            keys = np.frombuffer(self.exact_keys[scope], dtype=np.uint64) if n else np.zeros(0, dtype=np.uint64)
            _, first_idx, inverse = np.unique(keys, return_index=True, return_inverse=True)
            first = first_idx[inverse.reshape(-1)]
            new = (first != rows) & ~self.exact_dup
            for i in np.nonzero(new)[0].tolist():
                self.removed.write({"id": self.ids[i], "kind": "exact_duplicate", "scope": scope, "duplicate_of": self.ids[int(first[i])]})
            self.dup_counts[f"exact_{scope}"] += int(new.sum())
            self.exact_dup |= new
        self.exact_keys.clear()

    # ---- 2. near duplicates -------------------------------------------------------------------------

    def remove_near_duplicates(self) -> None:
        dd = self.cfg.dedup
        self.near_dup = np.zeros(len(self.ids), dtype=bool)
        for scope in self.sig_scopes if dd.near else []:
            # exact duplicates are clustered too (with their originals, which come first and so
            # represent the cluster), but they are already counted as exact
            nd = find_near_duplicates(self.sig_stores[scope].array, dd.threshold)
            new = nd.is_duplicate & ~self.near_dup & ~self.exact_dup
            for i in np.nonzero(new)[0].tolist():
                self.removed.write({"id": self.ids[i], "kind": "near_duplicate", "scope": scope, "duplicate_of": self.ids[int(nd.rep[i])],
                                    "similarity": round(float(nd.similarity[i]), 3)})
            self.dup_counts[f"near_{scope}"] += int(new.sum())
            self.near_dup |= new

    # ---- 3. lengths and consistency -----------------------------------------------------------------

    def check(self) -> None:
        cfg = self.cfg
        self.counter = None
        if self.tokenizer is not None and cfg.check_length and self.max_seq_length:
            from tunesmith.data.length import TokenCounter

            self.counter = TokenCounter(self.tokenizer, self.max_seq_length, self.truncation)
        self.checker = ConsistencyChecker(self._load_schema())
        self.survivors = array("q")  # spool index of each row of spool2
        self.labels = array("i")  # label code of each row of spool2
        self.token_lengths = array("i")
        self.truncated = 0
        self.spool2_path = self.work / "spool2.jsonl"
        with open(self.spool2_path, "w", encoding="utf-8") as spool2:
            removed = self.near_dup | self.exact_dup
            if self.counter is None and not self.checker.needs_records:
                # nothing needs the records themselves: copy the lines through
                with open(self.spool_path, encoding="utf-8") as src:
                    for i, line in enumerate(src):
                        if removed[i]:
                            continue
                        fc = self.fmt_codes[i]
                        self.checker.add_known(i, self.label_tab.value(self.label_codes[i]), None if fc < 0 else ANSWER_FORMATS[fc],
                                               self.short_tab.value(self.short_codes[i]))
                        self.survivors.append(i)
                        self.labels.append(self.label_codes[i])
                        spool2.write(line)
            else:
                batch: list[tuple[int, Record]] = []
                for i, rec in enumerate(_iter_spool(self.spool_path)):
                    if removed[i]:
                        continue
                    batch.append((i, rec))
                    if len(batch) >= LENGTH_BATCH:
                        self._check_batch(batch, spool2)
                        batch = []
                if batch:
                    self._check_batch(batch, spool2)
        self.spool_path.unlink()

    def _check_batch(self, batch: list[tuple[int, Record]], spool2) -> None:
        max_len = self.max_seq_length
        lengths = self.counter.count([r for _, r in batch]) if self.counter else [None] * len(batch)
        for (i, rec), n_tok in zip(batch, lengths, strict=True):
            if n_tok is not None and n_tok > max_len:
                new, n_new = None, n_tok
                if self.truncation == "truncate":
                    new, n_new, _ = self.counter.truncate(rec, n_tok)
                if new is None:
                    how = "the prompt cannot be cut enough" if self.truncation == "truncate" else "train.truncation is 'reject'"
                    self._reject_record(rec, "too_long", f"{n_tok} tokens with the chat template, over train.max_seq_length={max_len} ({how})",
                                        "shorten the example, raise train.max_seq_length, or set train.truncation: truncate")
                    continue
                rec, n_tok = new, n_new
                self.truncated += 1
            err = self.checker.schema_error(rec)
            if err is not None and self.cfg.consistency.json_schema_action == "reject":
                self._reject_record(rec, "schema", err, "fix the answer so it matches data.consistency.json_schema")
                continue
            self.checker.add(rec, i)
            if n_tok is not None:
                self.token_lengths.append(n_tok)
            self.survivors.append(i)
            self.labels.append(self.label_tab.code(rec.get("label")))
            spool2.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def _reject_record(self, rec: Record, kind: str, reason: str, hint: str) -> None:
        name, _, line = rec["id"].rpartition(":")
        self.rejected_kinds[kind] += 1
        self.rejected.write({"file": self.file_of_name.get(name, name), "line": int(line) if line.isdigit() else None, "kind": kind,
                             "field": None, "reason": reason, "hint": hint, "raw": json.dumps(rec, ensure_ascii=False)})

    def _load_schema(self) -> dict[str, Any] | None:
        s = self.cfg.consistency.json_schema
        if s is None or isinstance(s, dict):
            return s
        p = Path(s).expanduser()
        p = p if p.is_absolute() else self.base_dir / p
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"data.consistency.json_schema: cannot read {p}: {e}", hint="give a JSON Schema file or an inline mapping") from None

    # ---- 4. max_examples, splits, leakage -----------------------------------------------------------

    def split(self) -> None:
        cfg, dd = self.cfg, self.cfg.dedup
        n = len(self.survivors)
        use = np.ones(n, dtype=bool)
        self.unused = 0
        if cfg.max_examples is not None and n > cfg.max_examples:
            use[:] = False
            use[random.Random(self.seed).sample(range(n), cfg.max_examples)] = True
            self.unused = n - cfg.max_examples
            for i in np.nonzero(~use)[0].tolist():
                self.removed.write({"id": self.ids[self.survivors[i]], "kind": "unused", "reason": f"over data.max_examples={cfg.max_examples}"})
        used_idx = np.nonzero(use)[0]
        self.assign = np.full(n, -1, dtype=np.int8)  # -1 unused, -2 removed as leakage, else the split
        labels = [self.label_tab.value(self.labels[i]) for i in used_idx.tolist()]
        self.assign[used_idx] = assign_splits(labels, cfg.validation_fraction, cfg.test_fraction, self.seed)
        self.leak_removed = 0
        self.leakage: dict[str, Any] = {"checked": bool(dd.cross_split and self.sig_scopes), "found": 0, "action": dd.cross_split_action}
        if dd.cross_split and self.sig_scopes:
            self._check_leakage()
        self.sig_stores.clear()

    def _check_leakage(self) -> None:
        dd, assign = self.cfg.dedup, self.assign
        surv = np.frombuffer(self.survivors, dtype=np.int64) if len(self.survivors) else np.zeros(0, dtype=np.int64)
        train_rows = np.nonzero(assign == TRAIN)[0]
        held_rows = np.nonzero((assign == VALIDATION) | (assign == TEST))[0]
        leak = np.zeros(len(held_rows), dtype=bool)
        partner = np.full(len(held_rows), -1, dtype=np.int64)
        sim = np.zeros(len(held_rows), dtype=np.float32)
        for scope in self.sig_scopes:
            m, s = cross_matches(self.sig_stores[scope].array, surv[held_rows], surv[train_rows], dd.threshold)
            new = (m >= 0) & ~leak
            partner[new] = m[new]
            sim[new] = s[new]
            leak |= new
        self.leakage["found"] = int(leak.sum())
        self.leakage["by_split"] = {
            "validation": int((leak & (assign[held_rows] == VALIDATION)).sum()),
            "test": int((leak & (assign[held_rows] == TEST)).sum()),
        }
        examples = []
        for j in np.nonzero(leak)[0].tolist():
            r = int(held_rows[j])
            entry = {"id": self.ids[self.survivors[r]], "split": SPLITS[assign[r]],
                     "near_duplicate_in_train": self.ids[self.survivors[int(train_rows[partner[j]])]], "similarity": round(float(sim[j]), 3)}
            if len(examples) < 50:
                examples.append(entry)
            if dd.cross_split_action == "remove":
                self.removed.write({**entry, "kind": "leakage"})
                assign[r] = -2
                self.leak_removed += 1
        self.leakage["examples"] = examples

    # ---- 5. mixing ----------------------------------------------------------------------------------

    def mix(self) -> None:
        cfg = self.cfg
        self.split_counts = {name: int((self.assign == k).sum()) for k, name in enumerate(SPLITS)}
        self.mix_stats: dict[str, Any] = {"ratio": cfg.mix.ratio}
        self.general_train: list[Record] = []
        if cfg.mix.ratio <= 0:
            return
        from tunesmith.data.mix import general_count, load_general, sample_general

        pool, bad = load_general(cfg.mix.source, self.base_dir, cfg.mix.format, cfg.system_prompt)
        pool, too_long, pii_found = self._clean_general(pool)
        self.mix_stats.update(too_long_dropped=too_long, pii_found=pii_found)
        n_task = self.split_counts["train"]
        self.general_train, general_eval, s = sample_general(pool, general_count(n_task, cfg.mix.ratio), cfg.mix.eval_fraction, self.seed)
        self.mix_stats.update(s, source=cfg.mix.source, unreadable_rows=bad)
        self.mix_stats["actual_ratio"] = round(len(self.general_train) / (len(self.general_train) + n_task), 4) if self.general_train else 0.0
        if general_eval:
            with open(self.out / "general_eval.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in general_eval)

    def _clean_general(self, pool: list[Record]) -> tuple[list[Record], int, int]:
        """General rows get the same PII treatment and length limit as task rows (they are not input
        rows, so the ones that do not fit are dropped from the pool and counted, not rejected)."""
        pii_found = 0
        scanner = PiiScanner.from_config(self.cfg.pii)
        if scanner is not None:
            for r in pool:
                pii_found += scanner.apply(r, redact=self.cfg.pii.mode == "redact")
        if self.counter is None:
            return pool, 0, pii_found
        kept: list[Record] = []
        for start in range(0, len(pool), LENGTH_BATCH):
            batch = pool[start : start + LENGTH_BATCH]
            kept += [r for r, n in zip(batch, self.counter.count(batch), strict=True) if n <= self.max_seq_length]
        return kept, len(pool) - len(kept), pii_found

    # ---- 6. write -----------------------------------------------------------------------------------

    def write(self) -> None:
        self.kept = sum(self.split_counts.values())
        self.rejected_fraction = self.rejected.n / self.rows_read if self.rows_read else 0.0
        self.failure = None
        if self.rows_read > 0 and self.rejected_fraction > self.cfg.max_rejected_fraction:
            self.failure = "too_many_rejected"
        elif self.kept == 0:
            self.failure = "no_usable_rows"
        if self.failure is None:  # a failed preparation writes no split to train on
            self._write_splits()

    def _write_splits(self) -> None:
        """Each split shuffled (seeded) through buckets of at most ~BUCKET_ROWS rows in memory;
        general rows are shuffled into train."""
        rng = random.Random(self.seed + 1)
        assign, work = self.assign, self.work
        n_rows = {k: int((assign == k).sum()) + (len(self.general_train) if k == TRAIN else 0) for k in range(3)}
        n_buckets = {k: max(1, -(-n_rows[k] // BUCKET_ROWS)) for k in range(3)}
        buckets = {k: [open(work / f"b{k}_{b}.jsonl", "w", encoding="utf-8") for b in range(n_buckets[k])] for k in range(3)}  # noqa: SIM115
        try:
            with open(self.spool2_path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    k = int(assign[i])
                    if k >= 0:
                        buckets[k][rng.randrange(n_buckets[k])].write(line)
            for r in self.general_train:
                buckets[TRAIN][rng.randrange(n_buckets[TRAIN])].write(json.dumps(r, ensure_ascii=False) + "\n")
        finally:
            for files in buckets.values():
                for fh in files:
                    fh.close()
        for k, name in enumerate(SPLITS):
            with open(self.out / f"{name}.jsonl", "w", encoding="utf-8") as dst:
                for b in range(n_buckets[k]):
                    p = work / f"b{k}_{b}.jsonl"
                    # split on "\n" only: str.splitlines would also split at U+2028 and friends inside the JSON
                    lines = p.read_text(encoding="utf-8").split("\n")[:-1]
                    rng.shuffle(lines)
                    dst.writelines(line + "\n" for line in lines)
                    p.unlink()

    # ---- stats --------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        cfg, dd = self.cfg, self.cfg.dedup
        n_dups = sum(self.dup_counts.values())
        n_rej = self.rejected.n
        if self.rows_read != self.kept + n_rej + n_dups + self.leak_removed + self.unused:  # a bug, not a user error
            raise RuntimeError(f"row accounting does not add up: {self.rows_read} read vs "
                               f"{self.kept}+{n_rej}+{n_dups}+{self.leak_removed}+{self.unused}")
        label_by_split: dict[str, dict[str, int]] = {}
        if self.label_tab.values:
            codes = np.frombuffer(self.labels, dtype=np.int32) if len(self.labels) else np.zeros(0, dtype=np.int32)
            for k, name in enumerate(SPLITS):
                c = Counter(codes[self.assign == k].tolist())
                label_by_split[name] = {str(self.label_tab.value(a)): b for a, b in sorted(c.items(), key=lambda x: str(self.label_tab.value(x[0])))}
        return {
            "status": "failed" if self.failure else "ok",
            "failure": self.failure,
            "fingerprint": self.fingerprint,
            "input_files": [str(p) for p, _ in self.inputs],
            "input_file": str(self.inputs[0][0]),
            "per_file": self.per_file,
            "formats": dict(self.formats),
            "rows_read": self.rows_read,
            "rejected": n_rej,
            "rejected_fraction": round(self.rejected_fraction, 6),
            "max_rejected_fraction": cfg.max_rejected_fraction,
            "rejected_by_kind": dict(self.rejected_kinds.most_common()),
            "duplicates": n_dups,
            "duplicates_by_kind": dict(self.dup_counts),
            "leakage_removed": self.leak_removed,
            "unused_by_max_examples": self.unused,
            "kept": self.kept,
            **{f"{s}_examples": self.split_counts[s] for s in SPLITS},
            "general_train_examples": len(self.general_train),
            "truncated": self.truncated,
            "warnings": self.read_warnings,
            "pii": self.pii.summary(cfg.pii),
            "dedup": {"exact": dd.exact, "exact_scope": dd.exact_scope, "near": dd.near, "near_scope": self.sig_scopes if dd.near else [],
                      "threshold": dd.threshold, "num_perm": dd.num_perm},
            "leakage": self.leakage,
            "mix": self.mix_stats,
            "labels_by_split": label_by_split,
            "consistency": self.checker.summary(lambda i: self.ids[i]),
            "token_lengths": length_summary(list(self.token_lengths), self.max_seq_length) if self.counter else None,
            "seconds": {k: round(v, 2) for k, v in self.timings.items()},
            "workers": self.workers,
        }


def length_summary(lengths: list[int], max_len: int | None) -> dict[str, Any]:
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
