"""API keys (stored only as sha256 digests) and per-key concurrency limits."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path

from tunesmith.errors import ConfigError

KEY_PREFIX = "tsk-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random API key and the digest to store."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def load_key_hashes(hashes: list[str], keys_file: str | Path | None) -> set[str]:
    out = set(hashes)
    if keys_file:
        p = Path(keys_file)
        if not p.is_file():
            raise ConfigError(f"serve.api_keys_file {p} does not exist", hint="create one with `tunesmith serve --new-key`")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
                raise ConfigError(
                    f"{p} line {n} is not a sha256 hex digest",
                    hint="store digests, never keys: `tunesmith serve --new-key` prints both",
                )
            out.add(line)
    return out


class KeyChecker:
    """Constant-time check of a bearer token against the stored digests."""

    def __init__(self, digests: set[str]):
        self._digests = list(digests)

    def check(self, authorization: str | None) -> str | None:
        """The key's digest if the ``Authorization`` header carries a valid key, else None."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:  # auth schemes are case-insensitive (RFC 7235 section 2.1)
            return None
        digest = hash_key(token)
        ok = False
        for d in self._digests:  # compare with every digest: timing does not reveal which one matched
            ok |= hmac.compare_digest(d, digest)
        return digest if ok else None


class ConcurrencyLimiter:
    """At most ``limit`` requests in flight per key."""

    def __init__(self, limit: int):
        self.limit = limit
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        with self._lock:
            n = self._in_flight.get(key, 0)
            if n >= self.limit:
                return False
            self._in_flight[key] = n + 1
            return True

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._in_flight.get(key, 0)

    def release(self, key: str) -> None:
        with self._lock:
            n = self._in_flight.get(key, 1) - 1
            if n <= 0:
                self._in_flight.pop(key, None)
            else:
                self._in_flight[key] = n
