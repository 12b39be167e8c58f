"""The input files of a preparation (from ``data.train_file``, ``data.validation_file``, ``data.test_file`` and
``data.files``) and the
fingerprint that says whether a prepared folder still matches them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunesmith.data.config import DataConfig, InputFile
from tunesmith.data.readers import data_files, input_container
from tunesmith.errors import DataError


def resolve_inputs(cfg: DataConfig, base_dir: Path, input_path: Path | None = None) -> list[tuple[Path, InputFile]]:
    """(file, its settings) for every input file; a folder yields each data file in it, sorted by name."""
    specs = cfg.inputs(train_file=str(input_path) if input_path is not None else None)
    if not specs:
        raise DataError("no input data: data.train_file and data.files are both empty", hint="set data.train_file to your data file")
    if all(spec.split != "auto" for spec in specs):
        raise DataError("data.validation_file / data.test_file are set but there is no training file",
                        hint="set data.train_file (the held-out files are only ever validation or test)")
    out = []
    for spec in specs:
        p = Path(spec.path).expanduser()
        p = p if p.is_absolute() else (base_dir / p).resolve()
        for f in data_files(p):  # a folder stands for the data files in it
            input_container(f, spec.container)  # a clear error now when the content is not what the name says
            out.append((f, spec))
    return out


def fingerprint(cfg: DataConfig, inputs: list[tuple[Path, InputFile]], extra: dict[str, Any]) -> str:
    """Identifies a preparation: config, input files (path, size, mtime; the held-out validation/test files too)
    and tokenizer settings."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for p, _ in inputs:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
