"""Format compliance: does an answer have the required shape? Reported apart from correctness.

An answer complies when it fully matches ``format_pattern`` (if set) and, with ``format_json``
or a ``json_schema``, parses as JSON and validates against the schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.evaluate.scorers import parse_json_answer


def load_schema(schema: dict[str, Any] | str | None, base_dir: Path) -> dict[str, Any] | None:
    """The JSON Schema from the config (inline, or a file path relative to the config), checked."""
    if schema is None:
        return None
    if isinstance(schema, str):
        path = Path(schema) if Path(schema).is_absolute() else base_dir / schema
        if not path.is_file():
            raise ConfigError(f"eval.json_schema file {path} does not exist")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"eval.json_schema file {path} is not valid JSON: {e}") from None
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        raise ConfigError(f"eval.json_schema is not a valid JSON Schema: {e.message}") from None
    return schema


class FormatChecker:
    """Callable: answer -> True/False, or None when no format is declared."""

    def __init__(self, pattern: str | None = None, *, json_required: bool = False, schema: dict[str, Any] | None = None):
        self.pattern = re.compile(pattern, flags=re.DOTALL) if pattern else None
        self.json_required = json_required or schema is not None
        self.schema = schema
        self.validator = None
        if schema is not None:
            from jsonschema.validators import validator_for

            self.validator = validator_for(schema)(schema)

    @property
    def active(self) -> bool:
        return self.pattern is not None or self.json_required

    def reason(self, answer: str) -> str | None:
        """Why ``answer`` does not comply (None when it does)."""
        text = answer.strip()
        if self.pattern is not None and self.pattern.fullmatch(text) is None:
            return "does not match format_pattern"
        if self.json_required:
            try:
                obj = parse_json_answer(text)
            except ValueError:
                return "not valid JSON"
            if self.validator is not None:
                err = next(iter(self.validator.iter_errors(obj)), None)
                if err is not None:
                    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                    return f"schema: {where}: {err.message}"
        return None

    def __call__(self, answer: str) -> bool | None:
        if not self.active:
            return None
        return self.reason(answer) is None
