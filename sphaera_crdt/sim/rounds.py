"""When simulated replicas exchange: rounds, eager pushes and one exchange per peer at a time.

The decisions are :mod:`sphaera_crdt.core.gossip`'s, the same a node makes in
:class:`sphaera_crdt.net.gossip.Gossip`: targets are drawn by
:func:`~sphaera_crdt.core.gossip.choose`, failing peers wait as
:class:`~sphaera_crdt.core.gossip.Backoff` says, pushes follow
:class:`~sphaera_crdt.core.gossip.PushSchedule`, and an exchange's deadline is
:func:`~sphaera_crdt.core.gossip.exchange_timeout`. This module only runs them on the
simulated clock, where a node runs them with asyncio.

Theory of operation
-------------------
* **Rounds.** A replica's first round starts ``uniform(interval/2, interval)`` after it
  starts (nodes started together do not gossip in lockstep); every later one ``interval``
  after the previous one started, whatever its exchanges are doing. A round exchanges with
  ``fanout`` distinct targets, other replicas that are not backing off and have no
  exchange in flight with this one, one after another: each exchange starts when the one
  before it ended or ``round_stagger`` after that one started. A lost message thus costs
  its exchange a timeout, never the next round, and delays the rest of its round by at
  most the stagger.
* **Backoff.** A failed exchange makes its peer wait ``interval * 2**(failures-1)``
  seconds (capped) before it is chosen again; a success clears it. Membership is not
  simulated: every replica knows every other (in a node, peers come from
  ``replica:<id>`` entities and seeds).
* **Eager push.** A local change asks for a push, which starts ``DEBOUNCE`` seconds later
  and exchanges with every target; changes made meanwhile start another when it ends.
* **One exchange per peer.** Exchanges with one peer are serialised (the per-URL lock of
  the node): a push to a peer with an exchange in flight waits for it to end.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..core.gossip import (
    DEBOUNCE,
    Backoff,
    PushSchedule,
    choose,
    exchange_timeout,
    round_stagger,
)
from .cluster import SimCluster
from .network import Network

__all__ = ["Outcome", "RoundDriver", "Timing"]


class Outcome(Enum):
    """How one exchange ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # an eager push to a peer known to have everything


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Gossip interval, fanout and the exchange deadline, in simulated seconds."""

    interval: float = 1.0
    fanout: int = 2
    debounce: float = DEBOUNCE

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.fanout < 1 or self.debounce < 0:
            raise ValueError("interval must be positive, fanout at least 1, debounce >= 0")

    @property
    def timeout(self) -> float:
        return exchange_timeout(self.interval)

    @property
    def stagger(self) -> float:
        return round_stagger(self.interval, self.fanout)


Finish = Callable[[Outcome], None]
#: ``exchange(node, peer, push, finish)`` runs one exchange and calls ``finish`` once;
#: ``push`` is what ``begin_push`` returned for an eager push, ``None`` in a round.
Exchange = Callable[[int, int, object, Finish], None]


@dataclass(slots=True)
class _NodeRounds:
    incarnation: int
    backoff: Backoff[int] = field(default_factory=Backoff)
    busy: dict[int, deque[Callable[[], None]]] = field(default_factory=dict)
    schedule: PushSchedule = field(default_factory=PushSchedule)


class RoundDriver:
    """Runs rounds and eager pushes for every replica of ``cluster``.

    Args:
        cluster: The replicas.
        network: Its loop is the clock rounds run on.
        timing: Interval, fanout, debounce.
        rng: Chooses targets and round phases.
        exchange: One exchange of the strategy being simulated.
        begin_push: Called with a replica's number as an eager push begins; what it
            returns is handed to each of the push's exchanges. ``None``: no eager pushes
            (only rounds carry changes).
        begin_round: Called with a replica's number as each of its rounds begins.
    """

    def __init__(
        self,
        cluster: SimCluster,
        network: Network,
        timing: Timing,
        rng: random.Random,
        exchange: Exchange,
        *,
        begin_push: Callable[[int], object] | None = None,
        begin_round: Callable[[int], object] | None = None,
    ) -> None:
        self.cluster = cluster
        self.loop = network.loop
        self.timing = timing
        self._begin_push = begin_push
        self._begin_round = begin_round
        self._rng = rng
        self._exchange = exchange
        self._nodes = [_NodeRounds(incarnation=0) for _ in cluster.nodes]
        self.rounds = 0

    @property
    def eager(self) -> bool:
        return self._begin_push is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, index: int) -> None:
        """Start replica ``index``'s rounds (at start and after a restart)."""
        node = self.cluster.nodes[index]
        self._nodes[index] = _NodeRounds(incarnation=node.incarnation)
        interval = self.timing.interval
        self.loop.later(
            self._rng.uniform(interval / 2, interval), self._round, index, node.incarnation
        )

    def _current(self, index: int, incarnation: int) -> bool:
        node = self.cluster.nodes[index]
        return node.up and node.incarnation == incarnation

    # -- rounds ----------------------------------------------------------------------------

    def _round(self, index: int, incarnation: int) -> None:
        if not self._current(index, incarnation):
            return
        self.rounds += 1
        self.loop.later(self.timing.interval, self._round, index, incarnation)
        if self._begin_round is not None:
            self._begin_round(index)
        self._one_after_another(index, incarnation, self.choose(index, self.timing.fanout))

    def _one_after_another(self, index: int, incarnation: int, targets: list[int]) -> None:
        """A round's exchanges: each starts when the one before it ended, or ``stagger``
        seconds after that one started if it has not."""
        if not targets or not self._current(index, incarnation):
            return
        peer, rest = targets[0], targets[1:]
        started = [False]

        def next_one() -> None:
            if not started[0]:
                started[0] = True
                self._one_after_another(index, incarnation, rest)

        self._guarded(index, peer, None, next_one)
        if rest:
            self.loop.later(self.timing.stagger, next_one)

    def choose(self, index: int, count: int) -> list[int]:
        """``count`` distinct random targets of replica ``index`` (fewer if there are not):
        not backing off, no exchange in flight."""
        state = self._nodes[index]
        due, busy, now = state.backoff.due, state.busy, self.loop.now
        return choose(
            self._rng,
            count,
            len(self.cluster.nodes) - 1,
            lambda number: number + (number >= index),
            lambda peer: peer not in busy and due(peer, now),
        )

    def targets(self, index: int) -> list[int]:
        """Every peer of replica ``index`` that is not backing off."""
        due, now = self._nodes[index].backoff.due, self.loop.now
        return [peer for peer in range(len(self.cluster.nodes)) if peer != index and due(peer, now)]

    # -- eager push ------------------------------------------------------------------------

    def push_soon(self, index: int) -> None:
        """Push local changes to every target shortly (a burst goes in one push)."""
        if self._begin_push is None:
            return
        state = self._nodes[index]
        if not state.schedule.request():
            return
        state.schedule.started()
        self.loop.later(self.timing.debounce, self._push, index, state.incarnation)

    def _push(self, index: int, incarnation: int) -> None:
        if not self._current(index, incarnation) or self._begin_push is None:
            return
        state = self._nodes[index]
        state.schedule.begin()
        push = self._begin_push(index)

        def ended() -> None:
            if self._current(index, incarnation) and state.schedule.end():
                self.loop.later(self.timing.debounce, self._push, index, incarnation)

        self._exchange_all(index, self.targets(index), push, done=ended)

    # -- exchanges -------------------------------------------------------------------------

    def _exchange_all(
        self, index: int, targets: list[int], push: object, *, done: Callable[[], None]
    ) -> None:
        if not targets:
            done()
            return
        remaining = [len(targets)]

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                done()

        for peer in targets:
            self._guarded(index, peer, push, one_done)

    def _guarded(self, index: int, peer: int, push: object, done: Callable[[], None]) -> None:
        """One exchange under the per-peer lock, with backoff kept up to date."""
        state = self._nodes[index]
        incarnation = state.incarnation

        def run() -> None:
            self._exchange(index, peer, push, finish)

        def finish(outcome: Outcome) -> None:
            if not self._current(index, incarnation):
                return
            if outcome is Outcome.FAILED:
                state.backoff.failed(peer, self.loop.now, self.timing.interval)
            elif outcome is Outcome.OK:
                state.backoff.succeeded(peer)
            waiting = state.busy[peer]
            if waiting:
                waiting.popleft()()
            else:
                del state.busy[peer]
            done()

        waiting = state.busy.get(peer)
        if waiting is None:
            state.busy[peer] = deque()
            run()
        else:
            waiting.append(run)
