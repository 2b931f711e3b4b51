"""The gossip of one replica as one sans-IO machine (:class:`GossipMachine`): what each
request carries, what each answer teaches, when rounds and pushes run, whom they contact,
how long a failing peer waits, which peers are live and when a peer counts as seen.

The machine takes events with an explicit ``now`` (a deadline came, a record changed, an
answer came, an exchange failed, a request came) and returns plain commands (exchange with
these targets, send this request next, observe that replica, the next deadline). It calls
no clock and does no I/O. Three drivers feed it and carry its commands out, deciding
nothing themselves: the node's asyncio driver (:mod:`sphaera_crdt.net.peering`), the
simulator (:mod:`sphaera_crdt.sim.driver`) and the in-memory test cluster
(:mod:`sphaera_crdt.cluster_driver`); the simulator and the tests therefore run the node's
protocol by construction.

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
* **Membership is data, and evidence is narrow.** The peers are the ``replica:<id>``
  entities that exist here and declare a URL (contacted only if the driver's allow-list
  accepts it; in signed mode only those of replicas the trust list names), and the
  seeds. A peer counts as seen (:class:`Observe`) only after an exchange this replica
  started to the URL the peer's record declares, answered in the peer's name (and, in
  signed mode, listed), at most once per quarter liveness window; its answer's clock reading is
  counted the same way (or from a seed), and while this replica's own clock is the outlier
  (:class:`~.clocks.ClockWatch`) it observes nothing, not even its own heartbeat.

The machine's parts, each a small piece of it: :class:`GossipPlanner` (what to send and
what answers teach, with :class:`~.sync.PeerKnowledge`), :class:`PeerExchange` (one
exchange step by step), :class:`PushSchedule` (the debounce), :class:`Backoff`,
:func:`choose` (target choice from the injected ``random.Random``) and
:class:`~.clocks.ClockWatch` (clock offsets and the outlier rule).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from . import sync
from .clocks import ClockNotice, ClockWatch, Outlier
from .exchange import (  # one exchange's plan, re-exported beside the machine that runs it
    PLANS,
    ExchangeKind,
    GossipPlanner,
    PeerExchange,
    Plan,
    Request,
    learn_state,
    parse_answer,
)
from .replica import REPLICA_PREFIX, Replica
from .views import RecordChange, Status

__all__ = [
    "BACKOFF_INTERVALS",
    "DEBOUNCE",
    "MAX_BACKOFF",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "PLANS",
    "Answer",
    "AnswerOutcome",
    "Backoff",
    "ExchangeKind",
    "FailureOutcome",
    "GossipMachine",
    "GossipPlanner",
    "Observe",
    "PeerExchange",
    "Plan",
    "PushSchedule",
    "Request",
    "StartPush",
    "StartRound",
    "Target",
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


# -- the machine ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A peer to exchange with.

    Attributes:
        url: Its base URL: everything kept per peer (backoff, the exchange in flight) is
            kept by URL.
        peer_id: Its replica id, if known.
    """

    url: str
    peer_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRound:
    """Command: run a round's exchanges with ``targets``, one after another (each when
    the one before it ended, or ``stagger`` seconds after that one started); the next
    round is due at ``next_round``."""

    targets: tuple[Target, ...]
    stagger: float
    next_round: float
    #: declared URLs this round found not allowed, for the first time (to warn about)
    refused: tuple[Target, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPush:
    """Command: open an eager push (:meth:`GossipMachine.push_exchange`) with every one of
    ``targets``, all at once."""

    targets: tuple[Target, ...]
    since: dict[int, int]
    refused: tuple[Target, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Observe:
    """Command: observe ``replica:<replica_id>`` as alive, for ``ttl`` seconds."""

    replica_id: str
    ttl: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """Event data: the answer to a request this replica sent.

    Attributes:
        body: The answer's sync messages.
        replica_id: The replica id it names (a node's ``Sphaera-Replica`` header), if any.
        time: The peer's clock reading in it, if any.
        sent: This replica's clock when the request went.
        received: This replica's clock when the answer came.
    """

    body: bytes
    replica_id: str | None = None
    time: float | None = None
    sent: float = 0.0
    received: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerOutcome:
    """Commands after an answer: send ``send`` next (``None``: the exchange is over),
    carry out ``observe``, log ``notices``.

    Attributes:
        self_contact: The answer came from this replica: nothing was merged, drop it.
        merged: Whether the answer carried an update (merged into the replica).
        merge_seconds: Time the merge took.
        peer_offset: The peer's clock offset, when this answer measured it.
    """

    send: Request | None = None
    self_contact: bool = False
    observe: Observe | None = None
    notices: tuple[ClockNotice, ...] = ()
    merged: bool = False
    merge_seconds: float = 0.0
    peer_offset: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureOutcome:
    """After a failed exchange: the failures in a row, and whether it is worth a warning
    (the first failure, or an unusable answer) rather than a debug line."""

    failures: int
    loud: bool


class GossipMachine:
    """The whole gossip of one replica, sans I/O: the one place every decision is made.

    The driver feeds it events with its clock's ``now`` and carries out what it returns:

    ===========================  ===============================================
    event                        commands
    ===========================  ===============================================
    :meth:`first_round`          the first round's deadline
    :meth:`round_due`            :class:`StartRound`
    :meth:`record_changed`       an eager push's deadline, or ``None``
    :meth:`entity_changed`       (who is live may have changed)
    :meth:`push_due`             :class:`StartPush`
    :meth:`push_ended`           the next push's deadline, or ``None``
    :meth:`push_stopped`         (the driver dropped its push)
    :meth:`acquire` / release    run this exchange now, or after the one in flight
    :meth:`answered`             :class:`AnswerOutcome` (next request, observe)
    :meth:`failed` / succeeded   :class:`FailureOutcome` / whether it recovered
    :meth:`request_received`     the answer to send back
    :meth:`heartbeat`            an :class:`Observe` of this replica, or ``None``
    ===========================  ===============================================

    It calls no clock and does no I/O; its random choices come from the injected ``rng``.

    Args:
        replica: The replica that gossips.
        interval: Seconds between rounds.
        fanout: Peers per round.
        rng: Source of every random choice (seed it for repeatable runs).
        debounce: Seconds local changes are gathered before one push carries them.
        liveness: Seconds an observation of a replica lasts (the liveness window).
        clocks: The peers' clock measurements (``None``: not measured).
        seeds: URLs contacted whatever the merged state says.
        members: A fixed membership (``Target`` per peer, in URL order) instead of the
            replica entities: the simulator's, where every replica knows every other. It is
            kept as given, not copied, so that the simulator's machines can share one list
            of all N replicas (a copy each would hold N^2 targets).
    """

    def __init__(
        self,
        replica: Replica,
        *,
        interval: float,
        fanout: int,
        rng: random.Random,
        debounce: float = DEBOUNCE,
        liveness: float | None = None,
        clocks: ClockWatch | None = None,
        seeds: tuple[str, ...] = (),
        members: Sequence[Target] | None = None,
    ) -> None:
        self.replica = replica
        self.interval = interval
        self.fanout = fanout
        self.debounce = debounce
        self.liveness = liveness if liveness is not None else 10 * interval
        self.rng = rng
        self.clocks = clocks
        self.seeds = tuple(url.rstrip("/") for url in seeds)
        self.planner = GossipPlanner(replica)
        #: this replica's own URL (set once the driver knows it)
        self.own_url = ""
        #: whether a URL that a record declares may be contacted (set by the driver)
        self.allows: Callable[[str], bool] = lambda url: True
        #: replica id -> URL, from the replica entities (never from a caller's headers)
        self.directory: dict[str, str] = {}
        self._members = members
        self._backoff: Backoff[str] = Backoff()
        self._schedule = PushSchedule()
        self._lanes: dict[str, deque[Callable[[], None]]] = {}
        #: url -> replica id, from the answers
        self._url_ids: dict[str, str] = {}
        self._self_urls: set[str] = set()
        self._refused: set[str] = set()
        self._live: dict[str, str] | None = None
        self._last_observed: dict[str, float] = {}

    @property
    def peers(self) -> sync.PeerKnowledge:
        """What each peer is known to hold."""
        return self.planner.peers

    # -- rounds ----------------------------------------------------------------------------

    def first_round(self, now: float) -> float:
        """The driver starts: the first round's deadline, half to one interval away (nodes
        started together do not gossip in lockstep)."""
        return now + self.rng.uniform(self.interval / 2, self.interval)

    def round_due(self, now: float) -> StartRound:
        """A round's deadline came: ``fanout`` random candidates that are not backing off
        and have no exchange in flight. The next round follows one interval later,
        whatever this one's exchanges are doing."""
        self.planner.begin_round()
        refused: list[Target] = []
        candidates = self._candidates(refused)
        due, lanes = self._backoff.due, self._lanes
        chosen = choose(
            self.rng,
            self.fanout,
            len(candidates),
            candidates.__getitem__,
            lambda target: target.url not in lanes and due(target.url, now),
        )
        return StartRound(
            targets=tuple(chosen),
            stagger=round_stagger(self.interval, self.fanout),
            next_round=now + self.interval,
            refused=tuple(refused),
        )

    def round_exchange(self, target: Target) -> PeerExchange:
        """A round's exchange with ``target``."""
        return self.planner.round(self._peer_id(target))

    # -- eager pushes ----------------------------------------------------------------------

    def record_changed(self, change: RecordChange, now: float) -> float | None:
        """A record changed: the deadline of an eager push to schedule, if one is due."""
        if change.kind == "entity" and change.id.startswith(REPLICA_PREFIX):
            self._live = None
        if not pushes_eagerly(change) or not self._schedule.request():
            return None
        self._schedule.started()
        return now + self.debounce

    def entity_changed(self, entity: str) -> None:
        """An entity's status changed (``replica:`` ones change who is live)."""
        if entity.startswith(REPLICA_PREFIX):
            self._live = None

    @property
    def push_wanted(self) -> bool:
        """Whether local changes wait for a push that is neither scheduled nor running."""
        return self._schedule.dirty and not self._schedule.pushing

    def push_scheduled(self, now: float) -> float:
        """The driver schedules a push for changes that waited (see :attr:`push_wanted`)."""
        self._schedule.started()
        return now + self.debounce

    def push_due(self, now: float) -> StartPush:
        """A push's deadline came: every target not backing off gets this replica's changes
        since the previous push (a target known to hold them gets no request at all)."""
        self._schedule.begin()
        since = self.planner.begin_push()
        targets, refused = self.targets(now)
        return StartPush(targets=targets, since=since, refused=refused)

    def push_exchange(self, target: Target, since: dict[int, int]) -> PeerExchange:
        """An eager push's exchange with ``target``."""
        return self.planner.push(self._peer_id(target), since)

    def push_ended(self, now: float) -> float | None:
        """A push ended: the next push's deadline if changes were made meanwhile."""
        return now + self.debounce if self._schedule.end() else None

    def push_stopped(self) -> None:
        """The driver dropped its scheduled or running push (stopped, crashed)."""
        self._schedule.stopped()

    # -- one exchange per peer -------------------------------------------------------------

    def acquire(self, url: str, run: Callable[[], None]) -> bool:
        """An exchange with ``url`` wants to run: ``True`` if it runs now, else ``run`` is
        called by :meth:`release` once the exchanges before it are over (exchanges with one
        peer never overlap)."""
        lane = self._lanes.get(url)
        if lane is None:
            self._lanes[url] = deque()
            return True
        lane.append(run)
        return False

    def release(self, url: str) -> None:
        """The exchange with ``url`` is over: the next one waiting runs."""
        lane = self._lanes[url]
        if lane:
            lane.popleft()()
        else:
            del self._lanes[url]

    def busy(self, url: str) -> bool:
        """Whether an exchange with ``url`` is in flight."""
        return url in self._lanes

    # -- answers ---------------------------------------------------------------------------

    def answered(
        self, exchange: PeerExchange, url: str, answer: Answer, now: float
    ) -> AnswerOutcome:
        """An answer came for ``exchange``'s request to ``url``: merge it, learn from it.

        A peer counts as seen (:class:`Observe`) only after an exchange this replica
        started to the URL its record declares, answered in its name: a caller's claim to
        be someone is no evidence, nor is an answer from another URL.

        Raises:
            InvalidMessage: The answer is not well-formed sync messages.
            InvalidUpdate: Its update is malformed. Either way nothing was merged.
        """
        replica_id = answer.replica_id
        if replica_id is not None:
            if replica_id == self.replica.id:
                self._self_urls.add(url)
                return AnswerOutcome(self_contact=True)
            self._url_ids[url] = replica_id
        merges, seconds = exchange.merges, exchange.merge_seconds
        follow = exchange.answered(answer.body, replica_id, identify=lambda: self.id_for(url))
        notices: tuple[ClockNotice, ...] = ()
        offset: float | None = None
        observe: Observe | None = None
        if replica_id is not None:
            notices, offset = self._measure(replica_id, url, answer)
            outlier, transition = self.outlier(now)
            notices += transition
            if outlier is None:
                observe = self._observe(replica_id, url, now)
        return AnswerOutcome(
            send=follow,
            observe=observe,
            notices=notices,
            merged=exchange.merges > merges,
            merge_seconds=exchange.merge_seconds - seconds,
            peer_offset=offset,
        )

    def failed(self, url: str, now: float, *, remote: bool) -> FailureOutcome:
        """An exchange with ``url`` failed (unreachable, or ``remote``: an unusable
        answer): it waits before it is chosen again, the wait doubling per failure."""
        failures = self._backoff.failed(url, now, self.interval)
        return FailureOutcome(failures=failures, loud=failures == 1 or remote)

    def succeeded(self, url: str) -> bool:
        """An exchange with ``url`` succeeded; returns whether it had been failing."""
        return self._backoff.succeeded(url)

    def request_received(self, body: bytes, peer_id: str | None) -> sync.SyncResult:
        """A sync request came (``peer_id``: the caller's claim): the answer to send back.

        Raises:
            InvalidMessage: The body is malformed.
            InvalidUpdate: A carried update is malformed. Either way nothing changed.
        """
        return self.planner.answer(body, peer_id)

    # -- membership ------------------------------------------------------------------------

    def targets(self, now: float) -> tuple[tuple[Target, ...], tuple[Target, ...]]:
        """Live peers and seeds this replica may contact at ``now`` (not backing off), by
        URL; and the declared URLs found not allowed for the first time (to warn about)."""
        refused: list[Target] = []
        due = self._backoff.due
        targets = tuple(t for t in self._candidates(refused) if due(t.url, now))
        return targets, tuple(refused)

    def _candidates(self, refused: list[Target]) -> Sequence[Target]:
        if self._members is not None:
            return self._members
        skip = {*self._self_urls, self.own_url}
        found: dict[str, str | None] = {}
        for peer_id, url in self.live_peers().items():
            if url in skip:
                continue
            if self.allows(url):
                found[url] = peer_id
            elif url not in self._refused:
                self._refused.add(url)
                refused.append(Target(url=url, peer_id=peer_id))
        for url in self.seeds:
            if url in found or url in skip:
                continue
            seed_id = self.id_for(url)
            # A seed that is a live peer under another URL is left out.
            if seed_id is None or (seed_id not in found.values() and seed_id != self.replica.id):
                found[url] = seed_id
        return [Target(url=url, peer_id=found[url]) for url in sorted(found)]

    def live_peers(self) -> dict[str, str]:
        """Peers to gossip with: replica entities that exist here and have a URL (in
        signed mode, only those of replicas the trust list names)."""
        if self._live is not None:
            return self._live
        peers: dict[str, str] = {}
        trust = self.replica.trust
        for entity_id in self.replica.entity_ids(REPLICA_PREFIX):
            view = self.replica.entity(entity_id)
            if view is None or view.kind != "replica":
                continue
            peer_id = view.id.removeprefix(REPLICA_PREFIX)
            url = view.attrs.get("url")
            if peer_id == self.replica.id or type(url) is not str:
                continue
            if trust is not None and peer_id not in trust:
                continue  # not a member: never contacted, its URL never learnt
            self.directory.setdefault(peer_id, url.rstrip("/"))
            if view.status is Status.EXISTS:
                peers[peer_id] = url.rstrip("/")
        self._live = peers
        return peers

    def forget_live(self) -> None:
        """Drop the cached live peers (the driver is not watching the replica, or the
        trust list changed)."""
        self._live = None

    def id_for(self, url: str) -> str | None:
        """The replica id at ``url``: from its answers, else from the replica entities."""
        peer_id = self._url_ids.get(url)
        if peer_id is not None:
            return peer_id
        self.live_peers()  # fills the directory from the replica entities
        for candidate, known_url in self.directory.items():
            if known_url == url:
                return candidate
        return None

    def _peer_id(self, target: Target) -> str | None:
        return target.peer_id if target.peer_id is not None else self.id_for(target.url)

    def _declared(self, replica_id: str, url: str) -> bool:
        view = self.replica.entity(f"{REPLICA_PREFIX}{replica_id}")
        if view is None or view.kind != "replica":
            return False
        declared = view.attrs.get("url")
        return type(declared) is str and declared.rstrip("/") == url.rstrip("/")

    def _observe(self, replica_id: str, url: str, now: float) -> Observe | None:
        """Whether an answer from ``replica_id`` at ``url`` shows it alive (this replica's
        clock is not the outlier)."""
        if replica_id == self.replica.id or not self._declared(replica_id, url):
            return None
        trust = self.replica.trust
        if trust is not None and replica_id not in trust:
            return None  # signed mode: not a member, whoever answers in its name
        if now - self._last_observed.get(replica_id, -math.inf) < self.liveness / 4:
            return None  # rate limited: one observation per quarter window is plenty
        self._last_observed[replica_id] = now
        return Observe(replica_id=replica_id, ttl=self.liveness)

    def heartbeat(self, now: float) -> Observe | None:
        """This replica's heartbeat is due: observe itself, unless its clock is the
        outlier (every replica would misjudge the observation's date)."""
        if self.outlier(now)[0] is not None:
            return None
        self._last_observed[self.replica.id] = now
        return Observe(replica_id=self.replica.id, ttl=self.liveness)

    # -- clocks ----------------------------------------------------------------------------

    def _measure(
        self, replica_id: str, url: str, answer: Answer
    ) -> tuple[tuple[ClockNotice, ...], float | None]:
        """Counted only for an exchange to the peer's declared URL or to a seed: an answer
        from elsewhere that claims the peer's id says nothing about the peer's clock."""
        if self.clocks is None or answer.time is None or replica_id == self.replica.id:
            return (), None
        url = url.rstrip("/")
        if url not in self.seeds and not self._declared(replica_id, url):
            return (), None
        notices = self.clocks.measured(replica_id, answer.time, answer.sent, answer.received)
        return tuple(notices), self.clocks.offset(replica_id)

    def outlier(self, now: float) -> tuple[Outlier | None, tuple[ClockNotice, ...]]:
        """Whether this replica's clock is the outlier at ``now``, and the transition."""
        if self.clocks is None:
            return None, ()
        notices = tuple(self.clocks.check(now))
        return self.clocks.current, notices
