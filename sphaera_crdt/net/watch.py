"""Following a node's status changes across dropped streams: :class:`Watch`.

Theory of operation: a watch reads ``GET /v1/events`` (filtered by entity, prefix or kind)
and remembers the last status it reported of each entity. The first stream's snapshot is
the starting point and reports nothing. When a stream drops (the node restarts, the
network breaks, the node cuts off a client that fell behind), the watch waits a bounded,
growing delay and connects again; the new stream's snapshot is compared with what the watch
remembers, and every entity whose status differs is reported as one change (marked
``resumed``), so a change made while disconnected is reported once, late, and never lost;
then the stream's changes follow. Changes are reported one at a time, in the order the node
made them.

The decisions (what a snapshot or a change reports, how long to wait before connecting
again) are made by :class:`Watch` without I/O; :meth:`.client.ApiClient.watch` (asyncio)
and :meth:`.blocking_client.BlockingApiClient.watch` carry them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..core.views import Status
from ..errors import RemoteError

__all__ = ["Backoff", "StatusChange", "Watch"]

#: Seconds before the first reconnection; each failure doubles it up to :data:`MAX_DELAY`.
FIRST_DELAY: Final = 0.1
MAX_DELAY: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """The status of ``entity`` went from ``before`` to ``after`` on the watched node.

    Attributes:
        entity: The entity's id.
        before: Its status before.
        after: Its status now.
        reason: Why it holds ``after`` (the node's one-line reason).
        at: When the node made the change (its clock, seconds since the epoch); for a
            resumed change, when the node took the snapshot that showed it.
        resumed: Whether the change happened while the stream was down (found by comparing
            a new stream's snapshot with the last known statuses).
    """

    entity: str
    before: Status
    after: Status
    reason: str
    at: float | None = None
    resumed: bool = False

    def __post_init__(self) -> None:
        if self.before == self.after:
            raise ValueError(f"a StatusChange of {self.entity!r} must change its status")

    def to_json(self) -> dict[str, Any]:
        """``{"entity", "before", "after", "reason", "at", "resumed"}``."""
        return {
            "entity": self.entity,
            "before": self.before.value,
            "after": self.after.value,
            "reason": self.reason,
            "at": self.at,
            "resumed": self.resumed,
        }


@dataclass(slots=True)
class Backoff:
    """Bounded, growing delays between reconnections; reset once a stream is open."""

    first: float = FIRST_DELAY
    limit: float = MAX_DELAY
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        """The seconds to wait before the next attempt."""
        current = self._next
        self._next = min(self.limit, max(self.first, current * 2))
        return current

    def reset(self) -> None:
        """A stream opened: the next drop is retried at once."""
        self._next = 0.0


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError as exc:
        raise RemoteError(f"the node sent an unknown status {value!r}") from exc


@dataclass(slots=True)
class Watch:
    """What a watch has reported so far, and what each event of a stream reports."""

    #: the last status reported (or found by the first snapshot) of each entity
    known: dict[str, Status] = field(default_factory=dict)
    started: bool = False
    #: the delays before connecting again, reset by every snapshot (a stream that opened)
    backoff: Backoff = field(default_factory=Backoff)

    def event(self, name: str, data: Any) -> list[StatusChange]:
        """The changes one event of a stream reports (``snapshot``, ``change``; others
        report nothing)."""
        if name == "snapshot":
            self.backoff.reset()
        if not isinstance(data, Mapping):
            return []
        if name == "snapshot":
            return self._snapshot(data)
        if name == "change":
            return self._change(data)
        return []

    def dropped(self) -> float:
        """The stream ended, broke or could not be opened: the seconds to wait before
        connecting again."""
        return self.backoff.delay()

    def _snapshot(self, data: Mapping[str, Any]) -> list[StatusChange]:
        entities = data.get("entities")
        if not isinstance(entities, Mapping):
            raise RemoteError("the node sent a snapshot without entities")
        at = _time(data.get("at"))
        now = {
            entity_id: (_status(entry.get("status")), str(entry.get("reason", "")))
            for entity_id, entry in entities.items()
            if isinstance(entry, Mapping)
        }
        changes: list[StatusChange] = []
        if self.started:
            for entity_id in sorted(self.known.keys() | now.keys()):
                before = self.known.get(entity_id, Status.ABSENT)
                after, reason = now.get(entity_id, (Status.ABSENT, "no longer listed"))
                if before != after:
                    changes.append(
                        StatusChange(
                            entity=entity_id,
                            before=before,
                            after=after,
                            reason=reason,
                            at=at,
                            resumed=True,
                        )
                    )
        self.started = True
        self.known = {entity_id: status for entity_id, (status, _) in now.items()}
        return changes

    def _change(self, data: Mapping[str, Any]) -> list[StatusChange]:
        entity_id = data.get("entity")
        if not isinstance(entity_id, str):
            raise RemoteError("the node sent a change without an entity")
        before, after = _status(data.get("before")), _status(data.get("after"))
        self.known[entity_id] = after
        if before == after:
            return []
        return [
            StatusChange(
                entity=entity_id,
                before=before,
                after=after,
                reason=str(data.get("reason", "")),
                at=_time(data.get("at")),
            )
        ]


def _time(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None
