"""The project's gossip on the simulator: the decisions of :mod:`sphaera_crdt.core.gossip`
(the ones a node makes), carried by the simulated network.

Each replica has a :class:`~sphaera_crdt.core.gossip.GossipPlanner`, as a node's
:class:`~sphaera_crdt.net.gossip.Gossip` has. An exchange is a
:class:`~sphaera_crdt.core.gossip.PeerExchange`: its requests are sent over the network in
turn, the callee answers with :func:`sphaera_crdt.core.gossip.answer` (what a node's
``POST /v1/sync`` route does), and the caller hands each answer back to the exchange, which
merges it, learns from it and says what to send next. Eager pushes start on the record
changes :func:`~sphaera_crdt.core.gossip.pushes_eagerly` selects, as in a node.

Nothing here chooses what to send: a test swaps the planner's decisions for counting
wrappers and checks that the bytes on the simulated wire are theirs.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..core import gossip, sync
from ..core.views import RecordChange
from .cluster import SimCluster
from .network import Network
from .rounds import Finish, Outcome, RoundDriver, Timing

__all__ = ["ProjectGossip", "payload_size"]


def payload_size(messages: list[sync.SyncMessage]) -> int:
    """Bytes of the updates a sync body carries (an empty update carries nothing)."""
    return sum(
        len(message.payload)
        for message in messages
        if message.type is not sync.MessageType.STEP1 and message.payload != sync.EMPTY_UPDATE
    )


class ProjectGossip:
    """Eager pushes and push-pull rounds with per-peer knowledge, on every replica.

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
        self.eager = eager
        self.planners = [gossip.GossipPlanner(node.replica) for node in cluster.nodes]
        self._unsubscribe: list[Callable[[], None] | None] = [None] * len(cluster.nodes)
        self.driver = RoundDriver(
            cluster,
            network,
            timing,
            rng,
            self.exchange,
            begin_push=self.begin_push if eager else None,
            begin_round=self.begin_round,
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def rounds_run(self) -> int:
        return self.driver.rounds

    def start(self) -> None:
        for node in self.cluster.nodes:
            self._watch(node.index)
            self.driver.start(node.index)

    def local_change(self, index: int) -> None:
        """Nothing: the replica's record changes start eager pushes (see :meth:`_watch`)."""

    def crashed(self, index: int) -> None:
        unsubscribe = self._unsubscribe[index]
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe[index] = None

    def restarted(self, index: int) -> None:
        # What it knew of its peers was in memory: a restarted replica starts over.
        self.planners[index] = gossip.GossipPlanner(self.cluster.nodes[index].replica)
        self._watch(index)
        self.driver.start(index)

    def _watch(self, index: int) -> None:
        def on_record(change: RecordChange) -> None:
            if gossip.pushes_eagerly(change):
                self.driver.push_soon(index)

        replica = self.cluster.nodes[index].replica
        self._unsubscribe[index] = replica.subscribe_records(on_record)

    # -- one exchange ----------------------------------------------------------------------

    def begin_round(self, index: int) -> None:
        self.planners[index].begin_round()

    def begin_push(self, index: int) -> object:
        return self.planners[index].begin_push()

    def exchange(self, index: int, peer: int, push: object, finish: Finish) -> None:
        """One exchange with ``peer``: a round's (``push`` is ``None``) or an eager push's
        (``push`` is what :meth:`begin_push` returned); ``finish`` hears how it ended."""
        planner = self.planners[index]
        peer_id = self.cluster.nodes[peer].id
        if push is None:
            exchange = planner.round(peer_id)
        else:
            assert isinstance(push, dict)
            exchange = planner.push(peer_id, push)
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
            merges = exchange.merges
            follow = exchange.answered(answer)
            if exchange.merges > merges:
                self.cluster.touched(index)
            if follow is None:
                finish(Outcome.OK)
            else:
                self._send(index, peer, exchange, follow, finish)

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
        result = self.planners[index].answer(body, self.cluster.nodes[caller].id)
        if pushed:
            self.cluster.touched(index)
        return result.response, payload_size(sync.decode_messages(result.response))
