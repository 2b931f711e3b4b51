"""The simulator's driver: every replica's :class:`~sphaera_crdt.core.gossip.GossipMachine`
(the one a node runs) fed by the simulated clock, its commands carried over the simulated
network.

Nothing here decides anything: when rounds and pushes run, whom they contact, how long a
failing peer waits and whether an exchange waits for another with the same peer are the
machine's answers, so the simulator runs the node's protocol by construction. The driver
turns deadlines into events of the :class:`~.clock.EventLoop` and exchanges into
:meth:`~.network.Network.request` calls. Membership is fixed: every replica knows every
other (a node learns its peers from ``replica:<id>`` entities and seeds).

A strategy brings one exchange (``exchange(node, peer, push, finish)``): the project's
gossip (:class:`~.strategies.ProjectGossip`) runs the machine's
:class:`~sphaera_crdt.core.gossip.PeerExchange`, a baseline its own bodies; rounds, pushes
and backoff are the machine's for all of them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import overload

from ..core.gossip import DEBOUNCE, GossipMachine, Target, exchange_timeout, round_stagger
from ..core.views import RecordChange
from .cluster import SimCluster
from .network import Network

__all__ = [
    "Exchange",
    "Finish",
    "Outcome",
    "Peers",
    "SimDriver",
    "Timing",
    "index_of",
    "url_of",
]


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
#: ``push`` is the :class:`~sphaera_crdt.core.gossip.StartPush` of an eager push, ``None``
#: in a round.
Exchange = Callable[[int, int, object, Finish], None]


def url_of(index: int) -> str:
    """A replica's address on the simulated network (sorted as the numbers are)."""
    return f"sim:{index:07d}"


def index_of(url: str) -> int:
    return int(url.removeprefix("sim:"))


class Peers(Sequence[Target]):
    """Every replica but one, in URL order: a view of one list of all N replicas.

    Every replica knows every other, so a list of peers per replica would hold N^2
    targets (10^8 at N = 10,000); the machines share one list through these views.

    Args:
        everyone: A target per replica, in replica number (and so URL) order.
        skip: The number of the replica whose peers these are.
    """

    __slots__ = ("_everyone", "_skip")

    def __init__(self, everyone: Sequence[Target], skip: int) -> None:
        if not 0 <= skip < len(everyone):
            raise ValueError(f"no replica {skip} among {len(everyone)}")
        self._everyone = everyone
        self._skip = skip

    def __len__(self) -> int:
        return len(self._everyone) - 1

    @overload
    def __getitem__(self, position: int) -> Target: ...

    @overload
    def __getitem__(self, position: slice) -> Sequence[Target]: ...

    def __getitem__(self, position: int | slice) -> Target | Sequence[Target]:
        if isinstance(position, slice):
            return [self[number] for number in range(*position.indices(len(self)))]
        size = len(self)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError("peer position out of range")
        return self._everyone[position + (position >= self._skip)]

    def __iter__(self) -> Iterator[Target]:
        everyone, skip = self._everyone, self._skip
        return itertools.chain(
            itertools.islice(everyone, skip), itertools.islice(everyone, skip + 1, None)
        )


