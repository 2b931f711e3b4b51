"""An explanation tree (``Replica.why()``, ``GET /v1/entities/{id}/why``) as indented text.

Instants in the tree are absolute, on the explaining replica's clock; the text gives them
relative to ``now`` ("stale for 12 s", "fresh, 3 s old, expires in 5 s"), by default the
``now`` the tree carries at its root. Fields the renderer does not know are left out, and
missing ones are skipped, so a tree from an older or newer node still renders.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["render_why"]

_INDENT: Final = "  "
#: Longest value shown for an attribute or a predicate's arguments.
_MAX_VALUE: Final = 60


def render_why(tree: Mapping[str, Any], *, now: float | None = None) -> str:
    """The explanation ``tree`` as indented plain text, one fact a line.

    Args:
        tree: A ``why()`` tree, as the library returns it or as read from the HTTP API.
        now: The instant that ages and deadlines are read against (seconds, the
            explaining replica's clock); by default the tree's own ``now``, else this
            machine's clock.

    Returns:
        The text, lines joined by newlines, with no trailing newline.
    """
    if now is None:
        given = tree.get("now")
        now = float(given) if isinstance(given, int | float) else time.time()
    lines: list[str] = []
    _entity(tree, now, 0, lines)
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """A span of time in a unit a person reads at a glance: ``3 s``, ``2.5 s``, ``4 min``."""
    seconds = abs(seconds)
    if not math.isfinite(seconds):
        return "ever" if seconds == math.inf else "? s"
    if seconds < 10:
        return f"{round(seconds, 1):g} s"
    if seconds < 120:
        return f"{round(seconds):d} s"
    if seconds < 7200:
        return f"{round(seconds / 60):d} min"
    if seconds < 172_800:
        return f"{round(seconds / 3600):d} h"
    return f"{round(seconds / 86_400):d} d"


def _entity(node: Mapping[str, Any], now: float, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    lines.append(f"{pad}{node.get('entity', '?')}: {node.get('status', '?')}")
    inner = pad + _INDENT
    if node.get("reason"):
        lines.append(f"{inner}reason: {node['reason']}")
    if node.get("cycle"):
        lines.append(f"{inner}in a cycle with: {', '.join(map(str, node['cycle']))}")
    for field, problem in (node.get("unreadable") or {}).items():
        lines.append(f"{inner}unreadable {field}: {problem}")
    if node.get("see"):
        lines.append(f"{inner}(see {node['see']})")
    if node.get("truncated"):
        lines.append(f"{inner}({node['truncated']})")
    chain = node.get("chain")
    if isinstance(chain, Mapping):
        links = chain.get("links", 0)
        lines.append(
            f"{inner}... {links} link{'' if links == 1 else 's'} down:"
            f" {chain.get('ends_at', '?')}: {chain.get('status', '?')}"
            f" ({chain.get('reason', '')})"
        )
    because = node.get("because")
    if isinstance(because, Mapping):
        _clause(because, now, depth + 1, lines)


def _clause(node: Mapping[str, Any], now: float, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    op = node.get("clause")
    value = node.get("value", "?")
    if op == "exists":
        lines.append(f"{pad}exists {node.get('entity', '?')}: {value}")
        dependency = node.get("dependency")
        if isinstance(dependency, Mapping):
            _entity(dependency, now, depth + 1, lines)
    elif op == "observed":
        _observed(node, now, depth, lines)
    elif op == "attr":
        lines.append(f"{pad}{_attr(node)}: {value}")
    elif op == "call":
        args = _short(node.get("args", {}))
        error = f" ({node['error']})" if node.get("error") else ""
        lines.append(f"{pad}predicate {node.get('name', '?')}({args}): {value}{error}")
    elif op in ("all", "any", "at_least", "not"):
        head = f"at least {node.get('need', '?')}" if op == "at_least" else op
        lines.append(f"{pad}{head}: {value}")
        for child in node.get("deciding", []):
            if isinstance(child, Mapping):
                _clause(child, now, depth + 1, lines)
        if node.get("more"):
            lines.append(f"{pad}{_INDENT}... and {node['more']} more {value}")
    else:
        lines.append(f"{pad}{op or 'clause'}: {value}")
    if node.get("truncated"):
        lines.append(f"{pad}{_INDENT}({node['truncated']})")
    if node.get("first_cause"):
        lines.append(f"{pad}{_INDENT}first cause: {node['first_cause']}")


def _observed(node: Mapping[str, Any], now: float, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    by = node.get("by", "*")
    observers = "" if by == "*" else f" by {by if isinstance(by, str) else ', '.join(by)}"
    within = node.get("within")
    window = f" within {within:g} s" if isinstance(within, int | float) else ""
    kind = "" if node.get("ok", True) else " not-ok"
    fresh = node.get("fresh", 0)
    lines.append(
        f"{pad}observed {node.get('subject', '?')}{observers}{window}: {node.get('value', '?')}"
        f" ({fresh} fresh{kind}, {node.get('quorum', 1)} needed)"
    )
    inner = pad + _INDENT
    for item in node.get("observations", []):
        if isinstance(item, Mapping):
            lines.append(f"{inner}{_observation(item, now)}")
    if node.get("unreadable"):
        lines.append(f"{inner}{node['unreadable']} unreadable")


def _observation(item: Mapping[str, Any], now: float) -> str:
    """One observation with its age and deadline relative to ``now``."""
    head = f"{item.get('observer', '?')}: "
    if "unreadable" in item:
        return head + f"unreadable ({item['unreadable']})"
    said = "ok" if item.get("ok") else "not ok"
    at = item.get("at")
    if "dated_in_future" in item and isinstance(at, int | float):
        usable = item.get("usable_from")
        text = f"{said}, dated {_duration(at - now)} ahead (beyond the skew allowed)"
        if isinstance(usable, int | float):
            text += f", counts in {_duration(usable - now)}" if usable > now else ", counts now"
        return head + text
    age = f"{_duration(now - at)} old" if isinstance(at, int | float) else "age unknown"
    if item.get("fresh"):
        expires = item.get("expires_at")
        if not isinstance(expires, int | float):
            return head + f"{said}, fresh, {age}"
        if expires > now:
            return head + f"{said}, fresh, {age}, expires in {_duration(expires - now)}"
        # Fresh when last evaluated; the replica has not re-evaluated since.
        return head + f"{said}, fresh when evaluated, {age}, expired {_duration(now - expires)} ago"
    since = item.get("stale_since")
    if isinstance(since, int | float):
        return head + f"{said}, stale for {_duration(now - since)}, {age}"
    return head + f"{said}, stale, {age}"


def _attr(node: Mapping[str, Any]) -> str:
    text = f"attr {node.get('entity', '?')}.{node.get('path', '?')} {node.get('op', '?')}"
    if "expected" in node:
        text += f" {_short(node['expected'])}"
    if "missing" in node:
        return text + f" ({node['missing']})"
    if "unreadable" in node:
        return text + f" (unreadable: {node['unreadable']})"
    if "actual" in node:
        return text + f" (actual {_short(node['actual'])})"
    return text


def _short(value: Any) -> str:
    """A value as compact JSON, cut to a line's worth."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."
