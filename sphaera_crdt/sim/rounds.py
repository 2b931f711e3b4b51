"""When replicas exchange: periodic rounds, eager pushes, backoff and one exchange per peer.

This mirrors the scheduling of :class:`sphaera_crdt.net.gossip.Gossip`, which is written
against asyncio and a node and cannot be driven by the simulated clock; the numbers below
are that module's (and ``net.client.peer_timeout``'s), and a test checks they stay equal.

Theory of operation
-------------------
* **Rounds.** A replica's first round starts ``uniform(interval/2, interval)`` after it
  starts (nodes started together do not gossip in lockstep). A round exchanges with
  ``fanout`` distinct targets at once and ends when every exchange has ended (answered,
  failed or timed out); the next round starts ``interval`` after this one started, or at
  once if the round took longer. A lost message therefore holds a replica's gossip up
  until its request times out, as it does in a node.
* **Targets** are the other replicas that are not backing off. A failed exchange makes
  its peer wait ``interval * 2**(failures-1)`` seconds (capped at
  ``max(interval, min(30, 16 * interval))``) before it is chosen again; a success clears
  it. Membership is not simulated: every replica knows every other (in a node, peers come
  from ``replica:<id>`` entities and seeds).
* **Eager push.** After a local change a replica waits ``DEBOUNCE`` seconds, then
  exchanges with every target; changes made meanwhile set a flag that starts another
  push when this one ends.
* **One exchange per peer.** Exchanges with one peer are serialised (the per-URL lock of
  the node): a second one waits for the first to end.

Choosing ``fanout`` targets is ``O(fanout)`` (rejection sampling over replica numbers),
never a sort of all N replicas per round, which would make a round cost ``O(N^2)``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .cluster import SimCluster
from .network import Network

__all__ = [
    "BACKOFF_INTERVALS",
    "DEBOUNCE",
    "MAX_BACKOFF",
    "Outcome",
    "RoundDriver",
    "Timing",
    "peer_timeout",
]

#: Seconds local changes are gathered before one push (``net.gossip.DEBOUNCE``).
DEBOUNCE: Final = 0.005
#: A failing peer is retried after at most this many intervals (``net.gossip``) ...
BACKOFF_INTERVALS: Final = 16
#: ... and at most this many seconds (``net.gossip.MAX_BACKOFF``).
MAX_BACKOFF: Final = 30.0
#: Bounds of one exchange's deadline (``net.client.MIN_TIMEOUT`` / ``MAX_TIMEOUT``).
MIN_TIMEOUT: Final = 1.0
MAX_TIMEOUT: Final = 5.0


def peer_timeout(interval: float) -> float:
    """The deadline of one exchange: three gossip intervals, kept within 1-5 seconds."""
    return min(MAX_TIMEOUT, max(MIN_TIMEOUT, 3 * interval))


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
        return peer_timeout(self.interval)


Finish = Callable[[Outcome], None]
#: ``exchange(node, peer, eager, finish)`` runs one exchange and calls ``finish`` once.
Exchange = Callable[[int, int, bool, Finish], None]


@dataclass(slots=True)
class _NodeRounds:
    incarnation: int
    backoff: dict[int, tuple[int, float]] = field(default_factory=dict)
    busy: dict[int, deque[Callable[[], None]]] = field(default_factory=dict)
    dirty: bool = False
    pushing: bool = False


class RoundDriver:
    """Runs rounds and eager pushes for every replica of ``cluster``.

    Args:
        cluster: The replicas.
        network: Its loop is the clock rounds run on.
        timing: Interval, fanout, debounce.
        rng: Chooses targets and round phases.
        exchange: One exchange of the strategy being simulated.
        eager: Whether local changes are pushed at once (else only rounds carry them).
    """

    def __init__(
        self,
        cluster: SimCluster,
        network: Network,
        timing: Timing,
        rng: random.Random,
        exchange: Exchange,
        *,
        eager: bool,
    ) -> None:
        self.cluster = cluster
        self.loop = network.loop
        self.timing = timing
        self.eager = eager
        self._rng = rng
        self._exchange = exchange
        self._nodes = [_NodeRounds(incarnation=0) for _ in cluster.nodes]
        self.rounds = 0

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
        started = self.loop.now
        targets = self.choose(index, self.timing.fanout)

        def ended() -> None:
            if self._current(index, incarnation):
                delay = max(0.0, self.timing.interval - (self.loop.now - started))
                self.loop.later(delay, self._round, index, incarnation)

        self._exchange_all(index, targets, eager=False, done=ended)

    def choose(self, index: int, count: int) -> list[int]:
        """``count`` distinct random targets of replica ``index`` (fewer if there are not)."""
        size = len(self.cluster.nodes)
        backoff = self._nodes[index].backoff
        now = self.loop.now
        rng = self._rng
        chosen: list[int] = []
        for _ in range(8 * count + 8):
            if len(chosen) == count:
                return chosen
            peer = rng.randrange(size - 1)
            peer += peer >= index
            if peer not in chosen and self._due(backoff, peer, now):
                chosen.append(peer)
        # Most peers are backing off: choose among the eligible ones explicitly.
        eligible = [
            peer
            for peer in range(size)
            if peer != index and peer not in chosen and self._due(backoff, peer, now)
        ]
        extra = min(count - len(chosen), len(eligible))
        return chosen + rng.sample(eligible, extra)

    def targets(self, index: int) -> list[int]:
        """Every peer of replica ``index`` that is not backing off."""
        backoff = self._nodes[index].backoff
        now = self.loop.now
        return [
            peer
            for peer in range(len(self.cluster.nodes))
            if peer != index and self._due(backoff, peer, now)
        ]

    @staticmethod
    def _due(backoff: dict[int, tuple[int, float]], peer: int, now: float) -> bool:
        entry = backoff.get(peer)
        return entry is None or now >= entry[1]

    # -- eager push ------------------------------------------------------------------------

    def push_soon(self, index: int) -> None:
        """Push local changes to every target shortly (a burst goes in one push)."""
        if not self.eager:
            return
        state = self._nodes[index]
        state.dirty = True
        if state.pushing:
            return
        state.pushing = True
        self.loop.later(self.timing.debounce, self._push, index, state.incarnation)

    def _push(self, index: int, incarnation: int) -> None:
        if not self._current(index, incarnation):
            return
        state = self._nodes[index]
        state.dirty = False

        def ended() -> None:
            if not self._current(index, incarnation):
                return
            if state.dirty:
                self.loop.later(self.timing.debounce, self._push, index, incarnation)
            else:
                state.pushing = False

        self._exchange_all(index, self.targets(index), eager=True, done=ended)

    # -- exchanges -------------------------------------------------------------------------

    def _exchange_all(
        self, index: int, targets: list[int], *, eager: bool, done: Callable[[], None]
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
            self._guarded(index, peer, eager, one_done)

    def _guarded(self, index: int, peer: int, eager: bool, done: Callable[[], None]) -> None:
        """One exchange under the per-peer lock, with backoff kept up to date."""
        state = self._nodes[index]
        incarnation = state.incarnation

        def run() -> None:
            self._exchange(index, peer, eager, finish)

        def finish(outcome: Outcome) -> None:
            if not self._current(index, incarnation):
                return
            if outcome is Outcome.FAILED:
                self._failed(state, peer)
            elif outcome is Outcome.OK:
                state.backoff.pop(peer, None)
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

    def _failed(self, state: _NodeRounds, peer: int) -> None:
        failures = state.backoff.get(peer, (0, 0.0))[0] + 1
        interval = self.timing.interval
        cap = max(interval, min(MAX_BACKOFF, BACKOFF_INTERVALS * interval))
        delay = min(cap, interval * 2 ** min(failures - 1, 32))
        state.backoff[peer] = (failures, self.loop.now + delay)
