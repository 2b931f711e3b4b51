"""Frozen values the replica hands out: statuses, changes, entity views and observations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from ..errors import InvalidValue

__all__ = ["Change", "EntityView", "Observation", "RecordChange", "Status"]


class Status(StrEnum):
    """The derived existence of an entity on one replica."""

    EXISTS = "exists"
    ABSENT = "absent"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """The status of ``entity`` went from ``before`` to ``after`` on this replica."""

    entity: str
    before: Status
    after: Status
    reason: str

    def __post_init__(self) -> None:
        if self.before == self.after:
            raise ValueError(f"a Change of {self.entity!r} must change its status")

    def to_json(self) -> dict[str, str]:
        return {
            "entity": self.entity,
            "before": self.before.value,
            "after": self.after.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordChange:
    """A replicated record changed: an entity record, or one observer's observation."""

    kind: Literal["entity", "observation"]
    id: str
    observer: str | None = None
    local: bool = False

    def __post_init__(self) -> None:
        if (self.kind == "observation") != (self.observer is not None):
            raise ValueError("an observation change names its observer, an entity change not")


#: Ints a time or ttl may be: their floats and ``repr`` are exact and quick.
_INT_LIMIT = 2**63


def _finite(number: object) -> bool:
    """Whether ``number`` is a finite float, or an int within :data:`_INT_LIMIT`."""
    kind = type(number)
    if kind is float:
        return math.isfinite(number)  # type: ignore[arg-type]
    return kind is int and -_INT_LIMIT < number < _INT_LIMIT  # type: ignore[operator]


def _show(number: object) -> str:
    if type(number) is int and not -_INT_LIMIT < number < _INT_LIMIT:
        return "an int beyond +-2**63"
    return repr(number)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What ``observer`` saw of ``subject`` at time ``at`` (seconds, the observer's clock)."""

    observer: str
    subject: str
    ok: bool
    value: Any
    at: float
    ttl: float | None = None

    def __post_init__(self) -> None:
        if type(self.ok) is not bool:
            raise InvalidValue(f"observation ok must be a bool, not {type(self.ok).__name__}")
        if not _finite(self.at):
            raise InvalidValue(f"observation time must be a finite number, not {_show(self.at)}")
        if self.ttl is not None and (not _finite(self.ttl) or self.ttl < 0):
            raise InvalidValue(
                f"observation ttl must be a non-negative number, not {_show(self.ttl)}"
            )

    def fresh(self, now: float, within: float | None = None) -> bool:
        """Whether this observation still counts at ``now`` (within ``within`` and its ttl)."""
        age = now - self.at
        if self.ttl is not None and age > self.ttl:
            return False
        return within is None or age <= within

    def to_json(self) -> dict[str, Any]:
        return {
            "observer": self.observer,
            "subject": self.subject,
            "ok": self.ok,
            "value": self.value,
            "at": self.at,
            "ttl": self.ttl,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityView:
    """One entity as this replica sees it: its merged record and its derived status."""

    id: str
    kind: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    requires: Any = None
    owner: str | None = None
    status: Status = Status.ABSENT
    reason: str = ""
    #: the probe object as written (see :mod:`.probes`), ``None`` if none or unreadable
    probe: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "kind": self.kind,
            "attrs": self.attrs,
            "requires": self.requires,
            "owner": self.owner,
            "status": self.status.value,
            "reason": self.reason,
        }
        # Only entities with a probe show one: the others read as they always have.
        if self.probe is not None:
            data["probe"] = self.probe
        return data
