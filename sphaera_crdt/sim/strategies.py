"""The strategies compared: the project's gossip and two baselines, behind one protocol.

* ``gossip``: the project's gossip (the machine of
  :mod:`sphaera_crdt.core.gossip` that a node runs, :mod:`.driver`): eager pushes of a writer's own
  changes to every peer, and push-pull rounds with ``fanout`` peers that pull, then push
  exactly what the peer's answer shows it lacks.
* ``gossip-rounds``: the same without eager pushes, so that only the epidemic rounds
  spread a change: the part of the gossip that the epidemic theory describes.
* ``full-state``: push-pull rounds with ``fanout`` peers that send ``replica.delta()``
  (everything) both ways: no state vectors, no knowledge of peers.
* ``naive``: every transaction's update, as :meth:`Replica.on_update` hands it out, is
  sent to every peer; a replica forwards what was new to it to every peer but the sender
  (flooding). No rounds, no acknowledgements, no repair.

The ideal epidemic (no bytes, the theory baseline) is not a strategy over replicas; see
:mod:`.epidemic`.
"""

from __future__ import annotations

import functools
import random
from typing import Final, Protocol

from ..core import gossip, sync, updates
from ..core.gossip import Target
from .cluster import SimCluster
from .driver import Finish, Outcome, SimDriver, Timing, url_of
from .network import Network

__all__ = [
    "STRATEGIES",
    "FullStatePushPull",
    "NaiveFlood",
    "ProjectGossip",
    "Strategy",
    "make_strategy",
    "payload_size",
]

STRATEGIES: Final = ("gossip", "gossip-rounds", "full-state", "naive")


class Strategy(Protocol):
    """How replicas spread changes; the runner wires it to the cluster's events."""

    name: str

    @property
    def rounds_run(self) -> int:
        """Gossip rounds the replicas have started so far."""

    def start(self) -> None:
        """Begin (schedule every replica's rounds)."""

    def local_change(self, index: int) -> None:
        """Replica ``index`` made a local change."""

    def crashed(self, index: int) -> None:
        """Replica ``index`` crashed: forget what it kept in memory."""

    def restarted(self, index: int) -> None:
        """Replica ``index`` restarted."""


def payload_size(messages: list[sync.SyncMessage]) -> int:
    """Bytes of the updates a sync body carries (an empty update carries nothing)."""
    return sum(
        len(message.payload)
        for message in messages
        if message.type is not sync.MessageType.STEP1 and message.payload != sync.EMPTY_UPDATE
    )


class ProjectGossip:
    """The project's gossip: each exchange is the machine's
    :class:`~sphaera_crdt.core.gossip.PeerExchange`, its requests sent over the network in
    turn, answered by the callee's machine (what a node's ``POST /v1/sync`` does).

    Args:
        cluster: The replicas.
        network: Carries the sync bodies.
        timing: Interval, fanout, debounce.
        rng: Chooses targets and phases.
        eager: Push local changes at once (the node does); off leaves only the rounds.
    """

    def __init__(
        self,
        cluster: SimCluster,
        network: Network,
        timing: Timing,
        rng: random.Random,
        *,
        eager: bool = True,
    ) -> None:
        self.name = "gossip" if eager else "gossip-rounds"
        self.cluster = cluster
        self.network = network
        self.timing = timing
        self.driver = SimDriver(cluster, network, timing, rng, self.exchange, eager=eager)

    @property
    def rounds_run(self) -> int:
        return self.driver.rounds

    def start(self) -> None:
        for node in self.cluster.nodes:
            self.driver.start(node.index)

    def local_change(self, index: int) -> None:
        """Nothing: the replica's record changes reach its machine."""

    def crashed(self, index: int) -> None:
        self.driver.crashed(index)

    def restarted(self, index: int) -> None:
        self.driver.start(index, fresh=True)

    def exchange(self, index: int, peer: int, push: object, finish: Finish) -> None:
        """One exchange with ``peer``: a round's (``push`` is ``None``) or an eager push's."""
        machine = self.driver.machines[index]
        target = Target(url=url_of(peer), peer_id=self.cluster.nodes[peer].id)
        if isinstance(push, gossip.StartPush):
            exchange = machine.push_exchange(target, push.since)
        else:
            exchange = machine.round_exchange(target)
        request = exchange.start()
        if request is None:
            finish(Outcome.SKIPPED)
            return
        self._send(index, peer, exchange, request, finish)

    def _send(
        self,
        index: int,
        peer: int,
        exchange: gossip.PeerExchange,
        request: gossip.Request,
        finish: Finish,
    ) -> None:
        def answered(answer: bytes) -> None:
            machine = self.driver.machines[index]
            outcome = machine.answered(
                exchange, url_of(peer), gossip.Answer(body=answer), self.driver.loop.now
            )
            if outcome.merged:
                self.cluster.touched(index)
            if outcome.send is None:
                finish(Outcome.OK)
            else:
                self._send(index, peer, exchange, outcome.send, finish)

        self.network.request(
            index,
            peer,
            request.body,
            payload=request.payload,
            serve=lambda body: self.serve(peer, index, body, pushed=request.payload > 0),
            answered=answered,
            failed=lambda: finish(Outcome.FAILED),
            timeout=self.timing.timeout,
        )

    def serve(self, index: int, caller: int, body: bytes, *, pushed: bool) -> tuple[bytes, int]:
        """Answer a sync request at replica ``index`` (a node's ``POST /v1/sync``)."""
        machine = self.driver.machines[index]
        result = machine.request_received(body, self.cluster.nodes[caller].id)
        if pushed:
            self.cluster.touched(index)
        return result.response, payload_size(sync.decode_messages(result.response))