class SimDriver:
    """Feeds every replica's machine on the simulated clock and carries out its commands.

    Args:
        cluster: The replicas.
        network: Its loop is the clock.
        timing: Interval, fanout, debounce.
        rng: Every machine's source of random choices.
        exchange: One exchange of the strategy being simulated.
        eager: Run eager pushes (off: only rounds carry changes).
    """

    def __init__(
        self,
        cluster: SimCluster,
        network: Network,
        timing: Timing,
        rng: random.Random,
        exchange: Exchange,
        *,
        eager: bool = False,
    ) -> None:
        self.cluster = cluster
        self.loop = network.loop
        self.timing = timing
        self.eager = eager
        self._rng = rng
        self._exchange = exchange
        # one target per replica, shared by every machine's view of its peers
        self._everyone = tuple(Target(url=url_of(n.index), peer_id=n.id) for n in cluster.nodes)
        self.machines = [self._machine(node.index) for node in cluster.nodes]
        self._incarnations = [node.incarnation for node in cluster.nodes]
        self._unsubscribe: list[Callable[[], None] | None] = [None] * len(cluster.nodes)
        self.rounds = 0

    def _machine(self, index: int) -> GossipMachine:
        return GossipMachine(
            self.cluster.nodes[index].replica,
            interval=self.timing.interval,
            fanout=self.timing.fanout,
            debounce=self.timing.debounce,
            rng=self._rng,
            members=Peers(self._everyone, index),
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, index: int, *, fresh: bool = False) -> None:
        """Start replica ``index``'s rounds; ``fresh``: a restart, whose machine starts
        over (what it knew of its peers was in memory)."""
        node = self.cluster.nodes[index]
        if fresh:
            self.machines[index] = self._machine(index)
        self._incarnations[index] = node.incarnation
        if self.eager:
            self._watch(index)
        deadline = self.machines[index].first_round(self.loop.now)
        self.loop.at(deadline, self._round, index, node.incarnation)

    def crashed(self, index: int) -> None:
        unsubscribe = self._unsubscribe[index]
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe[index] = None

    def _watch(self, index: int) -> None:
        incarnation = self.cluster.nodes[index].incarnation

        def on_record(change: RecordChange) -> None:
            deadline = self.machines[index].record_changed(change, self.loop.now)
            if deadline is not None:
                self.loop.at(deadline, self._push, index, incarnation)

        self._unsubscribe[index] = self.cluster.nodes[index].replica.subscribe_records(on_record)

    def _current(self, index: int, incarnation: int) -> bool:
        node = self.cluster.nodes[index]
        return node.up and node.incarnation == incarnation

    # -- rounds ----------------------------------------------------------------------------

    def _round(self, index: int, incarnation: int) -> None:
        if not self._current(index, incarnation):
            return
        self.rounds += 1
        command = self.machines[index].round_due(self.loop.now)
        self.loop.at(command.next_round, self._round, index, incarnation)
        self._one_after_another(index, incarnation, list(command.targets), command.stagger)

    def _one_after_another(
        self, index: int, incarnation: int, targets: list[Target], stagger: float
    ) -> None:
        if not targets or not self._current(index, incarnation):
            return
        target, rest = targets[0], targets[1:]
        started = [False]

        def next_one() -> None:
            if not started[0]:
                started[0] = True
                self._one_after_another(index, incarnation, rest, stagger)

        self._guarded(index, target, None, next_one)
        if rest:
            self.loop.later(stagger, next_one)

    # -- eager push ------------------------------------------------------------------------

    def _push(self, index: int, incarnation: int) -> None:
        if not self._current(index, incarnation):
            return
        machine = self.machines[index]
        command = machine.push_due(self.loop.now)

        def ended() -> None:
            if self._current(index, incarnation):
                deadline = machine.push_ended(self.loop.now)
                if deadline is not None:
                    self.loop.at(deadline, self._push, index, incarnation)

        if not command.targets:
            ended()
            return
        remaining = [len(command.targets)]

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                ended()

        for target in command.targets:
            self._guarded(index, target, command, one_done)

    # -- exchanges -------------------------------------------------------------------------

    def _guarded(self, index: int, target: Target, push: object, done: Callable[[], None]) -> None:
        """One exchange, when the machine lets it run; its outcome goes back to it."""
        machine = self.machines[index]
        incarnation = self._incarnations[index]
        peer = index_of(target.url)

        def run() -> None:
            self._exchange(index, peer, push, finish)

        def finish(outcome: Outcome) -> None:
            if not self._current(index, incarnation):
                return
            if outcome is Outcome.FAILED:
                machine.failed(target.url, self.loop.now, remote=False)
            elif outcome is Outcome.OK:
                machine.succeeded(target.url)
            machine.release(target.url)
            done()

        if machine.acquire(target.url, run):
            run()
