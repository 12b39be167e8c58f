"""``eval.regression.general_prompts_file``: your general instructions, with or without reference answers.

JSONL, one prompt per line, in any format the data stage reads (:mod:`tunesmith.data.formats`: openai
``messages``, sharegpt ``conversations``, alpaca ``instruction``/``input``/``output``, ``prompt``/
``completion``), plus ``prompt``/``response``. The answer is optional: ``{"prompt": "..."}``,
``{"instruction": "..."}`` or ``messages`` ending with the user's turn are prompts without a reference
(used for drift and the judge; ROUGE-L against a reference only where there is one). A row that cannot be
read is an error naming the file, the line and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.data.formats import RowError, detect_format, row_to_record
from tunesmith.errors import DataError
from tunesmith.utils.io import iter_jsonl_lines

PLACEHOLDER = "(no reference)"


def _with_answer(row: dict[str, Any], fmt: str) -> tuple[dict[str, Any], bool]:
    """(the row with an answer the format readers accept, whether it had its own answer)."""
    if fmt == "completion" and "completion" not in row and isinstance(row.get("response"), str):
        row = {**row, "completion": row["response"]}
    if fmt == "completion" and row.get("completion") is None:
        return {**row, "completion": PLACEHOLDER}, False
    if fmt == "alpaca" and row.get("output") is None:
        return {**row, "output": PLACEHOLDER}, False
    turns_key, role_key, value_key, answer_role = (("messages", "role", "content", "assistant") if fmt == "openai"
                                                   else ("conversations", "from", "value", "gpt"))
    turns = row.get(turns_key)
    if fmt in ("openai", "sharegpt") and isinstance(turns, list) and turns and isinstance(turns[-1], dict) \
            and turns[-1].get(role_key) in ("user", "human"):
        return {**row, turns_key: [*turns, {role_key: answer_role, value_key: PLACEHOLDER}]}, False
    return row, True


def read_general_prompts_file(path: Path) -> list[dict[str, Any]]:
    """Records ``{"id", "messages"}``; ``"no_reference": True`` where the row had no answer."""
    if not path.is_file():
        raise DataError(f"eval.regression.general_prompts_file {path} does not exist")
    rows = []
    for n, row in iter_jsonl_lines(path):
        where = f"{path}:{n}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        try:
            fmt = detect_format(row)
            if fmt == "text":
                raise RowError("a 'text' row has no prompt", hint="give 'prompt', 'instruction' or 'messages'")
            full, has_answer = _with_answer(row, fmt)
            record, _ = row_to_record(full, fmt)
        except RowError as e:
            raise DataError(f"{where}: {e.reason}" + (f" ({e.hint})" if e.hint else "")) from None
        out = {"id": str(row.get("id", f"{path.name}:{n}")), "messages": record["messages"]}
        if not has_answer:
            out["no_reference"] = True
        rows.append(out)
    if not rows:
        raise DataError(f"{path}: no prompts in the file")
    return rows
