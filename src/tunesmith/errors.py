"""User-facing errors.

Anything the user can fix (a bad config key, a malformed file, a model that cannot be found) is
raised as :class:`TunesmithError` with a sentence saying what is wrong and what to do. The CLI
prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """An error caused by the user's input, with a message that says what to do."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TunesmithError):
    """The run config is invalid (unknown key, wrong type, impossible combination)."""


class DataError(TunesmithError):
    """An input data file cannot be used."""


class ModelError(TunesmithError):
    """A model or tokenizer cannot be loaded."""


def closest(name: str, choices: list[str]) -> str | None:
    """The choice most like ``name`` (for "did you mean ...?" hints), or None."""
    import difflib

    found = difflib.get_close_matches(name, choices, n=1)
    return found[0] if found else None


def catalog_entry(catalog: dict, name: str, *, what: str, hint: str, shown=lambda key: key):
    """``catalog[name.lower()]``, or a TunesmithError naming the closest key ("did you mean ...?");
    ``shown`` turns a catalogue key into the name the user knows."""
    key = name.lower()
    if key not in catalog:
        guess = closest(key, list(catalog))
        raise TunesmithError(f"unknown {what} '{name}'" + (f" (did you mean '{shown(guess)}'?)" if guess else ""),
                             hint=hint)
    return catalog[key]
