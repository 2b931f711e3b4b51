"""An in-memory cluster of replicas for deterministic tests.

Theory of operation
-------------------
:class:`Cluster` holds :class:`~sphaera_crdt.Replica` objects and moves deltas between
them without sockets, threads or sleeping. Messages are queued *in flight* and delivered
when the test (or :meth:`Cluster.pump`) says so, which makes loss, duplication and
reordering real rather than simulated:

* :meth:`Cluster.sync` is one reliable, immediate transfer: ``dst`` merges what it lacks.
* :meth:`Cluster.send` queues a delta; :meth:`Cluster.deliver` merges a queued one (or any
  earlier message again: stale deltas are fine to re-deliver).
* :meth:`Cluster.pump` gossips like a node does. Each sender keeps an estimate of what
  every peer holds, pushes deltas computed against that estimate and then assumes the
  peer has them. A dropped message therefore leaves a real gap: the next delta lacks its
  predecessors and waits inside the receiver until the gap is repaired. Receivers send
  their state vectors back at the end of each round (those can be lost too), which
  corrects the estimates. Every random choice comes from one seeded
  :class:`random.Random`, so a run is repeatable.
* :meth:`Cluster.settle` delivers everything in flight, then syncs every pair reliably
  until all state vectors are equal. It always terminates: a few passes over all pairs
  suffice, and more means a replica is broken (:class:`ConvergenceError`).

The cluster's own clock (used when replicas are created from ids) is a number that only
:meth:`Cluster.advance` moves, so time is deterministic as well.

Example::

    from sphaera_crdt.testing import Cluster

    cluster = Cluster(["a", "b", "c"], seed=7)
    cluster["a"].declare("db", attrs={"port": 5432})
    cluster.pump(drop=0.3, duplicate=0.2, reorder=True, rounds=5)
    cluster.settle()
    cluster.assert_converged()
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from .core import Change, Replica
from .core.lib0 import decode_state_vector, encode_state_vector
from .errors import ConvergenceError
from .store.memory import MemoryStore

__all__ = ["Cluster", "ConvergenceError", "MemoryStore", "Message", "PumpReport"]

#: Default bound on the rounds ``pump(rounds=None)`` may take before giving up.
MAX_ROUNDS: Final = 10_000

StateVector = dict[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A delta on its way from ``src`` to ``dst``.

    Attributes:
        seq: Position in the order messages were created (unique within a cluster).
        src: Id of the sending replica.
        dst: Id of the receiving replica.
        update: The Yrs v1 update to merge.
    """

    seq: int
    src: str
    dst: str
    update: bytes

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError(f"message seq must be non-negative, not {self.seq}")
        if type(self.update) is not bytes:
            raise TypeError(f"a message carries bytes, not {type(self.update).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpReport:
    """What one call of :meth:`Cluster.pump` did.

    Attributes:
        rounds: Gossip rounds run.
        sent: Delta messages created (duplicates excluded).
        delivered: Messages merged by their receiver (duplicates included).
        dropped: Delta messages lost.
        duplicated: Extra copies put in flight.
        in_flight: Messages still queued when the call returned.
        converged: Whether every state vector was equal when the call returned.
    """

    rounds: int
    sent: int
    delivered: int
    dropped: int
    duplicated: int
    in_flight: int
    converged: bool

    def __post_init__(self) -> None:
        counts = (self.rounds, self.sent, self.delivered, self.dropped, self.duplicated)
        if min(counts) < 0 or self.in_flight < 0:
            raise ValueError("pump counters are never negative")


@dataclass(slots=True)
class _Counters:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0


class Cluster:
    """Replicas exchanging deltas in memory, deterministically.

    Args:
        replicas: Replica ids (a replica is created for each, on the cluster's clock) or
            ready :class:`~sphaera_crdt.Replica` objects (they keep their own clocks).
        clock: The clock of the replicas created from ids; by default the cluster's own
            clock, which starts at ``start`` and moves only with :meth:`advance`.
        seed: Seed of the random choices of :meth:`pump`.
        start: Initial time of the cluster's own clock, in seconds.
        max_rounds: How many rounds ``pump(rounds=None)`` may take before it gives up.

    Raises:
        ValueError: Two replicas share an id, or there are none.
    """

    def __init__(
        self,
        replicas: Iterable[str | Replica],
        *,
        clock: Callable[[], float] | None = None,
        seed: int = 0,
        start: float = 0.0,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be positive, not {max_rounds}")
        self.time = start
        self.max_rounds = max_rounds
        self._clock: Callable[[], float] = clock if clock is not None else self._now
        self._random = random.Random(seed)
        self._replicas: dict[str, Replica] = {}
        self._in_flight: list[Message] = []
        self._delivered: list[Message] = []
        self._seq = 0
        #: (src, dst) -> what src believes dst holds
        self._estimates: dict[tuple[str, str], StateVector] = {}
        for item in replicas:
            self.add(item)
        if not self._replicas:
            raise ValueError("a cluster needs at least one replica")

    def _now(self) -> float:
        return self.time

    # -- membership ------------------------------------------------------------------------

    def add(self, replica: str | Replica) -> Replica:
        """Add a replica (or create one on the cluster's clock) and return it.

        Raises:
            ValueError: A replica with that id is already in the cluster.
        """
        if isinstance(replica, str):
            replica = Replica(replica, clock=self._clock)
        if replica.id in self._replicas:
            raise ValueError(f"replica {replica.id!r} is already in the cluster")
        self._replicas[replica.id] = replica
        return replica

    def __getitem__(self, replica_id: str) -> Replica:
        return self._replicas[replica_id]

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    @property
    def ids(self) -> list[str]:
        """Replica ids, in the order they joined."""
        return list(self._replicas)

    @property
    def in_flight(self) -> tuple[Message, ...]:
        """Messages sent and not yet delivered or dropped, oldest first."""
        return tuple(self._in_flight)

    @property
    def delivered(self) -> tuple[Message, ...]:
        """Every message delivered so far, in delivery order (duplicates appear twice)."""
        return tuple(self._delivered)

    def advance(self, seconds: float) -> float:
        """Move the cluster's own clock forward by ``seconds``; return the new time."""
        self.time += seconds
        return self.time

    # -- moving deltas ---------------------------------------------------------------------

    def sync(self, src: str, dst: str) -> list[Change]:
        """Reliably and at once, make ``dst`` merge what it lacks of ``src``."""
        source, target = self._replicas[src], self._replicas[dst]
        return target.merge(source.delta(target.state_vector()))

    def sync_all(self) -> list[Change]:
        """One pass of :meth:`sync` over every ordered pair of distinct replicas."""
        changes: list[Change] = []
        for src in self._replicas:
            for dst in self._replicas:
                if src != dst:
                    changes.extend(self.sync(src, dst))
        return changes

    def send(self, src: str, dst: str, *, since: bytes | None = None) -> Message:
        """Queue a delta of ``src`` for ``dst`` and return it.

        Args:
            src: Sender id.
            dst: Receiver id.
            since: State vector the delta is computed against; by default ``dst``'s
                current one. ``b"\\x00"`` (the empty state vector) sends the full state.

        Raises:
            KeyError: No replica has that id.
            InvalidUpdate: ``since`` is not a well-formed state vector.
        """
        if dst not in self._replicas:
            raise KeyError(dst)
        if since is None:
            since = self._replicas[dst].state_vector()
        message = self._message(src, dst, self._replicas[src].delta(since))
        self._in_flight.append(message)
        return message

    def deliver(self, message: Message | None = None) -> list[Change]:
        """Merge a message at its receiver; return the status changes it caused.

        Args:
            message: The message to deliver. It is removed from the queue if it is there;
                one delivered before is merged again (a duplicate or stale delta). By
                default the oldest message in flight.

        Raises:
            LookupError: No message was given and none is in flight.
        """
        if message is None:
            if not self._in_flight:
                raise LookupError("no message is in flight")
            message = self._in_flight.pop(0)
        else:
            for index, queued in enumerate(self._in_flight):
                if queued is message:
                    del self._in_flight[index]
                    break
        return self._merge(message)

    def pump(
        self,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: bool = False,
        rounds: int | None = None,
    ) -> PumpReport:
        """Gossip between every pair of replicas over an unreliable, in-memory network.

        Each round, every sender pushes a delta against what it believes the receiver
        holds (lost with probability ``drop``, put in flight twice with probability
        ``duplicate``) and assumes it arrived. Then messages in flight are delivered: all
        of them oldest first, or with ``reorder`` a random subset in random order while
        the rest wait for a later round. Finally every receiver tells every sender its
        state vector (lost with probability ``drop``), which corrects the estimates.

        Args:
            drop: Probability that a message (state vector or delta) is lost.
            duplicate: Probability that a delta is delivered twice.
            reorder: Deliver in random order and hold some messages back.
            rounds: Rounds to run; ``None`` runs until every state vector is equal and
                nothing is in flight.

        Raises:
            ValueError: A probability outside ``[0, 1]``, ``drop == 1`` with
                ``rounds=None``, or negative ``rounds``.
            ConvergenceError: ``rounds=None`` and the replicas did not converge within
                ``max_rounds`` rounds.
        """
        for name, value in (("drop", drop), ("duplicate", duplicate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability, not {value!r}")
        if rounds is not None and rounds < 0:
            raise ValueError(f"rounds must be non-negative, not {rounds}")
        if rounds is None and drop >= 1.0:
            raise ValueError("with drop=1.0 nothing arrives: give a number of rounds")
        counters = _Counters()
        done = 0
        limit = self.max_rounds if rounds is None else rounds
        while done < limit:
            if rounds is None and not self._in_flight and self.converged():
                break
            self._round(counters, drop=drop, duplicate=duplicate, reorder=reorder)
            done += 1
        converged = self.converged()
        if rounds is None and not (converged and not self._in_flight):
            raise ConvergenceError(f"no convergence after {self.max_rounds} rounds")
        return PumpReport(
            rounds=done,
            sent=counters.sent,
            delivered=counters.delivered,
            dropped=counters.dropped,
            duplicated=counters.duplicated,
            in_flight=len(self._in_flight),
            converged=converged,
        )

    def settle(self) -> list[Change]:
        """Deliver everything in flight, then sync reliably until all state vectors agree.

        Returns:
            The status changes the deliveries caused, in order.

        Raises:
            ConvergenceError: State vectors still differ after more passes over all pairs
                than a working cluster ever needs.
        """
        changes: list[Change] = []
        while self._in_flight:
            changes.extend(self.deliver())
        # One pass is enough: the last replica in the order hears from each earlier one
        # after that one heard from all before it, then sends everything to everyone.
        # The further passes are slack; needing them would already be suspicious.
        for _ in range(3):
            if self.converged():
                break
            changes.extend(self.sync_all())
        if not self.converged():
            raise ConvergenceError(
                "state vectors still differ after reliable syncs: " + self._describe_vectors()
            )
        for replica in self._replicas.values():
            self._refresh_estimates(replica.id)
        return changes

    # -- checking --------------------------------------------------------------------------

    def state_vectors(self) -> dict[str, StateVector]:
        """Every replica's state vector, decoded to ``{client id: clock}``."""
        return {
            replica_id: decode_state_vector(replica.state_vector())
            for replica_id, replica in self._replicas.items()
        }

    def converged(self) -> bool:
        """Whether every replica holds the same state vector (nothing left to send).

        State vectors are compared decoded, by content rather than by their bytes.
        """
        vectors = list(self.state_vectors().values())
        return all(vector == vectors[0] for vector in vectors[1:])

    def assert_converged(self) -> None:
        """Check that every replica has the same state vector, records and observations.

        Raises:
            ConvergenceError: Naming the first replica that differs from the first one.
        """
        if not self.converged():
            raise ConvergenceError("state vectors differ: " + self._describe_vectors())
        replicas = list(self._replicas.values())
        first = replicas[0]
        entities, observations = first.entities(), first.observations()
        for other in replicas[1:]:
            theirs = other.entities()
            if theirs != entities:
                raise ConvergenceError(
                    f"entities of {first.id!r} and {other.id!r} differ: "
                    + _describe_difference(entities, theirs)
                )
            if other.observations() != observations:
                raise ConvergenceError(
                    f"observations of {first.id!r} and {other.id!r} differ: "
                    f"{observations!r} != {other.observations()!r}"
                )

    # -- internals -------------------------------------------------------------------------

    def _message(self, src: str, dst: str, update: bytes) -> Message:
        message = Message(seq=self._seq, src=src, dst=dst, update=update)
        self._seq += 1
        return message

    def _round(self, counters: _Counters, *, drop: float, duplicate: float, reorder: bool) -> None:
        rng = self._random
        vectors = self.state_vectors()
        pairs = [(src, dst) for src in self._replicas for dst in self._replicas if src != dst]
        for src, dst in pairs:
            estimate = self._estimates.setdefault((src, dst), {})
            if _covers(estimate, vectors[src]):
                continue
            update = self._replicas[src].delta(encode_state_vector(estimate))
            # The sender assumes the delta arrives; if it is lost, the next delta
            # is computed against this optimistic estimate and lacks predecessors.
            self._estimates[(src, dst)] = _join(estimate, vectors[src])
            message = self._message(src, dst, update)
            counters.sent += 1
            if rng.random() < drop:
                counters.dropped += 1
                continue
            self._in_flight.append(message)
            if rng.random() < duplicate:
                counters.duplicated += 1
                self._in_flight.append(message)
        if reorder:
            rng.shuffle(self._in_flight)
            keep = rng.randrange(len(self._in_flight) + 1) if self._in_flight else 0
            batch, self._in_flight = self._in_flight[keep:], self._in_flight[:keep]
        else:
            batch, self._in_flight = self._in_flight, []
        for message in batch:
            self._merge(message)
            counters.delivered += 1
        # Every receiver answers with its state vector, which corrects the senders'
        # estimates for the next round (unless the answer is lost too).
        vectors = self.state_vectors()
        for src, dst in pairs:
            if rng.random() >= drop:
                self._estimates[(src, dst)] = vectors[dst]

    def _merge(self, message: Message) -> list[Change]:
        self._delivered.append(message)
        return self._replicas[message.dst].merge(message.update)

    def _refresh_estimates(self, replica_id: str) -> None:
        vector = decode_state_vector(self._replicas[replica_id].state_vector())
        for other in self._replicas:
            if other != replica_id:
                self._estimates[(other, replica_id)] = dict(vector)

    def _describe_vectors(self) -> str:
        return "; ".join(
            f"{replica_id}={vector}" for replica_id, vector in self.state_vectors().items()
        )


def _covers(vector: Mapping[int, int], other: Mapping[int, int]) -> bool:
    """Whether ``vector`` has everything ``other`` has."""
    return all(vector.get(client, 0) >= clock for client, clock in other.items())


def _join(left: Mapping[int, int], right: Mapping[int, int]) -> StateVector:
    joined = dict(left)
    for client, clock in right.items():
        if clock > joined.get(client, 0):
            joined[client] = clock
    return joined


def _describe_difference(left: Mapping[str, object], right: Mapping[str, object]) -> str:
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            return f"{key!r}: {left.get(key)!r} != {right.get(key)!r}"
    return "(no differing key)"  # pragma: no cover - only called when the mappings differ
