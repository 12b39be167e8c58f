"""Reading a PEFT adapter folder for the server: a strictly checked config, and no link followed out of
``serve.adapter_dir``.

Two kinds of folder reach the server:

* adapters listed in ``serve.adapters`` — named by the operator in the config, read where they are (links
  included: a run folder or a hub cache may well be made of symlinks);
* adapters under ``serve.adapter_dir`` — named by a *request*. Their folder is opened relative to
  ``adapter_dir`` and every file with ``O_NOFOLLOW``: a file that is a symbolic link (or anything but a
  regular file) is refused before it is opened, and a folder swapped for a link while it is read fails to
  open instead of being followed. The checked bytes are copied into a private temporary folder that PEFT
  loads, so PEFT never opens a path a request could redirect.

Errors name the adapter and the file, never a server path, because they are sent to clients.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tunesmith.deploy.adapter_config import CONFIG_FILE, WEIGHT_FILES, AdapterFileError, AdapterMeta, parse_adapter_config
from tunesmith.errors import TunesmithError

MAX_CONFIG_BYTES = 1_000_000
_CHUNK = 1 << 20


class NoAdapterFolder(TunesmithError):
    """No adapter folder of that name inside ``adapter_dir`` (or it leads outside it)."""


def read_listed_adapter(path: Path, name: str) -> AdapterMeta:
    """Check an operator-listed adapter folder (``serve.adapters``) where it is; links are the operator's choice."""
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise AdapterFileError(
            f"adapter '{name}': {path} is not a PEFT adapter folder (no {CONFIG_FILE})",
            hint="point at <run_dir>/adapter, written by `tunesmith train` with a lora/dora/qlora method",
        )
    meta = parse_adapter_config(cfg_file.read_bytes(), name)
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise AdapterFileError(f"adapter '{name}': {path} has no adapter weights ({WEIGHT_FILES[0]})")
    return meta


# -- adapters named by requests: confined to adapter_dir ------------------------------------------


def _open_folder(root: Path, name: str) -> int:
    """A descriptor of ``root/name``, which must be a folder directly inside ``root`` (a link to a sibling is fine)."""
    resolved = (root / name).resolve()
    if resolved.parent != root:
        raise NoAdapterFolder(name)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:  # the resolved folder is opened without following links: one swapped in since resolve() is refused
        return os.open(resolved.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError:
        raise NoAdapterFolder(name) from None
    finally:
        os.close(root_fd)


def _regular_file(dir_fd: int, fname: str, name: str) -> bool:
    """Whether ``fname`` exists in the folder; refuses (without opening it) anything but a regular file."""
    try:
        st = os.stat(fname, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise AdapterFileError(f"adapter '{name}': {fname} is a symbolic link; files under serve.adapter_dir must "
                               "be regular files inside it (links are never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise AdapterFileError(f"adapter '{name}': {fname} is not a regular file")
    return True


def _copy_file(dir_fd: int, fname: str, dest: Path, name: str, max_bytes: int | None = None) -> bytes | None:
    """Copy ``fname`` (opened with O_NOFOLLOW) to ``dest``; returns its bytes when ``max_bytes`` is given."""
    try:  # O_NONBLOCK: a FIFO swapped in after the check cannot block the open
        fd = os.open(fname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:
        raise AdapterFileError(f"adapter '{name}': {fname} cannot be opened ({os.strerror(e.errno)})") from None
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise AdapterFileError(f"adapter '{name}': {fname} is not a regular file")
        if max_bytes is not None:
            data = src.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise AdapterFileError(f"adapter '{name}': {fname} is larger than {max_bytes} bytes")
            dest.write_bytes(data)
            return data
        with open(dest, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
    return None


def copy_confined_adapter(root: Path, name: str, dest: Path) -> AdapterMeta:
    """Copy the adapter ``root/name`` into the folder ``dest``, following no link, and check its config.

    ``root`` must be resolved. Raises NoAdapterFolder when there is no such adapter folder inside ``root``
    (absent, not a folder, leading outside, no config), AdapterFileError when it exists but cannot be used.
    """
    dir_fd = _open_folder(root, name)
    try:
        if not _regular_file(dir_fd, CONFIG_FILE, name):
            raise NoAdapterFolder(name)
        weights = next((f for f in WEIGHT_FILES if _regular_file(dir_fd, f, name)), None)
        if weights is None:
            raise AdapterFileError(f"adapter '{name}' has no adapter weights ({WEIGHT_FILES[0]})")
        raw = _copy_file(dir_fd, CONFIG_FILE, dest / CONFIG_FILE, name, max_bytes=MAX_CONFIG_BYTES)
        meta = parse_adapter_config(raw, name)
        _copy_file(dir_fd, weights, dest / weights, name)
        return meta
    finally:
        os.close(dir_fd)
