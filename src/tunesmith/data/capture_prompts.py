"""The prompts `tunesmith data capture` sends: a file of prompts (``.txt``: one per line; JSONL/JSON/CSV/Parquet rows
``{"prompt": ...}`` or ``{"messages": [...]}`` ending in a user turn), or the prompts of a data file in any supported
format (the conversation minus its final assistant turn, with its declared tools). Rows that hold no prompt are
rejected with their line and reason, like the data stage's quarantine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.formats import RowError, apply_columns, is_preference_row, row_to_record
from tunesmith.data.readers import ReadWarnings, iter_rows
from tunesmith.data.records import is_text_record, prompt_messages, reference_answer
from tunesmith.errors import DataError

MAX_LINE_BYTES = 10_000_000


@dataclass(frozen=True)
class Prompt:
    """One request to make: the conversation so far, the tools it declares, and the source's own answer (if any)."""

    id: str  # file:line
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    parallel_tool_calls: bool | None = None
    reference: str | None = None  # the source row's final assistant answer: what the format check compares with


@dataclass(frozen=True)
class PromptRejection:
    id: str
    line: int
    kind: str
    reason: str
    hint: str

    def as_row(self, file: str) -> dict[str, Any]:
        return {"file": file, "line": self.line, "id": self.id, "kind": self.kind, "reason": self.reason, "hint": self.hint}


def _open_conversation(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The messages of an OpenAI-format row that ends before the assistant answers (a prompt, not an example)."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs):
        return None
    if msgs[-1]["role"] == "assistant":
        return None
    for j, m in enumerate(msgs):
        if m["role"] not in ("system", "user", "assistant", "tool") or not isinstance(m.get("content"), str):
            raise RowError(f"messages[{j}] needs a role (system/user/assistant/tool) and a string content",
                           field=f"messages[{j}]", kind="wrong_type", hint='use {"role": "user", "content": "..."}')
    return [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if k in m} for m in msgs]


def row_prompt(row: dict[str, Any], rid: str, fmt: str, columns: dict[str, str]) -> Prompt:
    """The prompt of one row (RowError when it has none)."""
    if is_preference_row(row):
        row_to_record(row, "auto")  # raises the preference (DPO) row error
    open_conv = _open_conversation(row)
    if open_conv is not None:
        return Prompt(rid, open_conv, list(row.get("tools") or []), row.get("parallel_tool_calls"))
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip() and not row.get("completion"):
        return Prompt(rid, [{"role": "user", "content": prompt}])
    record, _ = row_to_record(apply_columns(row, columns), fmt)
    if is_text_record(record):
        raise RowError("a raw-text row has no prompt to send", kind="no_prompt",
                       hint="capture needs prompts: conversations, instruction rows or {\"prompt\": ...} rows")
    msgs = prompt_messages(record)
    if not any(m["role"] == "user" for m in msgs):
        raise RowError("the conversation has no user turn before its answer", kind="no_prompt", hint="add the user's request")
    return Prompt(rid, msgs, list(record.get("tools") or []), record.get("parallel_tool_calls"), reference_answer(record))


def read_prompts(path: Path, *, fmt: str = "auto", columns: dict[str, str] | None = None) -> tuple[list[Prompt], list[PromptRejection]]:
    """Every prompt of ``path``, in file order, and the rows that hold none."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file {path} does not exist", hint="give a .txt file (one prompt per line) or a data file")
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Prompt(f"{path.name}:{i}", [{"role": "user", "content": t}]) for i, t in enumerate(lines, 1) if t.strip()], []
    prompts, rejected = [], []
    for raw in iter_rows(path, max_line_bytes=MAX_LINE_BYTES, warnings=ReadWarnings()):
        rid = f"{path.name}:{raw.line}"
        if raw.row is None:
            p = raw.problem
            rejected.append(PromptRejection(rid, raw.line, p.kind if p else "unreadable", p.reason if p else "unreadable row",
                                            p.hint if p else ""))
            continue
        try:
            prompts.append(row_prompt(raw.row, rid, fmt, columns or {}))
        except RowError as e:
            rejected.append(PromptRejection(rid, raw.line, e.kind, e.reason, e.hint))
    return prompts, rejected
