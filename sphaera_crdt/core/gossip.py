"""The gossip's decisions, sans I/O: what each request carries, what each answer teaches,
when to push, whom to contact and how long a failing peer waits.

:mod:`sphaera_crdt.net.gossip` drives these decisions over HTTP and asyncio, and
:mod:`sphaera_crdt.sim.gossip` drives the very same ones over a simulated network and
clock; neither decides on its own what to send or to whom.

Theory of operation
-------------------
Every exchange is one or two sync round trips (``POST /v1/sync``) with one peer. A request
with our state vector (STEP1) pulls: the answer is a STEP2 with what we lack and the
peer's STEP1. A request with an update alone pushes: the answer acknowledges it with the
peer's clocks of the pushed clients. There are two kinds of exchange (:data:`PLANS`):

======  ============================================  =======================================
kind    first request                                 after the answer
======  ============================================  =======================================
round   STEP1, our state vector: a pull               if the peer's STEP1 shows that it
                                                      lacks something, a push alone of
                                                      exactly that (a STEP2, the delta for
                                                      its vector)
eager   an UPDATE alone: our own changes since the    nothing
        previous push that the peer is not known to
        hold; no request at all if there are none
======  ============================================  =======================================

* **Rounds are the anti-entropy.** Every interval a replica exchanges with ``fanout``
  random peers: it pulls what it lacks (the peer's STEP2), then pushes what the peer's
  STEP1 shows it lacks. The push is computed from the peer's own answer, never from what
  we last knew of it, which may be stale (a third replica may have sent it the same
  changes since): a round sends nothing the peer holds, except what reaches it in the
  same instant from elsewhere.
* **Eager pushes spread local changes at once**, to every peer, and pull nothing. A change
  is originated by one writer only, so a push carries the writer's own items (those of
  :attr:`Replica.writer_clients`) newer than both the previous push and what the peer is
  known to hold; other writers push their own changes, and a lost push is left to the
  rounds. (A push that pulled would bring every concurrent writer's changes to every
  writer from every peer: with ``w`` writers at once, ``w`` copies of each change.)
  Changes made within :data:`DEBOUNCE` seconds go in one push; changes made while a push
  runs start another when it ends (:class:`PushSchedule`).
* **What writers are pushing is not relayed.** Until its next round begins, a replica
  leaves out of its STEP2 answers and of its rounds' pushes the items that writers are
  pushing eagerly right now (those an eager push brought it, and those of its own last
  push, :attr:`GossipPlanner.fresh`): every peer gets them from their writer within a
  round trip, and relaying them as well would deliver them twice. What a lost push
  carried is relayed from the next round on.
* **Liveness is not pushed.** Observations of ``replica:<id>`` entities (a node's
  heartbeat, a peer observed after an exchange this node started to the peer's declared
  URL: a caller's claim to be someone is no evidence) travel with the rounds: pushed
  eagerly, every heartbeat of every node would cost a request to every other node.
* **What a peer holds** (:class:`~.sync.PeerKnowledge`) is learned from every state
  vector it sends (in answers and in requests) and every update it pushes. A peer whose
  state vector shows less than we believed it had restarted without its state: it is
  forgotten first, then learned again.
* **A round's exchanges follow one another.** Each starts when the one before it has
  ended (its answer merged), or :func:`round_stagger` after that one started if it has
  not: pulls made at once would each bring what we lack, ``fanout`` copies of it, while
  the second pull, made after the first answer, asks only for what is still missing.
* **Rounds do not wait for exchanges.** A round starts every interval, whatever exchanges
  of earlier rounds are still in flight; a peer with an exchange in flight is not chosen
  (exchanges with one peer never overlap). An exchange that gets no answer fails at its
  deadline (:func:`exchange_timeout`), and the failing peer waits before it is chosen
  again (:class:`Backoff`), the wait doubling per failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Generic, TypeVar

from . import sync
from .lib0 import decode_state_vector, encode_state_vector
from .replica import REPLICA_PREFIX, Replica
from .updates import shape
from .views import Change, RecordChange

__all__ = [
    "BACKOFF_INTERVALS",
    "DEBOUNCE",
    "MAX_BACKOFF",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "PLANS",
    "Backoff",
    "ExchangeKind",
    "GossipPlanner",
    "PeerExchange",
    "Plan",
    "PushSchedule",
    "Request",
    "backoff_delay",
    "choose",
    "exchange_timeout",
    "learn_state",
    "parse_answer",
    "pushes_eagerly",
    "round_stagger",
]

#: Seconds local changes are gathered before one push carries them all.
DEBOUNCE: Final = 0.005
#: A failing peer is retried after at most this many gossip intervals ...
BACKOFF_INTERVALS: Final = 16
#: ... and at most this many seconds.
MAX_BACKOFF: Final = 30.0
#: Bounds of one exchange's deadline, whatever the gossip interval.
MIN_TIMEOUT: Final = 1.0
MAX_TIMEOUT: Final = 5.0

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def exchange_timeout(interval: float) -> float:
    """The deadline of one exchange: three gossip intervals, kept within 1-5 seconds."""
    return min(MAX_TIMEOUT, max(MIN_TIMEOUT, 3 * interval))


def round_stagger(interval: float, fanout: int) -> float:
    """The longest a round's exchange waits for the one before it: a round's exchanges all
    start within half an interval, whatever they meet."""
    return interval / (2 * max(1, fanout))


def backoff_delay(failures: int, interval: float) -> float:
    """Seconds a peer that failed ``failures`` times in a row waits before the next try."""
    cap = max(interval, min(MAX_BACKOFF, BACKOFF_INTERVALS * interval))
    return float(min(cap, interval * 2.0 ** min(max(failures, 1) - 1, 32)))


def pushes_eagerly(change: RecordChange) -> bool:
    """Whether a record change starts an eager push: a local change, except liveness
    (observations of ``replica:<id>`` entities, which the rounds carry)."""
    if not change.local:
        return False
    return change.kind != "observation" or not change.id.startswith(REPLICA_PREFIX)


def choose(
    rng: random.Random,
    count: int,
    size: int,
    at: Callable[[int], T],
    eligible: Callable[[T], bool],
) -> list[T]:
    """``count`` distinct random candidates among ``at(0) .. at(size - 1)`` that are
    ``eligible`` (fewer if there are not that many).

    Drawing is rejection sampling, ``O(count)`` when most candidates are eligible (never
    a pass over all ``size`` of them per round); when most are not, the eligible rest is
    listed and sampled.
    """
    chosen: list[T] = []
    if count <= 0 or size <= 0:
        return chosen
    tried: set[int] = set()
    for _ in range(8 * count + 8):
        if len(chosen) == count:
            return chosen
        number = rng.randrange(size)
        if number in tried:
            continue
        tried.add(number)
        candidate = at(number)
        if eligible(candidate):
            chosen.append(candidate)
    if len(chosen) < count:
        rest = [at(n) for n in range(size) if n not in tried]
        rest = [candidate for candidate in rest if eligible(candidate)]
        chosen.extend(rng.sample(rest, min(count - len(chosen), len(rest))))
    return chosen


class Backoff(Generic[K]):
    """Which peers are waiting after failures, and until when (times from the caller's
    clock)."""

    def __init__(self) -> None:
        self._entries: dict[K, tuple[int, float]] = {}

    def due(self, key: K, now: float) -> bool:
        """Whether ``key`` may be contacted at ``now``."""
        entry = self._entries.get(key)
        return entry is None or now >= entry[1]

    def failures(self, key: K) -> int:
        """Failures in a row so far."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry[0]

    def failed(self, key: K, now: float, interval: float) -> int:
        """An exchange with ``key`` failed at ``now``; returns the failures in a row."""
        failures = self.failures(key) + 1
        self._entries[key] = (failures, now + backoff_delay(failures, interval))
        return failures

    def succeeded(self, key: K) -> bool:
        """An exchange with ``key`` succeeded; returns whether it had been failing."""
        return self._entries.pop(key, None) is not None

    def clear(self) -> None:
        self._entries.clear()


