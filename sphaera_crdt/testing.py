"""An in-memory cluster of replicas for deterministic tests.

Theory of operation
-------------------
:class:`Cluster` holds :class:`~sphaera_crdt.Replica` objects and moves messages between
them without sockets, threads or sleeping. Messages are queued *in flight* and delivered
when the test (or :meth:`Cluster.pump`) says so, which makes loss, duplication and
reordering real rather than simulated:

* :meth:`Cluster.sync` is one reliable, immediate transfer: ``dst`` merges what it lacks.
* :meth:`Cluster.send` queues a raw delta; :meth:`Cluster.deliver` delivers a queued
  message (or any earlier one again: stale deltas are fine to re-deliver).
* :meth:`Cluster.pump` runs the node's gossip: each replica's
  :class:`~sphaera_crdt.core.gossip.GossipMachine` makes every decision and the cluster
  only carries its commands over the network (:mod:`sphaera_crdt.cluster_driver`),
  deciding nothing but loss, duplication and reordering, all drawn from ``seed``.
* :meth:`Cluster.settle` delivers everything in flight, then syncs every pair reliably
  until all state vectors are equal. It always terminates: a few passes over all pairs
  suffice, and more means a replica is broken (:class:`ConvergenceError`).

The cluster's own clock (used when replicas are created from ids) is a number that only
:meth:`Cluster.advance` moves, so time is deterministic as well. The machines' clock is
that time plus one gossip interval per round pumped: gossip does not age observations,
yet exchange deadlines and backoff see time pass. Every replica is a peer of every other;
``replica:<id>`` records play no part, and nothing is observed alive unless a test does.

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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, get_args

from .cluster_driver import INTERVAL, ClusterDriver, MessageKind
from .core import Change, Replica
from .core.lib0 import decode_state_vector
from .errors import ConvergenceError
from .store.memory import MemoryStore

__all__ = ["Cluster", "ConvergenceError", "MemoryStore", "Message", "MessageKind", "PumpReport"]

#: Default bound on the rounds ``pump(rounds=None)`` may take before giving up.
MAX_ROUNDS: Final = 10_000
StateVector = dict[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A message on its way from ``src`` to ``dst``.

    Attributes:
        seq: Position in the order messages were created (unique within a cluster).
        src: Id of the sending replica.
        dst: Id of the receiving replica.
        update: What it carries: for a ``"delta"`` (:meth:`Cluster.send`) a Yrs v1 update;
            for a gossip ``"request"`` or ``"answer"`` (:meth:`Cluster.pump`) a sync body
            (y-protocols STEP1, STEP2, UPDATE messages), not to be merged as an update.
        kind: ``"delta"``, ``"request"`` or ``"answer"`` (:data:`MessageKind`).
    """

    seq: int
    src: str
    dst: str
    update: bytes
    kind: MessageKind = "delta"

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError(f"message seq must be non-negative, not {self.seq}")
        if type(self.update) is not bytes:
            raise TypeError(f"a message carries bytes, not {type(self.update).__name__}")
        if self.kind not in get_args(MessageKind):
            raise ValueError(f"a message is a delta, a request or an answer, not {self.kind!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpReport:
    """What one call of :meth:`Cluster.pump` did.

    Attributes:
        rounds: Gossip rounds run.
        sent: Messages (requests and answers) created (duplicates excluded).
        delivered: Messages handed to their receiver (duplicates included).
        dropped: Messages lost.
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


class Cluster:
    """Replicas gossiping in memory, deterministically.

    Args:
        replicas: Replica ids (a replica is created for each, on the cluster's clock) or
            ready :class:`~sphaera_crdt.Replica` objects (they keep their own clocks).
        clock: The clock of the replicas created from ids; by default the cluster's own
            clock, which starts at ``start`` and moves only with :meth:`advance`.
        seed: Seed of every random choice of :meth:`pump` (the network's and the
            machines').
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
        self._clock: Callable[[], float] = clock if clock is not None else lambda: self.time
        self._random = random.Random(seed)  # the network's
        self._replicas: dict[str, Replica] = {}
        self._in_flight: list[Message] = []
        self._delivered: list[Message] = []
        self._seq = 0
        self._elapsed = 0.0  # the machines' clock runs this far ahead of the cluster's
        self._driver = ClusterDriver(
            self._replicas, self._post, random.Random(f"machines:{seed}"), self._gossip_now
        )
        self._drop = self._duplicate = 0.0  # what the network does to messages
        self._counters: Counter[str] = Counter()  # of the pump under way
        for item in replicas:
            self.add(item)
        if not self._replicas:
            raise ValueError("a cluster needs at least one replica")
        self._driver.restart()

    def _gossip_now(self) -> float:
        return self.time + self._elapsed

    # -- membership ------------------------------------------------------------------------

    def add(self, replica: str | Replica) -> Replica:
        """Add a replica (or create one on the cluster's clock) and return it.

        Once the cluster exists, every gossip machine starts over, the new one a peer.

        Raises:
            ValueError: A replica with that id is already in the cluster.
        """
        if isinstance(replica, str):
            replica = Replica(replica, clock=self._clock)
        if replica.id in self._replicas:
            raise ValueError(f"replica {replica.id!r} is already in the cluster")
        self._replicas[replica.id] = replica
        if self._driver.machines:
            self._driver.restart()
        return replica

    def remove(self, replica_id: str) -> Replica:
        """Take a replica out of the cluster (it departs; its data stays with the others).

        Raises:
            KeyError: No replica has that id.
        """
        replica = self._replicas.pop(replica_id)
        self._in_flight = [m for m in self._in_flight if replica_id not in (m.src, m.dst)]
        if self._driver.machines:
            self._driver.restart()
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
        message = self._message(src, dst, self._replicas[src].delta(since), "delta")
        self._in_flight.append(message)
        return message

    def deliver(self, message: Message | None = None) -> list[Change]:
        """Deliver a message to its receiver; return the status changes it caused.

        A delta is merged. A gossip request is answered by the receiver's machine (the
        answer is put in flight); a gossip answer is taken by the sender's machine, which
        may put its next request in flight. An answer whose exchange already had one (a
        duplicate) or gave up is ignored, as an HTTP client ignores a late response.
        Outside :meth:`pump`, what deliveries put in flight is never lost.

        Args:
            message: The message to deliver. It is removed from the queue if it is there;
                one delivered before is delivered again (a duplicate or stale message). By
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
        return self._deliver(message)

    def pump(
        self,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: bool = False,
        rounds: int | None = None,
    ) -> PumpReport:
        """Run the replicas' gossip machines over an unreliable, in-memory network.

        A round is one gossip interval (:data:`~sphaera_crdt.cluster_driver.INTERVAL`) of
        the machines' clock. At its start, exchanges that got no answer by their deadline
        fail (the machine backs off) and every due eager push and round starts; then
        messages are delivered until none is left for this round: a request is answered
        by the receiver's machine, an answer taken by the sender's, which may send its
        next request (a round trip is much shorter than an interval). Every message,
        request or answer, is lost with probability ``drop`` and put in flight twice with
        probability ``duplicate``; messages are delivered oldest first, or with
        ``reorder`` in random order, a random part of them held back for the next round.
        :class:`Message` then holds sync bodies, not raw deltas.

        Args:
            drop: Probability that a message is lost.
            duplicate: Probability that a message is delivered twice.
            reorder: Deliver in random order and hold some messages back.
            rounds: Rounds to run; ``None`` runs them until every state vector is equal,
                then delivers what is in flight (no round starts) until nothing is.

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
        counters = self._counters = Counter(sent=0, delivered=0, dropped=0, duplicated=0)
        self._drop, self._duplicate = drop, duplicate
        done = 0
        limit = self.max_rounds if rounds is None else rounds
        try:
            while done < limit:
                if rounds is None and self.converged():
                    while self._in_flight:  # no round starts: what is in flight arrives
                        self._round(reorder=reorder, tick=False)
                    break
                self._round(reorder=reorder)
                done += 1
        finally:
            self._drop = self._duplicate = 0.0  # deliveries outside pump are reliable
        converged = self.converged()
        if rounds is None and not (converged and not self._in_flight):
            raise ConvergenceError(f"no convergence after {self.max_rounds} rounds")
        return PumpReport(
            rounds=done,
            **counters,
            in_flight=len(self._in_flight),
            converged=converged,
        )

    def settle(self) -> list[Change]:
        """Deliver everything in flight, then sync reliably until all state vectors agree.

        Exchanges under way run to their end, reliably (answers are delivered too).

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

    # -- the network -----------------------------------------------------------------------

    def _message(self, src: str, dst: str, update: bytes, kind: MessageKind) -> Message:
        message = Message(seq=self._seq, src=src, dst=dst, update=update, kind=kind)
        self._seq += 1
        return message

    def _post(self, src: str, dst: str, body: bytes, kind: MessageKind) -> int:
        """Put a gossip message on the unreliable network; return its number."""
        message = self._message(src, dst, body, kind)
        self._counters["sent"] += 1
        if self._drop and self._random.random() < self._drop:
            self._counters["dropped"] += 1
        else:
            copies = 2 if self._duplicate and self._random.random() < self._duplicate else 1
            self._counters["duplicated"] += copies - 1
            self._in_flight.extend([message] * copies)
        return message.seq

    def _round(self, *, reorder: bool, tick: bool = True) -> None:
        if tick:
            self._elapsed += INTERVAL
            self._driver.tick()
        held: list[Message] = []
        while self._in_flight or self._driver.stagger():
            batch, self._in_flight = self._in_flight, []
            if reorder:
                self._random.shuffle(batch)
                keep = self._random.randrange(len(batch) + 1)
                held, batch = held + batch[:keep], batch[keep:]
            for message in batch:
                self._deliver(message)
                self._counters["delivered"] += 1
        self._in_flight = held

    def _deliver(self, message: Message) -> list[Change]:
        self._delivered.append(message)
        seq, src, dst, body = message.seq, message.src, message.dst, message.update
        if message.kind == "request":
            return self._driver.request_arrived(seq, src, dst, body)
        if message.kind == "answer":
            return self._driver.answer_arrived(seq, body)
        return self._replicas[dst].merge(body)

    def _describe_vectors(self) -> str:
        return "; ".join(
            f"{replica_id}={vector}" for replica_id, vector in self.state_vectors().items()
        )


def _describe_difference(left: Mapping[str, object], right: Mapping[str, object]) -> str:
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            return f"{key!r}: {left.get(key)!r} != {right.get(key)!r}"
    return "(no differing key)"  # pragma: no cover - only called when the mappings differ