class FullStatePushPull:
    """Push-pull rounds that send the whole state both ways.

    The request is one y-protocols UPDATE message with ``replica.delta()``; the callee
    merges it with :func:`sync.handle_sync` and answers STEP2 with its own full state,
    followed by the STEP1 that ``handle_sync`` answered.
    """

    name = "full-state"

    def __init__(
        self, cluster: SimCluster, network: Network, timing: Timing, rng: random.Random
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.timing = timing
        self.driver = SimDriver(cluster, network, timing, rng, self.exchange)

    @property
    def rounds_run(self) -> int:
        return self.driver.rounds

    def start(self) -> None:
        for node in self.cluster.nodes:
            self.driver.start(node.index)

    def local_change(self, index: int) -> None:
        """Nothing: the next round carries it."""

    def crashed(self, index: int) -> None:
        """Nothing is kept between rounds."""

    def restarted(self, index: int) -> None:
        self.driver.start(index, fresh=True)

    def exchange(self, index: int, peer: int, push: object, finish: Finish) -> None:
        full = self.cluster.nodes[index].replica.delta()
        body = sync.encode_messages([sync.SyncMessage(type=sync.MessageType.UPDATE, payload=full)])

        def answered(answer: bytes) -> None:
            updates = [
                message.payload
                for message in sync.decode_messages(answer)
                if message.type is not sync.MessageType.STEP1
            ]
            sync.merge_update(self.cluster.nodes[index].replica, updates)
            self.cluster.touched(index)
            finish(Outcome.OK)

        self.network.request(
            index,
            peer,
            body,
            payload=len(full),
            serve=functools.partial(self.serve, peer),
            answered=answered,
            failed=lambda: finish(Outcome.FAILED),
            timeout=self.timing.timeout,
        )

    def serve(self, index: int, body: bytes) -> tuple[bytes, int]:
        replica = self.cluster.nodes[index].replica
        result = sync.handle_sync(replica, body)
        self.cluster.touched(index)
        full = replica.delta()
        answer = sync.SyncMessage(type=sync.MessageType.STEP2, payload=full).encode()
        return answer + result.response, len(full)


class NaiveFlood:
    """Every transaction's update to every peer; receivers forward what is new to them.

    Args:
        cluster: The replicas.
        network: Carries raw updates (the body of ``POST /v1/updates``).
        skip_known: Count, but do not merge, an update whose items the receiver already
            holds (its state vector reaches the end of every clock range the update
            carries). Merging it would change nothing; skipping keeps ``O(N^2)``
            deliveries affordable.
    """

    name = "naive"

    def __init__(self, cluster: SimCluster, network: Network, *, skip_known: bool = True) -> None:
        self.cluster = cluster
        self.network = network
        self.skip_known = skip_known
        self._outbox: list[list[bytes]] = [[] for _ in cluster.nodes]
        self._states: dict[bytes, dict[int, int]] = {}
        self._unsubscribe = [
            node.replica.on_update(self._outbox[node.index].append) for node in cluster.nodes
        ]

    @property
    def rounds_run(self) -> int:
        return 0

    def start(self) -> None:
        """Nothing runs until a change is made."""

    def local_change(self, index: int) -> None:
        self._flush(index, None)

    def crashed(self, index: int) -> None:
        self._unsubscribe[index]()
        self._outbox[index].clear()

    def restarted(self, index: int) -> None:
        node = self.cluster.nodes[index]
        self._outbox[index].clear()
        self._unsubscribe[index] = node.replica.on_update(self._outbox[index].append)

    def _flush(self, index: int, source: int | None) -> None:
        outbox = self._outbox[index]
        updates = [update for update in outbox if update != sync.EMPTY_UPDATE]
        outbox.clear()
        send = self.network.send
        for update in updates:
            size = len(update)
            for peer in range(len(self.cluster.nodes)):
                if peer != index and peer != source:
                    deliver = functools.partial(self._arrive, peer, index, update)
                    send(index, peer, size, deliver, payload=size)

    def _arrive(self, index: int, source: int, update: bytes) -> None:
        node = self.cluster.nodes[index]
        if self.skip_known:
            state = self._states.get(update)
            if state is None:
                # The clocks the update reaches, per client (``pycrdt.get_state`` would not
                # do: it names only clients whose structs the update carries from clock 0).
                ranges = updates.shape(update).ranges
                state = self._states[update] = {client: end for client, (_, end) in ranges.items()}
            if sync.covers(node.sv, state):
                return
        node.replica.merge(update)
        self.cluster.touched(index)
        self._flush(index, source)


def make_strategy(
    name: str, cluster: SimCluster, network: Network, timing: Timing, rng: random.Random
) -> Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`).

    Raises:
        ValueError: No strategy has that name.
    """
    if name == "gossip":
        return ProjectGossip(cluster, network, timing, rng, eager=True)
    if name == "gossip-rounds":
        return ProjectGossip(cluster, network, timing, rng, eager=False)
    if name == "full-state":
        return FullStatePushPull(cluster, network, timing, rng)
    if name == "naive":
        return NaiveFlood(cluster, network)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
