"""The driver of :class:`sphaera_crdt.testing.Cluster`: every replica's
:class:`~sphaera_crdt.core.gossip.GossipMachine` (the one a node runs) fed by the cluster's
rounds, its requests and answers carried as messages of the cluster's in-memory network.

Nothing here decides anything: when rounds and pushes run, whom they contact, what each
request and answer holds, what a peer is known to hold and how long a failing peer waits
are the machine's answers; the driver turns its deadlines into rounds and its requests
into messages, and hands each delivered message to the machine it is for. Membership is
fixed, as in the simulator (:mod:`sphaera_crdt.sim.driver`): every replica is a peer of
every other, at the address ``cluster:<id>``; ``replica:<id>`` records play no part.

Time is given by the caller: a round (:meth:`ClusterDriver.tick`) runs at one instant, and
an exchange waiting for an answer fails at the first round past its deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal

from .core import Change, Replica
from .core.gossip import (
    Answer,
    GossipMachine,
    PeerExchange,
    Request,
    StartPush,
    Target,
    exchange_timeout,
)
from .core.views import RecordChange

__all__ = ["FANOUT", "INTERVAL", "ClusterDriver", "MessageKind", "Post"]

#: Seconds between a replica's rounds: one round of :meth:`Cluster.pump`.
INTERVAL: Final = 1.0
#: Peers each round contacts (the node's default).
FANOUT: Final = 2
#: Slack when a deadline is compared with a round's time (both are sums of floats).
_SLACK: Final = 1e-9

#: What a message holds: a raw delta, or a sync request or answer of the gossip.
MessageKind = Literal["delta", "request", "answer"]
#: ``post(src, dst, body, kind)`` puts a message on the network and returns its number.
Post = Callable[[str, str, bytes, MessageKind], int]
Finish = Callable[[bool | None], None]  # True: answered; False: failed; None: nothing sent


@dataclass(slots=True, kw_only=True)
class _Open:
    """An exchange waiting for the answer to its request."""

    src: str
    target: Target
    exchange: PeerExchange
    finish: Finish
    deadline: float


class ClusterDriver:
    """Feeds every replica's machine and carries out its commands as messages.

    Args:
        replicas: The replicas, by id (every one a peer of every other).
        post: Puts a message on the network.
        rng: Every machine's source of random choices.
        now: The machines' clock.
    """

    def __init__(
        self,
        replicas: Mapping[str, Replica],
        post: Post,
        rng: random.Random,
        now: Callable[[], float],
    ) -> None:
        self._replicas = replicas
        self._post = post
        self._rng = rng
        self._now = now
        self.machines: dict[str, GossipMachine] = {}
        self._round_at: dict[str, float] = {}
        self._push_at: dict[str, float] = {}
        self._open: dict[int, _Open] = {}  # request number -> its exchange
        self._answers: dict[int, int] = {}  # answer number -> request number
        self._stalled: list[Callable[[], None]] = []  # round exchanges after the stagger
        self._unsubscribe: list[Callable[[], None]] = []

    def restart(self) -> None:
        """(Re)start every replica's machine, every other replica its peer: what the
        machines knew of their peers and the exchanges under way are dropped."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for state in (self.machines, self._push_at, self._open, self._answers):
            state.clear()
        self._stalled.clear()
        replicas = self._replicas
        for replica_id, replica in replicas.items():
            # in URL order, as the machine takes them
            peers = sorted(p for p in replicas if p != replica_id)
            members = [Target(url=f"cluster:{p}", peer_id=p) for p in peers]
            machine = GossipMachine(
                replica, interval=INTERVAL, fanout=FANOUT, rng=self._rng, members=members
            )
            self.machines[replica_id] = machine
            self._round_at[replica_id] = machine.first_round(self._now())
            watch = partial(self._record_changed, replica_id)
            self._unsubscribe.append(replica.subscribe_records(watch))

    # -- events ----------------------------------------------------------------------------

    def tick(self) -> None:
        """A round's instant: exchanges past their deadline fail, then every due eager
        push and round starts."""
        now = self._now()
        for number, waiting in list(self._open.items()):
            if waiting.deadline <= now + _SLACK:
                del self._open[number]
                waiting.finish(False)
        self._answers = {a: r for a, r in self._answers.items() if r in self._open}
        for replica_id, machine in self.machines.items():
            push_at = self._push_at.get(replica_id)
            if push_at is not None and push_at <= now + _SLACK:
                del self._push_at[replica_id]
                self._push(replica_id, machine.push_due(now))
            if self._round_at[replica_id] <= now + _SLACK:
                command = machine.round_due(now)
                self._round_at[replica_id] = command.next_round
                self._one_after_another(replica_id, list(command.targets))

    def stagger(self) -> bool:
        """The network is quiet: round exchanges still waiting for the one before them
        start (the stagger is shorter than a round). Whether any started."""
        stalled, self._stalled = self._stalled, []
        for start_next in stalled:
            start_next()
        return bool(stalled)

    def request_arrived(self, number: int, src: str, dst: str, body: bytes) -> list[Change]:
        """Request ``number`` from ``src`` reached ``dst``: its machine answers it."""
        result = self.machines[dst].request_received(body, src)
        self._answers[self._post(dst, src, result.response, "answer")] = number
        return result.changes

    def answer_arrived(self, number: int, body: bytes) -> list[Change]:
        """Answer ``number`` came back: its exchange goes on. A duplicate answer, or one
        its exchange gave up waiting for, is ignored (as over HTTP)."""
        waiting = self._open.pop(self._answers.pop(number, -1), None)
        if waiting is None:
            return []
        exchange = waiting.exchange
        before = len(exchange.changes)
        outcome = self.machines[waiting.src].answered(
            exchange, waiting.target.url, Answer(body=body), self._now()
        )
        if outcome.send is None:
            waiting.finish(True)
        else:
            self._request(waiting.src, waiting.target, exchange, outcome.send, waiting.finish)
        return exchange.changes[before:]

    def _record_changed(self, replica_id: str, change: RecordChange) -> None:
        deadline = self.machines[replica_id].record_changed(change, self._now())
        if deadline is not None:
            self._push_at[replica_id] = deadline

    # -- commands --------------------------------------------------------------------------

    def _one_after_another(self, src: str, targets: list[Target]) -> None:
        if not targets:
            return
        target, rest = targets[0], targets[1:]
        started = [False]

        def next_one() -> None:
            if not started[0]:
                started[0] = True
                self._one_after_another(src, rest)

        self._guarded(src, target, partial(self.machines[src].round_exchange, target), next_one)
        if rest:
            self._stalled.append(next_one)

    def _push(self, src: str, command: StartPush) -> None:
        machine = self.machines[src]
        remaining = [len(command.targets)]

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] <= 0:
                deadline = machine.push_ended(self._now())
                if deadline is not None:
                    self._push_at[src] = deadline

        if not command.targets:
            one_done()
        for target in command.targets:
            self._guarded(
                src, target, partial(machine.push_exchange, target, command.since), one_done
            )

    def _guarded(
        self, src: str, target: Target, make: Callable[[], PeerExchange], done: Callable[[], None]
    ) -> None:
        """One exchange, when the machine lets it run; its outcome goes back to it."""
        machine = self.machines[src]

        def run() -> None:
            exchange = make()
            request = exchange.start()
            if request is None:
                finish(None)
            else:
                self._request(src, target, exchange, request, finish)

        def finish(ok: bool | None) -> None:
            if ok is False:
                machine.failed(target.url, self._now(), remote=False)
            elif ok:
                machine.succeeded(target.url)
            machine.release(target.url)
            done()

        if machine.acquire(target.url, run):
            run()

    def _request(
        self, src: str, target: Target, exchange: PeerExchange, request: Request, finish: Finish
    ) -> None:
        assert target.peer_id is not None  # every member is known by id
        number = self._post(src, target.peer_id, request.body, "request")
        deadline = self._now() + exchange_timeout(INTERVAL)
        self._open[number] = _Open(
            src=src, target=target, exchange=exchange, finish=finish, deadline=deadline
        )