@dataclass(slots=True)
class PushSchedule:
    """When eager pushes run.

    A local change asks for a push (:meth:`request`); the driver starts one after
    :data:`DEBOUNCE` unless one is already scheduled or running. A push clears the request
    as it begins (:meth:`begin`); changes made while it runs ask again, so when it ends
    (:meth:`end`) another follows.
    """

    dirty: bool = False
    pushing: bool = False

    def request(self) -> bool:
        """A local change: whether the driver must schedule a push now."""
        self.dirty = True
        return not self.pushing

    def started(self) -> None:
        """The driver scheduled a push."""
        self.pushing = True

    def begin(self) -> None:
        """The push begins: it carries every change made so far."""
        self.dirty = False

    def end(self) -> bool:
        """The push ended: whether another must follow (after the debounce)."""
        if self.dirty:
            return True
        self.pushing = False
        return False

    def stopped(self) -> None:
        """The driver dropped its scheduled or running push (stopped, crashed)."""
        self.pushing = False


class ExchangeKind(Enum):
    """The two kinds of exchange (see the module's table)."""

    ROUND = "round"
    EAGER = "eager"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one kind of exchange does.

    Attributes:
        pull: Whether the first request carries our state vector (asks for a STEP2).
        follow_up: Whether a peer that still lacks something after the first answer gets
            a second request with exactly that.
    """

    pull: bool
    follow_up: bool


#: The module's table, as data.
PLANS: Final = {
    ExchangeKind.ROUND: Plan(pull=True, follow_up=True),
    ExchangeKind.EAGER: Plan(pull=False, follow_up=False),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One sync request to send.

    Attributes:
        body: The sync messages.
        payload: Bytes of the update it carries (0 for none): the rest is envelope.
        pull: Whether it carries our state vector (the answer then has a STEP2).
    """

    body: bytes
    payload: int
    pull: bool


