"""Adapters served on one base model: each adapter is a model name; requests pick one by ``model``.

Adapters listed in the config are loaded at start. With ``adapter_dir`` set, a request may name any
sub-folder of that folder and it is loaded on first use. Names are validated (a fixed pattern, no
path separators) and the resolved folder must lie inside ``adapter_dir``, so a request can never
make the server read a path outside it (``..``, absolute paths and symlinks pointing out are refused).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.deploy.config import ADAPTER_NAME_PATTERN
from tunesmith.deploy.merge import read_adapter
from tunesmith.errors import TunesmithError

log = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class UnknownModel(TunesmithError):
    """The request names a model that is neither the base nor a (loadable) adapter."""


@dataclass
class AdapterEntry:
    name: str
    path: Path
    rank: int
    use_dora: bool = False
    created: int = field(default_factory=lambda: int(time.time()))


class AdapterRegistry:
    """Owns the (PEFT-wrapped) model; loads adapters under ``lock``, which the batcher holds while it runs."""

    def __init__(self, base_model, *, base_name: str = "base", adapter_dir: str | Path | None = None,
                 max_adapters: int = 16):
        self.model = base_model
        self.base_name = base_name
        self.adapter_dir = Path(adapter_dir).resolve() if adapter_dir else None
        self.max_adapters = max_adapters
        self.adapters: dict[str, AdapterEntry] = {}
        self.lock = threading.RLock()
        self.created = int(time.time())

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)

    def names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def add(self, name: str, path: str | Path) -> AdapterEntry:
        """Load the adapter folder ``path`` under ``name``."""
        if not re.match(ADAPTER_NAME_PATTERN, name) or name == self.base_name:
            raise TunesmithError(f"invalid adapter name '{name}'", hint=f"names match {ADAPTER_NAME_PATTERN}")
        info = read_adapter(path)
        with self.lock:
            if name in self.adapters:
                return self.adapters[name]
            if len(self.adapters) >= self.max_adapters:
                raise TunesmithError(f"already serving {self.max_adapters} adapters", hint="raise serve.max_adapters")
            from peft import PeftModel

            try:
                if not self.adapters:
                    self.model = PeftModel.from_pretrained(self.model, str(info.path), adapter_name=name,
                                                           is_trainable=False)
                else:
                    self.model.load_adapter(str(info.path), adapter_name=name, is_trainable=False)
            except Exception as e:  # noqa: BLE001 - wrong base, missing weights, ...: the user's adapter, not a bug
                if self.adapters and name in getattr(self.model, "peft_config", {}):
                    self.model.delete_adapter(name)  # no half-loaded adapter stays behind
                raise TunesmithError(
                    f"adapter '{name}' cannot be loaded onto this base model: {type(e).__name__}: {str(e)[:300]}",
                    hint="was it trained on a different base model?",
                ) from None
            self.model.eval()
            entry = AdapterEntry(name, info.path, info.rank, info.use_dora)
            self.adapters[name] = entry
            log.info("loaded adapter %s from %s (rank %d)", name, info.path, info.rank)
            return entry

    def lanes(self, adapters: list[str]) -> dict[str | None, list[int]]:
        """Split rows into forward lanes: adapter to activate (None = mixed) -> row indices.

        PEFT mixes LoRA adapters (and the base) in one forward via ``adapter_names``; it refuses that for
        DoRA, so each DoRA adapter's rows run as a lane of their own with that adapter active.
        """
        out: dict[str | None, list[int]] = {}
        for i, a in enumerate(adapters):
            key = a if a != BASE and self.adapters[a].use_dora else None
            out.setdefault(key, []).append(i)
        return out

    def _path_in_adapter_dir(self, name: str) -> Path | None:
        if self.adapter_dir is None or not re.match(ADAPTER_NAME_PATTERN, name) or ".." in name:
            return None
        candidate = (self.adapter_dir / name).resolve()
        if candidate.parent != self.adapter_dir or not (candidate / "adapter_config.json").is_file():
            return None
        return candidate

    def resolve(self, name: str) -> str:
        """The PEFT adapter name for a request's ``model`` (loading it from ``adapter_dir`` if allowed)."""
        if name == self.base_name:
            return BASE
        if name in self.adapters:
            return name
        path = self._path_in_adapter_dir(name)
        if path is None:
            raise UnknownModel(f"The model `{name}` does not exist", hint=f"available: {', '.join(self.names())}")
        self.add(name, path)
        return name
