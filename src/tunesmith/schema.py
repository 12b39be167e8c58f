"""Base class for every config section: unknown keys are errors, values are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. ``extra="forbid"`` makes a misspelt key an error instead of a silent no-op."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
