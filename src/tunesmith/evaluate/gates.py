"""CI gates: ``key=value`` pairs checked against metrics.json; a gate is missed when the metric is lower.

Keys are dotted paths into metrics.json (``tuned.accuracy``, ``adversarial.tuned.pass_rate``,
``regression.tuned.ok``); a model name containing dots (``gpt-4.1``) is matched whole.
``parity`` alone (no value) is ``parity.passed=1``: the parity certificate's verdict must be pass
(metrics.json ``parity.passed`` is 1 for pass, 0 for fail or inconclusive).
"""

from __future__ import annotations

from typing import Any

from tunesmith.errors import ConfigError, TunesmithError


class GateFailed(TunesmithError):
    """One or more --fail-under gates were missed (exit status 1)."""


def parse_gates(items: list[str]) -> dict[str, float]:
    gates: dict[str, float] = {}
    for item in items:
        if item.strip() == "parity":
            gates["parity.passed"] = 1.0
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--fail-under '{item}' is not of the form key=value",
                              hint="e.g. --fail-under tuned.accuracy=0.8, or --fail-under parity (the parity verdict "
                                   "must be pass)")
        try:
            gates[key.strip()] = float(raw)
        except ValueError:
            raise ConfigError(f"--fail-under '{item}': '{raw}' is not a number") from None
    return gates


def lookup(metrics: dict[str, Any], key: str) -> Any:
    """Value at dotted ``key``; at each level the longest key that matches wins. KeyError if absent."""
    node: Any = metrics
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, dict):
            raise KeyError(key)
        for j in range(len(parts), i, -1):
            cand = ".".join(parts[i:j])
            if cand in node:
                node, i = node[cand], j
                break
        else:
            raise KeyError(key)
    return node


def check_gates(metrics: dict[str, Any], gates: dict[str, float]) -> list[dict[str, Any]]:
    """One row per gate: key, threshold, value, passed. A missing or non-numeric metric fails its gate."""
    rows = []
    for key, threshold in gates.items():
        try:
            value = lookup(metrics, key)
        except KeyError:
            value = None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= threshold
        if isinstance(value, bool):
            ok = float(value) >= threshold
        rows.append({"key": key, "threshold": threshold, "value": value, "passed": bool(ok)})
    return rows
