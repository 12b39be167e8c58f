"""Read rows out of files, one at a time: JSONL, JSON arrays, CSV and Parquet, each optionally gzip'd.

Readers never raise for a bad row. They yield :class:`RawRow` objects that carry either the parsed
row (a dict) or a :class:`Problem` saying what is wrong with that line, so the caller can quarantine
it with its line number. File-level fixes (a byte-order mark, Windows line endings) are applied and
reported as warnings rather than rejecting the row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data import strict_json
from tunesmith.errors import DataError

_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes under errors="surrogateescape"
RAW_LIMIT = 2000  # characters of an offending line kept in rejected.jsonl (the full line for normal sizes)


@dataclass(slots=True)
class Problem:
    kind: str  # short machine-readable code, e.g. "malformed_json"
    reason: str  # what is wrong
    hint: str  # what to do
    field: str | None = None


@dataclass(slots=True)
class RawRow:
    line: int  # 1-based line (JSONL/JSON/CSV) or row number (Parquet)
    raw: str  # the original text of the row (cut to RAW_LIMIT characters)
    row: dict[str, Any] | None = None
    problem: Problem | None = None


@dataclass
class ReadWarnings:
    """Things fixed while reading, counted per kind with the first line where each happened."""

    counts: dict[str, int] = field(default_factory=dict)
    first_line: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, line: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.first_line.setdefault(kind, line)


_EXTENSIONS = ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"), (".parquet", "parquet"))


def _container_of_name(name: str) -> str | None:
    name = name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((kind for ext, kind in _EXTENSIONS if name.endswith(ext)), None)


def detect_container(path: Path) -> str:
    kind = _container_of_name(path.name)
    if kind is None:
        raise DataError(
            f"{path}: cannot tell the file type from its name",
            hint="use .jsonl, .json, .csv or .parquet (optionally .gz), or set container: in data.files",
        )
    return kind


def data_files(path: Path) -> list[Path]:
    """The files to read for an input path: the path itself, or for a folder the data files directly
    in it (.jsonl, .ndjson, .json, .csv, .parquet, each optionally .gz), sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _container_of_name(p.name))
        if not files:
            raise DataError(f"{path} is a directory with no data files in it",
                            hint="put .jsonl, .json, .csv or .parquet files (optionally .gz) in it, or point data.train_file at a file")
        return files
    if not path.exists():
        raise DataError(f"data file {path} does not exist", hint="check data.train_file / data.files (relative to the config file)")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file", hint="point data.train_file / data.files at a data file or a folder of them")
    return [path]


SNIFF_BYTES = 65536


def _looks_like(path: Path) -> str | None:
    """What the start of a file looks like: "parquet" (magic bytes), "jsonl" (its first line is a
    JSON object by itself), "json" (it opens with '[' or a '{' that spans lines), "other" (such as
    CSV), or None when it cannot be read (the reader then says what is wrong)."""
    try:
        with _open_binary(path) as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").lstrip()
    if text[:1] == "[":
        return "json"
    if text[:1] == "{":
        try:
            return "jsonl" if isinstance(json.loads(text.split("\n", 1)[0]), dict) else "json"
        except (ValueError, RecursionError):
            return "json"
    return "other"


_LOOKS = {"jsonl": "JSON Lines (its first line is a JSON object)", "json": "JSON", "parquet": "Parquet (it starts with the PAR1 magic bytes)",
          "other": "something else (it does not start with Parquet's PAR1 magic bytes)"}
_MISMATCH = {  # declared type -> content types that plainly contradict it
    "csv": ("jsonl", "json", "parquet"), "jsonl": ("parquet",), "json": ("jsonl", "parquet"), "parquet": ("jsonl", "json", "other"),
}