def parse_answer(body: bytes) -> tuple[list[tuple[bytes, dict[int, int]]], list[bytes]]:
    """A sync answer's state vectors (each with its decoded clocks) and updates.

    Raises:
        InvalidMessage: Not well-formed sync messages.
        InvalidUpdate: A state vector is malformed.
    """
    states: list[tuple[bytes, dict[int, int]]] = []
    updates: list[bytes] = []
    for message in sync.decode_messages(body):
        if message.type is sync.MessageType.STEP1:
            states.append((message.payload, decode_state_vector(message.payload)))
        else:
            updates.append(message.payload)
    return states, updates


def learn_state(
    peers: sync.PeerKnowledge, peer_id: str, state: bytes, clocks: dict[int, int] | None = None
) -> None:
    """``peer_id`` holds ``state`` now (a STEP1 it sent)."""
    known = peers.peers.get(peer_id)
    if clocks is None:
        clocks = decode_state_vector(state)
    if known is not None and not sync.covers(clocks, known.known):
        # It holds less than it once did: it restarted without its state. Start over.
        peers.forget(peer_id)
    peers.learn_state(peer_id, state, clocks)


class GossipPlanner:
    """The gossip decisions of one replica: its exchanges, its answers, its knowledge.

    Args:
        replica: The replica that gossips.
        peers: What each peer is known to hold (a fresh record by default).
    """

    def __init__(self, replica: Replica, peers: sync.PeerKnowledge | None = None) -> None:
        self.replica = replica
        self.peers = peers if peers is not None else sync.PeerKnowledge()
        #: own clocks as of the last eager push (or of the start): later changes are new
        self._mark = self._own_clocks()
        #: client -> clock range that its writer is pushing to every peer right now
        self.fresh: dict[int, tuple[int, int]] = {}

    def _own_clocks(self) -> dict[int, int]:
        clocks = self.replica.clocks()
        return {client: clocks.get(client, 0) for client in self.replica.writer_clients}

    # -- exchanges -------------------------------------------------------------------------

    def begin_round(self) -> None:
        """A round begins: eager pushes received before it have reached everyone they
        will reach, so what they carried is relayed from now on like anything else."""
        self.fresh.clear()

    def round(self, peer_id: str | None) -> PeerExchange:
        """A round's exchange with ``peer_id`` (``None``: a seed not known yet)."""
        return PeerExchange(self, peer_id, ExchangeKind.ROUND, {})

    def begin_push(self) -> dict[int, int]:
        """An eager push begins: returns what the previous one carried (pass it to
        :meth:`push` for every target) and remembers what this one carries."""
        since, self._mark = self._mark, self._own_clocks()
        self._note_fresh(
            {
                client: (since.get(client, 0), clock)
                for client, clock in self._mark.items()
                if clock > since.get(client, 0)
            }
        )
        return since

    def _note_fresh(self, ranges: dict[int, tuple[int, int]]) -> None:
        fresh = self.fresh
        for client, (start, end) in ranges.items():
            known = fresh.get(client)
            if known is not None and start <= known[1] and end >= known[0]:
                start, end = min(start, known[0]), max(end, known[1])
            fresh[client] = (start, end)

    def push(self, peer_id: str | None, since: dict[int, int]) -> PeerExchange:
        """An eager push to ``peer_id`` of the own changes made after ``since``."""
        return PeerExchange(self, peer_id, ExchangeKind.EAGER, since)

    def own_changes(self, peer_id: str | None, since: dict[int, int]) -> bytes | None:
        """This replica's own items newer than ``since`` that ``peer_id`` is not known to
        hold, as one update; ``None`` if there are none."""
        state = self.peers.peers.get(peer_id) if peer_id is not None else None
        known = state.known if state is not None else {}
        clocks = self.replica.clocks()
        base: dict[int, int] | None = None
        for client in self.replica.writer_clients:
            have = max(known.get(client, 0), since.get(client, 0))
            if clocks.get(client, 0) > have:
                if base is None:
                    base = dict(clocks)
                base[client] = have
        if base is None:
            return None
        return self.replica.delta(encode_state_vector(base))

    # -- learning --------------------------------------------------------------------------

    def learn_state(self, peer_id: str, state: bytes, clocks: dict[int, int] | None = None) -> None:
        """:func:`learn_state` into this planner's knowledge."""
        learn_state(self.peers, peer_id, state, clocks)

    # -- the answering side ----------------------------------------------------------------

    def answer(self, body: bytes, peer_id: str | None) -> sync.SyncResult:
        """Answer a sync request (merge what it carries, reply STEP2 and/or STEP1) and learn
        what the caller holds: its state vector, or else the updates it pushed.

        The STEP2 leaves out what writers are pushing eagerly this round period
        (:attr:`fresh`, see the module's docstring); an eager push received (an UPDATE
        alone) joins it.

        Raises:
            InvalidMessage: The body is malformed.
            InvalidUpdate: A carried update is malformed.
            Either way the replica is unchanged and nothing is learned.
        """
        result = sync.handle_sync(self.replica, body, assume=self.fresh)
        if result.peer_state is not None:
            if peer_id:
                self.learn_state(peer_id, result.peer_state, result.peer_clocks)
            return result
        for message in result.pushed:
            if message.payload == sync.EMPTY_UPDATE:
                continue
            if peer_id:
                self.peers.learn_update(peer_id, message.payload)
            if message.type is sync.MessageType.UPDATE:
                self._note_fresh(shape(message.payload).ranges)
        return result


