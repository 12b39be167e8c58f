"""Exact and near-duplicate detection.

Exact: a 64-bit hash (xxh3) of the normalised text (NFKC, case-folded, punctuation dropped,
whitespace collapsed). Decided while streaming: the first occurrence wins.

Near: MinHash signatures over word shingles, computed for thousands of rows at once with numpy
(``num_perm`` multiply-shift hash functions applied to 64-bit shingle hashes), then LSH banding with
the band/row split chosen so that a pair at the threshold becomes a candidate with probability
>= 0.95 (:func:`optimal_bands`). Rows sharing a band bucket are
candidate pairs; a pair counts when its estimated Jaccard similarity (share of equal signature
slots) reaches the threshold. Duplicates are clustered (union-find) and each cluster keeps its
earliest row. Signatures (4 bytes x num_perm per row), not the texts, are kept: in a file, read
back memory-mapped.

The stages of a preparation that use these: :func:`mark_exact_duplicates` (after the first pass)
and :func:`mark_near_duplicates`; each logs the rows it removes to ``removed.jsonl``.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tunesmith.data.config import DedupConfig

if TYPE_CHECKING:
    from tunesmith.data.compact import IdTable
    from tunesmith.data.spool import JsonlSink

try:
    from xxhash import xxh3_64_intdigest as _hash64
except ImportError:  # pragma: no cover - xxhash comes with datasets
    import hashlib

    def _hash64(b: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")


_PUNCT = re.compile(r"[^\w\s]+")
_PUNCT_BYTES = bytes(32 if chr(i) in "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~" else i for i in range(256))


def normalise(text: str) -> str:
    if text.isascii():  # bytes.translate is ~6x faster than str.translate
        return " ".join(text.lower().encode("ascii").translate(_PUNCT_BYTES).decode("ascii").split())
    text = unicodedata.normalize("NFKC", text)
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def optimal_bands(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band): the longest bands (fewest false candidates) that still make a pair at
    exactly ``threshold`` a candidate with probability >= ``recall``. Candidates are verified against
    the signatures afterwards, so false candidates cost time, not correctness."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold**r) ** b >= recall:
            return b, r
    return num_perm, 1


class MinHasher:
    """Batched MinHash over word ``shingle``-grams of normalised text."""

    def __init__(self, num_perm: int = 64, shingle: int = 3, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle = shingle
        self.a = (rng.integers(1, 2**63 - 1, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1))  # odd multipliers
        self.b = rng.integers(0, 2**63 - 1, size=num_perm, dtype=np.uint64)

    def signatures(self, texts: list[str], *, normalised: bool = False) -> np.ndarray:
        """uint32 array (len(texts), num_perm). Pass ``normalised=True`` for output of :func:`normalise`."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        if not normalised:
            texts = [normalise(t) for t in texts]
        flat, lengths = _word_hashes(texts)
        k = self.shingle
        # shingle hash at position i combines words i..i+k-1 of the same row (rows shorter than k: one shingle)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        n_sh = np.maximum(lengths - k + 1, 1)
        sh_starts = np.zeros(n, dtype=np.int64)
        np.cumsum(n_sh[:-1], out=sh_starts[1:])
        total = int(n_sh.sum())
        row_of = np.repeat(np.arange(n), n_sh)
        pos_in_row = np.arange(total) - sh_starts[row_of]
        base = starts[row_of] + pos_in_row
        row_len = lengths[row_of]
        sh = np.zeros(total, dtype=np.uint64)
        mult = np.uint64(0x9E3779B97F4A7C15)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        with np.errstate(over="ignore"):
            for j in range(k):
                valid = pos_in_row + j < row_len
                idx = np.where(valid, base + j, base)
                sh = sh * mult + np.where(valid, flat[idx] + np.uint64(j + 1), np.uint64(0))
            # blocks of ~2k shingles keep the (shingles x num_perm) temporary in cache
            shift = np.uint64(32)
            r0 = 0
            while r0 < n:
                r1 = int(np.searchsorted(sh_starts, sh_starts[r0] + 2048, side="left"))
                r1 = min(max(r1, r0 + 1), n)
                s0 = sh_starts[r0]
                s1 = sh_starts[r1] if r1 < n else total
                block = sh[s0:s1, None] * self.a
                block += self.b
                block >>= shift
                out[r0:r1] = np.minimum.reduceat(block, sh_starts[r0:r1] - s0, axis=0)
                r0 = r1
        return out


_P = 0x100000001B3  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)


