"""What a simulation measures: state agreement, status agreement, flips and traffic.

Theory of operation
-------------------
Checking agreement by comparing every replica with every other after every event would
cost O(N) per event and O(N^2) per round. :class:`AgreementTracker` keeps counts instead,
updated in O(1) (or O(changes)) whenever one replica's state or one status changes:

* **State.** Each replica's decoded state vector and the sum of its clocks; ``union`` is
  the element-wise maximum over the running replicas. A replica's vector never exceeds the
  union, so it *equals* the union exactly when the sums are equal: ``at_union`` counts
  those replicas, and all replicas hold identical state when it equals N. Only a local
  write grows the union (a merge cannot bring what no replica has), and only then is
  ``at_union`` recounted. A crash or restart recomputes the union from scratch.
* **Statuses.** For every entity, how many running replicas hold each status; the entity
  is *agreed* when one status has them all, and ``agreed`` counts those entities.
* **Changes.** Each change is the writer's Yrs client and clock right after its write; a
  replica holds it once its state vector reaches that clock. A bitmask per replica and a
  count per change give the first time every replica held it.

The event loop calls :meth:`AgreementTracker.settled` after the last event of each instant.
A transition into agreement records its time and a snapshot of the traffic so far; an
agreement that is lost again (a crash) is forgotten, so the recorded time is when the
agreement that lasted until the end began.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..core.views import Change, Status
from .network import Traffic

__all__ = ["AgreementTracker", "Distribution", "Sample", "percentile"]

StateVector = dict[int, int]
_STATUSES = (Status.EXISTS, Status.ABSENT, Status.UNDETERMINED)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """Mean, p50, p99 and max of some samples (``None`` without samples)."""

    count: int
    mean: float | None
    p50: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        samples = list(values)
        if not samples:
            return cls(count=0, mean=None, p50=None, p99=None, max=None)
        return cls(
            count=len(samples),
            mean=sum(samples) / len(samples),
            p50=percentile(samples, 0.5),
            p99=percentile(samples, 0.99),
            max=max(samples),
        )

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p99": self.p99,
            "max": self.max,
        }


@dataclass(slots=True)
class _ChangeTrack:
    client: int
    clock: int
    made: float
    holders: int = 0
    done: float | None = None


@dataclass(slots=True)
class _Agreement:
    agreed: bool = False
    since: float | None = None
    traffic: Traffic | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """Agreement at one instant: the fractions of replicas holding the full state, of
    entities whose status every replica agrees on, and of (replica, change) pairs where
    the replica holds the change."""

    time: float
    state: float
    status: float
    delivered: float


class AgreementTracker:
    """Incremental agreement counts over ``size`` replicas and the given entities.

    Args:
        size: Number of replicas.
        entities: Every entity the workload names.
        initial: The statuses every replica starts with (they start identical).
        state: The state vector every replica starts with.
        traffic: The network's running totals, snapshotted at agreement.
        clock: The simulated clock (flips are timestamped with it).
        trace: Record a :class:`Sample` whenever agreement changes.
    """

    def __init__(
        self,
        size: int,
        entities: Sequence[str],
        initial: dict[str, Status],
        state: StateVector,
        traffic: Traffic,
        clock: Callable[[], float],
        *,
        trace: bool = False,
    ) -> None:
        self.size = size
        self.entities = list(entities)
        self._traffic = traffic
        self._clock = clock
        self.up = [True] * size
        self.down = 0
        self.svs: list[StateVector] = [dict(state) for _ in range(size)]
        self._totals = [sum(state.values())] * size
        self.union: StateVector = dict(state)
        self._union_total = sum(state.values())
        self.at_union = size
        self._known = set(self.entities)
        self.statuses: list[dict[str, Status]] = [
            {entity: initial.get(entity, Status.ABSENT) for entity in self.entities}
            for _ in range(size)
        ]
        self._counts: dict[str, dict[Status, int]] = {
            entity: {status: 0 for status in _STATUSES} for entity in self.entities
        }
        for entity in self.entities:
            self._counts[entity][initial.get(entity, Status.ABSENT)] = size
        self.agreed = len(self.entities)
        self.changes: list[_ChangeTrack] = []
        self._held: list[int] = [0] * size
        self._ready: list[int] = []
        #: flips are recorded from this time on (the workload's start)
        self.counting_from: float | None = None
        #: (time, replica) of every restart (its statuses are derived afresh, without events)
        self.restarts: list[tuple[float, int]] = []
        #: (time, replica, entity) of every status change while counting
        self.flips: list[tuple[float, int, str]] = []
        self.state = _Agreement(agreed=True, since=0.0)
        self.status = _Agreement(agreed=True, since=0.0)
        self.trace = trace
        self.series: list[Sample] = []
        self._delivered = 0

    # -- state -----------------------------------------------------------------------------

    def state_changed(self, node: int, sv: StateVector) -> None:
        """Replica ``node`` now holds state vector ``sv``."""
        total = sum(sv.values())
        old = self._totals[node]
        self.svs[node] = sv
        self._totals[node] = total
        if not self.up[node]:
            return
        grew = False
        union = self.union
        for client, clock in sv.items():
            if clock > union.get(client, 0):
                union[client] = clock
                grew = True
        if grew:
            self._union_total = sum(union.values())
            self._recount()
        else:
            target = self._union_total
            self.at_union += (total == target) - (old == target)
        self._update_changes(node, sv)

    def _recount(self) -> None:
        target = self._union_total
        self.at_union = sum(
            1 for node in range(self.size) if self.up[node] and self._totals[node] == target
        )

    def _rebuild_union(self) -> None:
        union: StateVector = {}
        for node in range(self.size):
            if self.up[node]:
                for client, clock in self.svs[node].items():
                    if clock > union.get(client, 0):
                        union[client] = clock
        self.union = union
        self._union_total = sum(union.values())
        self._recount()

    # -- changes ---------------------------------------------------------------------------

    def track_change(self, client: int, clock: int, made: float) -> None:
        """A change was made; it is held wherever the vector reaches ``clock`` for ``client``."""
        self.changes.append(_ChangeTrack(client=client, clock=clock, made=made))
        for node in range(self.size):
            if self.up[node]:
                self._update_changes(node, self.svs[node], only=len(self.changes) - 1)

    def _update_changes(self, node: int, sv: StateVector, only: int | None = None) -> None:
        held = self._held[node]
        indices = range(len(self.changes)) if only is None else (only,)
        for index in indices:
            track = self.changes[index]
            bit = 1 << index
            has = sv.get(track.client, 0) >= track.clock
            if has and not held & bit:
                held |= bit
                track.holders += 1
                self._delivered += 1
                if track.holders == self.size and track.done is None:
                    self._ready.append(index)
            elif not has and held & bit:
                held &= ~bit
                track.holders -= 1
                self._delivered -= 1
        self._held[node] = held

    # -- statuses --------------------------------------------------------------------------

    def status_changed(self, node: int, change: Change) -> None:
        """Replica ``node`` reported a status change."""
        entity = change.entity
        if entity not in self._known or not self.up[node]:
            return
        statuses = self.statuses[node]
        before = statuses[entity]
        after = change.after
        if before == after:
            return
        counts = self._counts[entity]
        was = max(counts.values()) == self.size - self.down
        counts[before] -= 1
        counts[after] += 1
        statuses[entity] = after
        now = max(counts.values()) == self.size - self.down
        self.agreed += now - was
        if self.counting_from is not None:
            self.flips.append((self._clock(), node, entity))

    def _recount_statuses(self) -> None:
        running = self.size - self.down
        self.agreed = sum(
            1 for entity in self.entities if max(self._counts[entity].values()) == running
        )

    # -- crashes ---------------------------------------------------------------------------

    def node_down(self, node: int) -> None:
        if not self.up[node]:
            return
        self.up[node] = False
        self.down += 1
        for entity, status in self.statuses[node].items():
            self._counts[entity][status] -= 1
        self._recount_statuses()
        self._rebuild_union()

    def node_up(self, node: int, sv: StateVector, statuses: dict[str, Status]) -> None:
        if self.up[node]:
            return
        self.up[node] = True
        self.down -= 1
        self.restarts.append((self._clock(), node))
        self.svs[node] = sv
        self._totals[node] = sum(sv.values())
        self.statuses[node] = {
            entity: statuses.get(entity, Status.ABSENT) for entity in self.entities
        }
        for entity, status in self.statuses[node].items():
            self._counts[entity][status] += 1
        self._recount_statuses()
        old = self._held[node]
        for index, track in enumerate(self.changes):
            if old >> index & 1:
                track.holders -= 1
                self._delivered -= 1
        self._held[node] = 0
        self._update_changes(node, sv)
        self._rebuild_union()

    # -- instants --------------------------------------------------------------------------

    def settled(self, now: float) -> None:
        """All events of instant ``now`` ran: note transitions into or out of agreement."""
        full = self.down == 0
        self._transition(self.state, full and self.at_union == self.size, now)
        self._transition(self.status, full and self.agreed == len(self.entities), now)
        if full and self._ready:
            for index in self._ready:
                track = self.changes[index]
                if track.done is None and track.holders == self.size:
                    track.done = now
            self._ready.clear()
        if self.trace:
            self._sample(now)

    def _transition(self, agreement: _Agreement, agreed: bool, now: float) -> None:
        if agreed and not agreement.agreed:
            agreement.agreed = True
            agreement.since = now
            agreement.traffic = self._traffic.snapshot()
        elif not agreed and agreement.agreed:
            agreement.agreed = False
            agreement.since = None
            agreement.traffic = None

    def _sample(self, now: float) -> None:
        running = self.down == 0
        pairs = self.size * len(self.changes)
        sample = Sample(
            time=now,
            state=self.at_union / self.size,
            status=self.agreed / max(1, len(self.entities)) if running else 0.0,
            delivered=self._delivered / pairs if pairs else 1.0,
        )
        last = self.series[-1] if self.series else None
        if last is None or (last.state, last.status, last.delivered) != (
            sample.state,
            sample.status,
            sample.delivered,
        ):
            self.series.append(sample)

    # -- results ---------------------------------------------------------------------------

    def flips_until(self, until: float | None) -> tuple[int, int]:
        """Status changes up to ``until``: (total, most for one replica and entity)."""
        per: dict[tuple[int, str], int] = {}
        total = 0
        for when, node, entity in self.flips:
            if until is not None and when > until:
                continue
            total += 1
            key = (node, entity)
            per[key] = per.get(key, 0) + 1
        return total, max(per.values(), default=0)

    def final_view_times(self, start: float, until: float) -> list[float]:
        """When each replica's statuses last changed up to ``until`` (at least ``start``).

        If every replica agrees on every status at ``until``, each replica has held those
        final statuses since its time in this list: sorted, it is the curve of status
        agreement over time, next to the state agreement of :attr:`series`.
        """
        last = [start] * self.size
        for when, node, _ in self.flips:
            if when <= until and when > last[node]:
                last[node] = when
        for when, node in self.restarts:
            if when <= until and when > last[node]:
                last[node] = when
        return sorted(last)