class PeerExchange:
    """One exchange with one peer, step by step: :meth:`start` gives the first request,
    :meth:`answered` takes each answer and gives the next request, until ``None``.

    Attributes:
        peer_id: The peer's replica id, once known.
        kind: Round or eager push.
        requests: Requests made so far.
        pushed: Whether some request carried an update.
        merges: Answers that carried an update (merged into the replica).
        changes: Status changes the merged answers caused.
        merge_seconds: Time spent merging answers (``time.perf_counter``).
    """

    def __init__(
        self,
        planner: GossipPlanner,
        peer_id: str | None,
        kind: ExchangeKind,
        since: dict[int, int],
    ) -> None:
        self.planner = planner
        self.peer_id = peer_id
        self.kind = kind
        self.plan: Plan = PLANS[kind]
        self.requests = 0
        self.pushed = False
        self.merges = 0
        self.changes: list[Change] = []
        self.merge_seconds = 0.0
        self._since = since
        self._push: bytes | None = None
        self._pulled = False

    def start(self) -> Request | None:
        """The first request; ``None``: nothing to send (an eager push the peer needs not)."""
        if self.plan.pull:
            return self._request(None, pull=True)
        update = self.planner.own_changes(self.peer_id, self._since)
        if update is None or update == sync.EMPTY_UPDATE:
            return None
        return self._request(update, pull=False)

    def answered(
        self,
        answer: bytes,
        peer_id: str | None = None,
        identify: Callable[[], str | None] | None = None,
    ) -> Request | None:
        """Merge an answer and learn from it; the next request, or ``None`` when done.

        Args:
            answer: The answer's body.
            peer_id: The replica id the answer names, if any.
            identify: Asked for the peer's id after the merge, if still unknown (the
                merged state may name it).

        Raises:
            InvalidMessage: The answer is not well-formed sync messages.
            InvalidUpdate: Its update is malformed. Either way nothing was merged or
                learned.
        """
        if peer_id is not None:
            self.peer_id = peer_id
        states, updates = parse_answer(answer)
        if any(update != sync.EMPTY_UPDATE for update in updates):
            started = time.perf_counter()
            self.changes.extend(sync.merge_update(self.planner.replica, updates))
            self.merge_seconds += time.perf_counter() - started
            self.merges += 1
        if self.peer_id is None and identify is not None:
            self.peer_id = identify()
        peer_state = states[-1] if states else None
        if self.peer_id is not None:
            if peer_state is None:
                if self._push is not None:  # a server that does not announce its state
                    self.planner.peers.learn_update(self.peer_id, self._push)
            elif self._pulled:
                self.planner.learn_state(self.peer_id, *peer_state)
            else:  # the acknowledgement of a push: the pushed clients' clocks only
                self.planner.peers.learn_state(self.peer_id, *peer_state)
        if not self.plan.follow_up or not self._pulled or peer_state is None:
            return None
        lacking = sync.delta_for(self.planner.replica, *peer_state, self.planner.fresh)
        if lacking == sync.EMPTY_UPDATE:
            return None
        return self._request(lacking, pull=False)

    def _request(self, update: bytes | None, *, pull: bool) -> Request:
        # A follow-up push answers the peer's STEP1: it goes as STEP2, which tells it
        # apart from an eager push (an UPDATE).
        body = sync.sync_request(self.planner.replica, update, pull=pull, reply=self.requests > 0)
        self.requests += 1
        self._push = update
        self._pulled = pull
        if update is not None:
            self.pushed = True
        return Request(body=body, payload=0 if update is None else len(update), pull=pull)
