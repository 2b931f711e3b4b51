"""Probes: what an entity record asks replicas to check, and when each check is due.

Theory of operation. A probe is data in an entity's record (field ``p``), replicated like
``kind`` and ``requires``; it names one check -- ``{"http": URL, "expect": 200}``,
``{"tcp": "HOST:PORT"}`` or ``{"exec": [ARGV...]}`` -- how often to run it (``every``),
how long one run may take (``timeout``) and which replicas run it (``by``: ``"owner"``,
``"*"`` or a list of replica ids). A replica that runs a probe records the outcome as its
own observation of the entity, with a ttl of :data:`TTL_PERIODS` periods, so requirements
such as ``observed(ID, quorum=2)`` read probe results like any other evidence.

This module is sans I/O: :meth:`Probe.parse` validates (a caller's probe raises
:class:`InvalidProbe`; a peer's unreadable probe is simply not run), :class:`ProbeTargets`
decides which hosts may be contacted, and :class:`ProbeSchedule` decides, given ``now``,
which probes are due on this replica. The asyncio driver (:mod:`sphaera_crdt.net.probes`)
only carries the checks out.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from ..errors import InvalidIdentifier, InvalidProbe
from . import names

__all__ = [
    "DEFAULT_ALLOW",
    "KINDS",
    "TTL_PERIODS",
    "Probe",
    "ProbeSchedule",
    "ProbeTargets",
]

#: The checks a probe may name.
KINDS: Final = ("http", "tcp", "exec")
#: An outcome is evidence for this many periods (a missed run or two does not flip it).
TTL_PERIODS: Final = 3
#: Hosts probes may contact when a node names none.
DEFAULT_ALLOW: Final = ("localhost", "127.0.0.0/8", "::1/128")
_KEYS: Final = frozenset({*KINDS, "expect", "every", "timeout", "by"})
_MIN_EVERY: Final = 0.1
_MAX_EVERY: Final = 86_400.0
_MAX_TIMEOUT: Final = 300.0
_MAX_ARGV: Final = 64
_MAX_TEXT: Final = 2048
_HOST_NAME: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _number(data: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = data.get(key, default)
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidProbe(
            f"probe {key} must be a number of seconds in {low}-{high}, not {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One validated probe.

    Attributes:
        kind: ``http``, ``tcp`` or ``exec``.
        target: The URL, ``HOST:PORT``, or the argument vector.
        expect: The HTTP status that counts as healthy (http only).
        every: Seconds between runs.
        timeout: Seconds one run may take at most.
        by: ``"owner"``, ``"*"`` or the ids of the replicas that run it.
    """

    kind: str
    target: str | tuple[str, ...]
    expect: int = 200
    every: float = 10.0
    timeout: float = 5.0
    by: str | tuple[str, ...] = "owner"
    #: the host an http or tcp probe contacts ("" for exec)
    host: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidProbe(f"a probe is one of {', '.join(KINDS)}, not {self.kind!r}")

    @classmethod
    def parse(cls, data: Any) -> Probe:
        """A probe from its JSON object.

        Raises:
            InvalidProbe: Not an object of one check with valid options.
        """
        if type(data) is not dict:
            raise InvalidProbe(f"a probe must be an object, not {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in _KEYS)
        if unknown:
            raise InvalidProbe(f"unknown probe keys: {', '.join(unknown)}")
        kinds = [kind for kind in KINDS if kind in data]
        if len(kinds) != 1:
            raise InvalidProbe('a probe names exactly one of "http", "tcp" or "exec"')
        kind = kinds[0]
        every = _number(data, "every", 10.0, _MIN_EVERY, _MAX_EVERY)
        timeout = _number(data, "timeout", min(5.0, every), 0.01, _MAX_TIMEOUT)
        if timeout > every:
            raise InvalidProbe(f"probe timeout ({timeout}) must not exceed every ({every})")
        expect = data.get("expect", 200)
        if "expect" in data and kind != "http":
            raise InvalidProbe("probe expect is for http probes only")
        if type(expect) is not int or not 100 <= expect <= 599:
            raise InvalidProbe(f"probe expect must be an HTTP status 100-599, not {expect!r}")
        by = data.get("by", "owner")
        if type(by) is list:
            if not by or not all(type(item) is str and item for item in by):
                raise InvalidProbe("probe by must be a non-empty list of replica ids")
            for item in by:
                try:
                    names.check_replica_id(item)
                except InvalidIdentifier as exc:
                    raise InvalidProbe(f"probe by: {exc}") from None
            by = tuple(by)
        elif by not in ("owner", "*"):
            raise InvalidProbe(f'probe by must be "owner", "*" or a list of ids, not {by!r}')
        target, host = _target(kind, data[kind])
        return cls(
            kind=kind, target=target, expect=expect, every=every, timeout=timeout, by=by, host=host
        )

    @classmethod
    def read(cls, data: Any) -> Probe | None:
        """:meth:`parse` for a probe a peer wrote: ``None`` if it cannot be read."""
        try:
            return cls.parse(data)
        except InvalidProbe:
            return None

    @property
    def ttl(self) -> float:
        """Seconds an outcome counts as evidence."""
        return TTL_PERIODS * self.every

    def runs_on(self, replica_id: str, owner: str | None) -> bool:
        """Whether ``replica_id`` runs this probe of an entity declared by ``owner``."""
        if self.by == "*":
            return True
        if self.by == "owner":
            return owner == replica_id
        return replica_id in self.by


def _target(kind: str, value: Any) -> tuple[str | tuple[str, ...], str]:
    """The target of a ``kind`` probe and the host it contacts."""
    if kind == "exec":
        if (
            type(value) is not list
            or not 0 < len(value) <= _MAX_ARGV
            or not all(type(arg) is str and len(arg) <= _MAX_TEXT for arg in value)
            or not value[0]
        ):
            raise InvalidProbe("probe exec must be a non-empty list of strings (the argv)")
        return tuple(value), ""
    if type(value) is not str or not value or len(value) > _MAX_TEXT:
        raise InvalidProbe(f"probe {kind} must be a non-empty string")
    if kind == "http":
        try:
            url = urlsplit(value)
            host = url.hostname or ""
            url.port  # noqa: B018 -- raises on a malformed port
        except ValueError as exc:
            raise InvalidProbe(f"probe http {value!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not host:
            raise InvalidProbe(f"probe http must be an http(s) URL with a host, not {value!r}")
        return value, host
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise InvalidProbe(f'probe tcp must be "HOST:PORT", not {value!r}')
    return value, host.lower()


class ProbeTargets:
    """Which hosts http and tcp probes may contact: names given verbatim, or networks.

    A host name is never resolved to decide: it must be listed itself (resolving would
    let whoever controls a name's DNS choose what the node contacts).

    Raises:
        InvalidProbe: An entry that is neither a host name nor an address or network.
    """

    def __init__(self, allow: Iterable[str] = DEFAULT_ALLOW) -> None:
        self.names: set[str] = set()
        self.networks: list[Network] = []
        for entry in allow:
            text = entry.strip().lower().rstrip(".")
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if _HOST_NAME.fullmatch(text) is None:
                raise InvalidProbe(f"--probe-allow takes a host name or a CIDR, not {entry!r}")
            self.names.add(text)

    def allows(self, host: str) -> bool:
        """Whether a probe may contact ``host``."""
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


@dataclass(slots=True)
class ProbeSchedule:
    """When each probe this replica runs is next due (sans I/O: the caller passes ``now``).

    A probe seen for the first time is due at once; after a run starts it is next due
    ``every`` seconds later. A changed probe is due at once again.
    """

    replica_id: str
    #: entity -> (probe, the time it is next due)
    due_at: dict[str, tuple[Probe, float]] = field(default_factory=dict)

    def due(self, probes: Mapping[str, tuple[Probe, str | None]], now: float) -> list[str]:
        """The entities whose probe this replica should start now, soonest first.

        ``probes`` maps each entity that carries a readable probe to it and its owner;
        entities no longer listed are forgotten.
        """
        for entity in [entity for entity in self.due_at if entity not in probes]:
            del self.due_at[entity]
        ready = []
        for entity, (probe, owner) in probes.items():
            if not probe.runs_on(self.replica_id, owner):
                self.due_at.pop(entity, None)
                continue
            known = self.due_at.get(entity)
            if known is None or known[0] != probe:
                known = self.due_at[entity] = (probe, now)
            if known[1] <= now:
                ready.append((known[1], entity))
        return [entity for _, entity in sorted(ready)]

    def started(self, entity: str, now: float) -> None:
        """A run of ``entity``'s probe started at ``now``."""
        known = self.due_at.get(entity)
        if known is not None:
            self.due_at[entity] = (known[0], now + known[0].every)

    def next_due(self) -> float | None:
        """When the soonest probe is due (``None`` if there are none)."""
        return min((at for _, at in self.due_at.values()), default=None)