def _word_hashes(norm_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit polynomial hashes of the words of each normalised text, computed for all texts at once.

    Each text is prefixed with a start marker word so that empty texts still have one word.
    Returns (flat word hashes, words per text)."""
    n = len(norm_texts)
    buf = np.frombuffer(("\x01 " + "\n\x01 ".join(norm_texts) + "\n").encode("utf-8"), dtype=np.uint8)
    is_sep = (buf == 32) | (buf == 10)
    prev_sep = np.ones(len(buf), dtype=bool)
    prev_sep[1:] = is_sep[:-1]
    next_sep = np.ones(len(buf), dtype=bool)
    next_sep[:-1] = is_sep[1:]
    word_start = np.nonzero(~is_sep & prev_sep)[0]
    word_end = np.nonzero(~is_sep & next_sep)[0] + 1
    row_of_word = np.cumsum(buf == 10)[word_start]
    lengths = np.bincount(row_of_word, minlength=n).astype(np.int64)
    with np.errstate(over="ignore"):
        pw = np.full(len(buf), _P, dtype=np.uint64)
        pw[0] = 1
        pw = np.cumprod(pw)  # P**i (mod 2**64)
        pinv = np.full(len(buf), _P_INV, dtype=np.uint64)
        pinv[0] = 1
        pinv = np.cumprod(pinv)
        prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
        np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * pw, out=prefix[1:])
        h = (prefix[word_end] - prefix[word_start]) * pinv[word_start]
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return h, lengths


class SignatureFile:
    """(rows, num_perm) uint32 signatures appended to a file, so that the signatures of a huge input
    need not fit in RAM; :func:`read_signatures` maps them back."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def extend(self, sigs: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(sigs, dtype=np.uint32).tobytes())

    def close(self) -> None:
        self._file.close()


def read_signatures(path: Path, num_perm: int) -> np.ndarray:
    """The signatures of a :class:`SignatureFile`, memory-mapped read-only."""
    n = path.stat().st_size // (4 * num_perm)
    if n == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    return np.memmap(path, dtype=np.uint32, mode="r", shape=(n, num_perm))


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 (n, bands): one hash per band of ``rows`` signature slots."""
    n = len(sigs)
    keys = np.zeros((n, bands), dtype=np.uint64)
    mults = (np.arange(1, rows + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    with np.errstate(over="ignore"):
        for b in range(bands):
            block = sigs[:, b * rows : (b + 1) * rows].astype(np.uint64)
            h = np.full(n, np.uint64(b + 1) * np.uint64(0xC2B2AE3D27D4EB4F), dtype=np.uint64)
            for r in range(rows):
                h = (h ^ block[:, r]) * mults[r]
                h ^= h >> np.uint64(29)
            keys[:, b] = h
    return keys


@dataclass
class NearDuplicates:
    """Result of :func:`find_near_duplicates`: ``rep[i]`` is the row ``i`` duplicates (``i`` itself if none)."""

    rep: np.ndarray
    similarity: np.ndarray  # estimated Jaccard with rep (1.0 for reps)

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.rep != np.arange(len(self.rep))


def _candidate_pairs(keys: np.ndarray, allowed_first: np.ndarray | None = None) -> np.ndarray:
    """Pairs (first row of a bucket, other row of that bucket) over every band, as an (m, 2) array."""
    pairs = []
    n = len(keys)
    idx = np.arange(n)
    for b in range(keys.shape[1]):
        col = keys[:, b]
        order = np.argsort(col, kind="stable")
        sorted_keys = col[order]
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group_id = np.cumsum(new_group) - 1
        first = order[new_group][group_id]
        mask = first != order
        if mask.any():
            pairs.append(np.stack([first[mask], idx[order][mask]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.unique(np.concatenate(pairs), axis=0)
    return p


def find_near_duplicates(sigs: np.ndarray, threshold: float, *, chunk: int = 1_000_000) -> NearDuplicates:
    """Cluster rows whose estimated Jaccard >= threshold; each cluster is represented by its first row."""
    n, num_perm = sigs.shape
    rep = np.arange(n)
    sim = np.ones(n, dtype=np.float32)
    if n < 2:
        return NearDuplicates(rep, sim)
    bands, rows = optimal_bands(threshold, num_perm)
    keys = band_keys(sigs, bands, rows)
    pairs = _candidate_pairs(keys)
    del keys
    if len(pairs):
        est = np.empty(len(pairs), dtype=np.float32)
        for s in range(0, len(pairs), chunk):
            p = pairs[s : s + chunk]
            est[s : s + chunk] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1)
        pairs = pairs[est >= threshold]
    # union-find, the smaller index as root (the earliest row is kept)
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    dup_rows = np.unique(pairs) if len(pairs) else np.zeros(0, dtype=np.int64)
    for i in dup_rows.tolist():
        rep[i] = find(i)
    d = rep != np.arange(n)
    if d.any():
        sim[d] = (sigs[d] == sigs[rep[d]]).mean(axis=1)
    return NearDuplicates(rep, sim)


def cross_matches(sigs: np.ndarray, query_idx: np.ndarray, ref_idx: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (``sigs[query_idx]``), the position in ``ref_idx`` of a reference row with
    estimated Jaccard >= threshold (-1 if none), and that similarity. Signatures are not copied:
    only band keys (8 bytes x bands per row) and the rows that collide are gathered."""
    nq = len(query_idx)
    match = np.full(nq, -1, dtype=np.int64)
    best = np.zeros(nq, dtype=np.float32)
    nr = len(ref_idx)
    if nq == 0 or nr == 0:
        return match, best
    bands, rows = optimal_bands(threshold, sigs.shape[1])
    for b in range(bands):
        ref_keys = band_keys(sigs[ref_idx, b * rows : (b + 1) * rows], 1, rows)[:, 0]
        q_keys = band_keys(sigs[query_idx, b * rows : (b + 1) * rows], 1, rows)[:, 0]
        order = np.argsort(ref_keys, kind="stable")
        sorted_ref = ref_keys[order]
        pos = np.minimum(np.searchsorted(sorted_ref, q_keys), nr - 1)
        hit = sorted_ref[pos] == q_keys
        if not hit.any():
            continue
        qi = np.nonzero(hit)[0]
        ri = order[pos[qi]]
        s = (sigs[query_idx[qi]] == sigs[ref_idx[ri]]).mean(axis=1)
        better = (s >= threshold) & (s > best[qi])
        match[qi[better]] = ri[better]
        best[qi[better]] = s[better]
    return match, best


# ---- the deduplication stages of a preparation ------------------------------------------------------


@dataclass(frozen=True)
class Duplicates:
    """The rows one stage marked as duplicates, and how many per kind (``exact_example``, ``near_example``...)."""

    is_duplicate: np.ndarray  # bool per row (first-pass row index)
    by_kind: dict[str, int]
    original: np.ndarray  # int64 per row: the row it duplicates (first-pass row index), -1 for rows this stage kept


def mark_exact_duplicates(keys: dict[str, array], ids: IdTable, removed: JsonlSink) -> Duplicates:
    """First occurrence wins: a row whose normalised text (per scope of ``keys``, in their order; a
    64-bit hash per row) appeared on an earlier row is an exact duplicate of that row. Equal examples
    have equal prompts, so the earliest row with a prompt is never itself a duplicate."""
    n = len(ids)
    dup = np.zeros(n, dtype=bool)
    original = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    by_kind: dict[str, int] = {}
    for scope, scope_keys in keys.items():
        hashes = np.frombuffer(scope_keys, dtype=np.uint64) if n else np.zeros(0, dtype=np.uint64)
        _, first_idx, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        first = first_idx[inverse.reshape(-1)]
        new = (first != rows) & ~dup
        for i in np.nonzero(new)[0].tolist():
            removed.write({"id": ids[i], "kind": "exact_duplicate", "scope": scope, "duplicate_of": ids[int(first[i])]})
        by_kind[f"exact_{scope}"] = int(new.sum())
        original[new] = first[new]
        dup |= new
    return Duplicates(dup, by_kind, original)


def mark_near_duplicates(signatures: dict[str, Path], dd: DedupConfig, exact: np.ndarray, ids: IdTable, removed: JsonlSink) -> Duplicates:
    """Near duplicates per scope of ``signatures`` (when ``dd.near``). Exact duplicates are clustered
    too (with their originals, which come first and so represent the cluster), but they are already
    counted as exact."""
    near = np.zeros(len(ids), dtype=bool)
    original = np.full(len(ids), -1, dtype=np.int64)
    by_kind: dict[str, int] = {}
    for scope, path in signatures.items() if dd.near else ():
        nd = find_near_duplicates(read_signatures(path, dd.num_perm), dd.threshold)
        new = nd.is_duplicate & ~near & ~exact
        for i in np.nonzero(new)[0].tolist():
            removed.write({"id": ids[i], "kind": "near_duplicate", "scope": scope, "duplicate_of": ids[int(nd.rep[i])],
                           "similarity": round(float(nd.similarity[i]), 3)})
        by_kind[f"near_{scope}"] = int(new.sum())
        original[new] = nd.rep[new]
        near |= new
    return Duplicates(near, by_kind, original)