def input_container(path: Path, container: str = "auto") -> str:
    """The type to read the file ``path`` as: ``container``, or from its name. A DataError when the
    content plainly is another type (a JSONL file named .csv would otherwise lose its first line to
    the CSV header and yield rows of nonsense)."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file", hint="point the setting at a data file (.jsonl, .json, .csv or .parquet)")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", hint="check data.train_file / data.files (relative to the config file)")
    kind = detect_container(path) if container == "auto" else container
    looks = _looks_like(path)
    if looks in _MISMATCH[kind]:
        said = f"its name says {kind}" if container == "auto" else f"container: {kind} is set for it"
        fix = f"rename it (e.g. to .{looks}) or set container: {looks} for it in data.files" if looks != "other" else "check it is the file you meant"
        raise DataError(f"{path}: {said}, but the content looks like {_LOOKS[looks]}", hint=fix)
    return kind


def _open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _cut(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + f"... [{len(text)} characters in all]"


def _decode(data: bytes, lineno: int, warnings: ReadWarnings, fix: bool) -> tuple[str | None, Problem | None]:
    if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):
        if not fix:
            return None, Problem("bom", "line starts with a UTF-8 byte-order mark", "save the file as UTF-8 without BOM")
        data = data[3:]
        warnings.add("bom_removed", lineno)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, Problem(
            "invalid_utf8",
            f"invalid UTF-8 at byte {e.start} of the line ({data[e.start:e.start + 4]!r})",
            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        )
    if text.endswith("\r\n") or text.endswith("\r"):
        if not fix:
            return None, Problem("crlf", "Windows line ending (\\r\\n)", "convert the file to Unix line endings (dos2unix)")
        warnings.add("crlf_normalised", lineno)
        text = text.rstrip("\r\n")
    return text, None


def parse_jsonl_line(lineno: int, data: bytes, *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> RawRow | None:
    """One JSONL line (bytes, with its newline) as a RawRow; None for a blank line (counted as a warning)."""
    if len(data) > max_line_bytes:
        return RawRow(
            lineno,
            _cut(data[:RAW_LIMIT].decode("utf-8", "replace")),
            problem=Problem(
                "line_too_long",
                f"line is {len(data)} bytes, over the limit of {max_line_bytes}",
                "split the example, or raise data.max_line_bytes",
            ),
        )
    if data.endswith(b"\n"):
        data = data[:-1]
    text, problem = _decode(data, lineno, warnings, fix)
    if problem is not None:
        return RawRow(lineno, _cut(data.decode("utf-8", "backslashreplace")), problem=problem)
    if not text.strip():
        warnings.add("blank_lines_skipped", lineno)
        return None
    try:
        row = strict_json.loads(text)
    except json.JSONDecodeError as e:
        return RawRow(
            lineno,
            _cut(text),
            problem=Problem("malformed_json", f"malformed JSON: {e.msg} at column {e.colno}", "fix the JSON on this line (one object per line)"),
        )
    except strict_json.UnusableJson as e:
        return RawRow(lineno, _cut(text), problem=_unusable(e))
    if not isinstance(row, dict):
        return RawRow(
            lineno,
            _cut(text),
            problem=Problem("not_an_object", f"each line must be a JSON object, got {type(row).__name__}", "write one {...} object per line"),
        )
    return RawRow(lineno, text if len(text) <= RAW_LIMIT else _cut(text), row=row)


def _unusable(e: strict_json.UnusableJson) -> Problem:
    return Problem(e.kind, e.reason, e.hint, e.field)


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, bytes] | RawRow]:
    """(line number, raw bytes) of each line: parsing can then happen in worker processes. A file
    that breaks off (a truncated or corrupt .gz) ends with one problem row instead of a traceback."""
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, data in enumerate(f, start=1):
                yield lineno, data
    except (OSError, EOFError, zlib.error) as e:
        yield _unreadable(lineno + 1, e)


def _unreadable(line: int, e: BaseException) -> RawRow:
    return RawRow(line, "", problem=Problem("unreadable_file", f"the file cannot be read from here on: {type(e).__name__}: {e}",
                                            "check the file is complete (re-download or re-compress it)"))


def _guarded(rows: Iterator[RawRow]) -> Iterator[RawRow]:
    last = 0
    try:
        for r in rows:
            last = r.line
            yield r
    except (OSError, EOFError, zlib.error, ValueError) as e:
        yield _unreadable(last + 1, e)


def iter_jsonl(path: Path, *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> Iterator[RawRow]:
    for item in iter_jsonl_lines(path):
        if isinstance(item, RawRow):
            yield item
            continue
        lineno, data = item
        raw = parse_jsonl_line(lineno, data, max_line_bytes=max_line_bytes, warnings=warnings, fix=fix)
        if raw is not None:
            yield raw


def iter_json_array(path: Path, *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> Iterator[RawRow]:
    """A JSON file holding an array of objects. JSON arrays cannot be streamed without a parser that
    supports it, so the file is read whole (use JSONL for files larger than memory)."""
    with _open_binary(path) as f:
        data = f.read()
    text, problem = _decode(data, 1, warnings, fix)
    if problem is not None:
        yield RawRow(1, "", problem=problem)
        return
    if "\r\n" in text:
        if not fix:
            yield RawRow(1, "", problem=Problem("crlf", "Windows line endings (\\r\\n)", "convert the file to Unix line endings"))
            return
        warnings.add("crlf_normalised", 1)
        text = text.replace("\r\n", "\n")
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        yield RawRow(1, _cut(text[:200]), problem=Problem("not_an_array", "a .json file must hold an array of objects [...]", "use [ {...}, {...} ] or JSONL"))
        return
    pos = _skip_ws(text, pos + 1)
    line, line_at = 1, 0  # line of pos; position up to which newlines were counted
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", line_at, pos)
        line_at = pos
        raw, end = _array_element(text, pos, line, max_line_bytes)
        yield raw
        if end is None:
            return
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _array_element(text: str, pos: int, line: int, max_line_bytes: int) -> tuple[RawRow, int | None]:
    """The array element starting at ``pos`` (on ``line``) and where it ends; None when the rest of
    the file cannot be read after it."""
    rest_lost = "fix the JSON there; everything after it was not read"
    try:
        obj, end = strict_json.raw_decode(text, pos)
    except strict_json.UnusableJson as e:  # a duplicate key or too deep: find its end, and read on after it
        end = strict_json.end_of_value(text, pos)
        if end is None:
            return RawRow(line, _cut(text[pos : pos + 500]), problem=Problem(
                e.kind, f"{e.reason}, and its brackets never close; the rest of the file could not be read", rest_lost, e.field)), None
        return RawRow(line, _cut(text[pos:end]), problem=_unusable(e)), end
    except json.JSONDecodeError as e:
        return RawRow(e.lineno, _cut(text[pos : pos + 500]), problem=Problem(
            "malformed_json", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}; the rest of the file could not be read", rest_lost)), None
    raw = text[pos:end]
    if len(raw.encode("utf-8")) > max_line_bytes:
        return RawRow(line, _cut(raw), problem=Problem("line_too_long", f"element is over {max_line_bytes} bytes", "split it or raise data.max_line_bytes")), end
    if not isinstance(obj, dict):
        return RawRow(line, _cut(raw), problem=Problem("not_an_object", f"array element must be an object, got {type(obj).__name__}", "use objects {...}")), end
    return RawRow(line, _cut(raw), row=obj), end


def iter_csv(path: Path, *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> Iterator[RawRow]:
    with _open_binary(path) as fb:
        head = fb.peek(3)[:3] if hasattr(fb, "peek") else b""
        if head == b"\xef\xbb\xbf":
            if not fix:
                yield RawRow(1, "", problem=Problem("bom", "file starts with a UTF-8 byte-order mark", "save as UTF-8 without BOM"))
                return
            fb.read(3)
            warnings.add("bom_removed", 1)
        f = io.TextIOWrapper(fb, encoding="utf-8", errors="surrogateescape", newline="")
        csv.field_size_limit(max(max_line_bytes, 131072))
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield RawRow(1, "", problem=Problem("malformed_csv", f"cannot read the CSV header: {e}", "check the file is CSV (comma-separated, UTF-8)"))
            return
        prev = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeError) as e:
                yield RawRow(prev + 1, "", problem=Problem(
                    "malformed_csv", f"malformed CSV: {e}; the rest of the file could not be read", "fix the quoting there (or raise data.max_line_bytes)"))
                return
            start = prev + 1
            prev = reader.line_num
            raw = ",".join(values)
            if not any(v.strip() for v in values):
                warnings.add("blank_lines_skipped", start)
                continue
            if not raw.isascii() and _SURROGATE.search(raw):
                yield RawRow(start, _cut(raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")),
                             problem=Problem("invalid_utf8", "invalid UTF-8 in this row", "re-encode the file as UTF-8"))
                continue
            if len(raw.encode("utf-8")) > max_line_bytes:
                yield RawRow(start, _cut(raw), problem=Problem("line_too_long", f"row is over {max_line_bytes} bytes", "split it or raise data.max_line_bytes"))
                continue
            if len(values) != len(header):
                yield RawRow(start, _cut(raw), problem=Problem(
                    "wrong_column_count", f"row has {len(values)} columns, the header has {len(header)}", "quote fields that contain commas"))
                continue
            if any("\r" in v for v in values):
                warnings.add("crlf_normalised", start)
                values = [v.replace("\r\n", "\n") for v in values]
            # empty CSV cells mean "absent"; JSON-looking cells (messages, conversations) are parsed later
            row = {k: v for k, v in zip(header, values, strict=True) if v != ""}
            yield RawRow(start, _cut(json.dumps(row, ensure_ascii=False)), row=row)


def iter_parquet(path: Path, *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    source: Any = gzip.open(path, "rb") if _is_gzip(path) else path
    try:
        pf = pq.ParquetFile(source)
    except Exception as e:  # pyarrow raises several types for a broken file
        yield RawRow(1, "", problem=Problem("unreadable_file", f"cannot read Parquet file: {e}", "check the file was written completely"))
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                n += 1
                yield RawRow(n, _cut(json.dumps(row, ensure_ascii=False, default=str)), row=row)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        yield _unreadable(n + 1, e)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


CONTAINERS = {"jsonl": iter_jsonl, "json": iter_json_array, "csv": iter_csv, "parquet": iter_parquet}


def iter_rows(path: Path, container: str = "auto", *, max_line_bytes: int, warnings: ReadWarnings, fix: bool = True) -> Iterator[RawRow]:
    kind = input_container(path, container)
    return _guarded(CONTAINERS[kind](path, max_line_bytes=max_line_bytes, warnings=warnings, fix=fix))
