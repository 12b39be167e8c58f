"""General (non-task) data for the regression measurement, all offline.

Text for perplexity, first found wins:
  1. ``eval.regression.text_file`` (text or HTML);
  2. Debian's ``python3.11-doc`` HTML under /usr/share/doc/python3.11/html (tutorial pages first);
  3. the public-domain text bundled in ``tunesmith/evaluate/data/general_text.txt``.

General prompts, first found wins:
  0. ``eval.regression.general_prompts_file`` (any chat format, answers optional: :mod:`.prompt_file`);
  1. ``eval.regression.prompts_file`` (JSONL: canonical records with messages, or prompt/response);
  2. the run's ``data/general_eval.jsonl`` (written by the data stage's general mixing: rows drawn
     from the general pool and never trained on);
  3. the held-out files of the ``chatterbot-corpus`` package: of its ``data/english/*.yml`` files
     sorted by name, the last 20% (rounded up) are eval-only, by the rule in docs/evaluation.md.
     The package is read as data via importlib.metadata, never imported.
"""

from __future__ import annotations

import html
import importlib.metadata
import re
from pathlib import Path

import yaml

from tunesmith.errors import DataError
from tunesmith.utils.io import iter_jsonl_lines

PYTHON_DOC = Path("/usr/share/doc/python3.11/html")
BUNDLED_TEXT = Path(__file__).parent / "data" / "general_text.txt"


def html_to_text(raw: str) -> str:
    raw = re.sub(r"(?is)<(script|style|nav|header|footer)[^>]*>.*?</\1>", " ", raw)
    raw = re.sub(r"(?s)<[^>]+>", " ", raw)
    return re.sub(r"\s+", " ", html.unescape(raw)).strip()


def general_text(path: Path | None, max_chars: int, python_doc: Path = PYTHON_DOC) -> tuple[str, str]:
    """(text, source description), at most ``max_chars`` characters."""
    if path is not None:
        if not path.is_file():
            raise DataError(f"eval.regression.text_file {path} does not exist")
        raw = path.read_text(encoding="utf-8", errors="replace")
        text = html_to_text(raw) if path.suffix.lower() in (".html", ".htm") else raw
        return text[:max_chars], str(path)
    if python_doc.is_dir():
        pages = sorted(python_doc.glob("tutorial/*.html")) + sorted(python_doc.glob("library/*.html"))
        parts: list[str] = []
        size = 0
        for p in pages:
            t = html_to_text(p.read_text(encoding="utf-8", errors="replace"))
            parts.append(t)
            size += len(t)
            if size >= max_chars:
                break
        if parts:
            return " ".join(parts)[:max_chars], f"{python_doc} (Debian python3.11-doc)"
    return BUNDLED_TEXT.read_text(encoding="utf-8")[:max_chars], "bundled general_text.txt (CC0)"


def chatterbot_files() -> list[Path]:
    """English chatterbot-corpus YAML files, sorted by name; [] if the package is not installed."""
    try:
        dist = importlib.metadata.distribution("chatterbot-corpus")
    except importlib.metadata.PackageNotFoundError:
        return []
    files = [Path(str(f.locate())) for f in dist.files or []
             if str(f).replace("\\", "/").startswith("chatterbot_corpus/data/english/") and str(f).endswith(".yml")]
    return sorted(files, key=lambda p: p.name)


def chatterbot_eval_files(files: list[Path] | None = None) -> list[Path]:
    """The eval-only part (the rule lives with the data stage, which never mixes these into training)."""
    from tunesmith.data.mix import chatterbot_eval_files as held_out

    return held_out(chatterbot_files() if files is None else files)


def read_chatterbot(path: Path) -> list[dict]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for i, conv in enumerate(data.get("conversations") or []):
        if isinstance(conv, list) and len(conv) >= 2 and all(isinstance(x, str) for x in conv[:2]):
            out.append({"id": f"chatterbot:{path.name}:{i}",
                        "messages": [{"role": "user", "content": conv[0]}, {"role": "assistant", "content": conv[1]}]})
    return out


def _read_prompt_file(path: Path) -> list[dict]:
    rows = []
    for n, row in iter_jsonl_lines(path):
        if isinstance(row.get("messages"), list) and any(m.get("role") == "assistant" for m in row["messages"]):
            rows.append({"id": str(row.get("id", f"{path.name}:{n}")), "messages": row["messages"]})
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            rows.append({"id": str(row.get("id", f"{path.name}:{n}")),
                         "messages": [{"role": "user", "content": row["prompt"]},
                                      {"role": "assistant", "content": row["response"]}]})
        else:
            raise DataError(f"{path}:{n}: needs 'messages' with an assistant answer, or 'prompt' and 'response'")
    return rows


def general_prompts(path: Path | None, run_data_dir: Path | None, max_prompts: int,
                    general_prompts_file: Path | None = None) -> tuple[list[dict], str]:
    """(records, source description); only ``general_prompts_file``'s may lack a reference (``no_reference``)."""
    if general_prompts_file is not None:
        from tunesmith.evaluate.prompt_file import read_general_prompts_file

        return read_general_prompts_file(general_prompts_file)[:max_prompts], str(general_prompts_file)
    if path is not None:
        if not path.is_file():
            raise DataError(f"eval.regression.prompts_file {path} does not exist")
        return _read_prompt_file(path)[:max_prompts], str(path)
    if run_data_dir is not None and (run_data_dir / "general_eval.jsonl").is_file():
        p = run_data_dir / "general_eval.jsonl"
        return _read_prompt_file(p)[:max_prompts], f"{p} (general rows held out by the data stage)"
    files = chatterbot_eval_files()
    if not files:
        return [], "none (chatterbot-corpus not installed and no prompts_file)"
    rows = [r for f in files for r in read_chatterbot(f)]
    # spread over the files: take every k-th row so each held-out topic is represented
    step = max(1, len(rows) // max_prompts) if max_prompts else 1
    return rows[::step][:max_prompts], "chatterbot-corpus held-out files: " + ", ".join(f.name for f in files)
