"""Adapters served on one base model: each adapter is a model name; requests pick one by ``model``.

Adapters listed in the config are loaded at start. With ``adapter_dir`` set, a request may name any
sub-folder of that folder and it is loaded on first use. Names are validated (a fixed pattern, no
path separators), the folder must be a direct child of ``adapter_dir`` and its files are read without
following any link (adapter_files.py), so a request can never make the server read a file outside it.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.deploy.adapter_config import AdapterMeta
from tunesmith.deploy.config import ADAPTER_NAME_PATTERN
from tunesmith.deploy.server.adapter_files import (
    NoAdapterFolder,
    copy_confined_adapter,
    read_listed_adapter,
)
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
        """Load the adapter folder ``path`` (listed by the operator) under ``name``."""
        self._check_name(name)
        path = Path(path)
        return self._load(name, path, read_listed_adapter(path, name), shown_path=path)

    def _check_name(self, name: str) -> None:
        if not re.match(ADAPTER_NAME_PATTERN, name) or name == self.base_name:
            raise TunesmithError(f"invalid adapter name '{name}'", hint=f"names match {ADAPTER_NAME_PATTERN}")

    def _load(self, name: str, source: Path, meta: AdapterMeta, *, shown_path: Path) -> AdapterEntry:
        """Load the checked folder ``source`` into the model (``shown_path`` is where it came from)."""
        with self.lock:
            if name in self.adapters:
                return self.adapters[name]
            if len(self.adapters) >= self.max_adapters:
                raise TunesmithError(f"already serving {self.max_adapters} adapters", hint="raise serve.max_adapters")
            from peft import PeftModel

            try:
                if not self.adapters:
                    self.model = PeftModel.from_pretrained(self.model, str(source), adapter_name=name,
                                                           is_trainable=False)
                else:
                    self.model.load_adapter(str(source), adapter_name=name, is_trainable=False)
            except Exception as e:  # noqa: BLE001 - wrong base, bad weights, ...: the user's adapter, not a bug
                if self.adapters and name in getattr(self.model, "peft_config", {}):
                    self.model.delete_adapter(name)  # no half-loaded adapter stays behind
                detail = str(e).replace(str(source), f"<adapter {name}>")[:300]  # never a server path
                raise TunesmithError(
                    f"adapter '{name}' cannot be loaded onto this base model: {type(e).__name__}: {detail}",
                    hint="was it trained on a different base model?",
                ) from None
            self.model.eval()
            entry = AdapterEntry(name, shown_path, meta.rank, meta.use_dora)
            self.adapters[name] = entry
            log.info("loaded adapter %s from %s (rank %d)", name, shown_path, meta.rank)
            return entry

    def _load_from_adapter_dir(self, name: str) -> None:
        """Load ``adapter_dir/name`` from a private copy of its files, read without following links."""
        with tempfile.TemporaryDirectory(prefix="tunesmith-adapter-") as tmp:
            meta = copy_confined_adapter(self.adapter_dir, name, Path(tmp))
            self._load(name, Path(tmp), meta, shown_path=self.adapter_dir / name)

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

    def resolve(self, name: str) -> str:
        """The PEFT adapter name for a request's ``model`` (loading it from ``adapter_dir`` if allowed)."""
        if name == self.base_name:
            return BASE
        if name in self.adapters:
            return name
        unknown = UnknownModel(f"The model `{name}` does not exist", hint=f"available: {', '.join(self.names())}")
        if self.adapter_dir is None or not re.match(ADAPTER_NAME_PATTERN, name) or ".." in name:
            raise unknown
        try:
            self._load_from_adapter_dir(name)
        except NoAdapterFolder:
            raise unknown from None
        return name
