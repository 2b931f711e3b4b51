"""The project's gossip, driven by the simulated clock: the real sync bodies, merges and
per-peer knowledge of :mod:`sphaera_crdt.core.sync`.

What one exchange does mirrors ``Gossip._exchange``, ``Gossip._send`` and ``Gossip._learn``
(:mod:`sphaera_crdt.net.gossip`) and, on the answering side, ``Node.handle_sync``:

1. The caller sends ``sync.sync_request(replica, push)``: STEP1 (its state vector) and,
   if it knows what the peer holds and the peer lacks something, an UPDATE with
   ``PeerKnowledge.pending`` (a delta against the peer's last known state vector). An
   eager push to a peer known to lack nothing sends nothing at all.
2. The callee answers with ``sync.handle_sync``: it merges the UPDATE and replies STEP2
   (what the caller lacks) and STEP1 (its state vector); it learns the caller's vector.
3. The caller merges the STEP2 (``sync.merge_update``) and learns the callee's vector; a
   callee whose vector shows less than the caller believed it had restarted without its
   state and is forgotten first. If the callee's vector shows it still lacks something
   (always so on first contact, when nothing was pushed), a second request pushes
   ``sync.delta_for`` that vector.

No update is ever echoed back: pushes are deltas against what the peer is known to hold.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..core import sync
from ..core.lib0 import decode_state_vector
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
        self.knowledge = [sync.PeerKnowledge() for _ in cluster.nodes]
        self.driver = RoundDriver(cluster, network, timing, rng, self.exchange, eager=eager)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def rounds_run(self) -> int:
        return self.driver.rounds

    def start(self) -> None:
        for node in self.cluster.nodes:
            self.driver.start(node.index)

    def local_change(self, index: int) -> None:
        self.driver.push_soon(index)

    def crashed(self, index: int) -> None:
        self.knowledge[index] = sync.PeerKnowledge()

    def restarted(self, index: int) -> None:
        self.driver.start(index)

    # -- one exchange ----------------------------------------------------------------------

    def _knows(self, index: int, peer_id: str) -> bool:
        state = self.knowledge[index].peers.get(peer_id)
        return state is not None and bool(state.known)

    def exchange(self, index: int, peer: int, eager: bool, finish: Finish) -> None:
        """Push-pull with one peer; ``finish`` hears how it ended."""
        nodes = self.cluster.nodes
        peer_id = nodes[peer].id
        push: bytes | None = None
        known = self._knows(index, peer_id)
        if known:
            push = self.knowledge[index].pending(nodes[index].replica, peer_id)
        if eager and known and push is None:
            finish(Outcome.SKIPPED)
            return

        def first(peer_state: bytes | None) -> None:
            if peer_state is not None:
                lacking = sync.delta_for(nodes[index].replica, peer_state)
                if lacking != sync.EMPTY_UPDATE:
                    self._send(index, peer, lacking, lambda _: finish(Outcome.OK), finish)
                    return
            finish(Outcome.OK)

        self._send(index, peer, push, first, finish)

    def _send(
        self,
        index: int,
        peer: int,
        push: bytes | None,
        then: Callable[[bytes | None], None],
        finish: Finish,
    ) -> None:
        replica = self.cluster.nodes[index].replica
        body = sync.sync_request(replica, push)
        payload = len(push) if push is not None and push != sync.EMPTY_UPDATE else 0

        def answered(answer: bytes) -> None:
            then(self._receive(index, peer, answer, push))

        self.network.request(
            index,
            peer,
            body,
            payload=payload,
            serve=lambda request: self.serve(peer, index, request, pushed=payload > 0),
            answered=answered,
            failed=lambda: finish(Outcome.FAILED),
            timeout=self.timing.timeout,
        )

    def _receive(self, index: int, peer: int, answer: bytes, push: bytes | None) -> bytes | None:
        """Merge an answer and learn from it (``Gossip._send`` and ``Gossip._learn``)."""
        node = self.cluster.nodes[index]
        states: list[tuple[bytes, dict[int, int]]] = []  # decoded once: checked and used
        updates: list[bytes] = []
        for message in sync.decode_messages(answer):
            if message.type is sync.MessageType.STEP1:
                states.append((message.payload, decode_state_vector(message.payload)))
            else:
                updates.append(message.payload)
        if any(update != sync.EMPTY_UPDATE for update in updates):
            sync.merge_update(node.replica, updates)
            self.cluster.touched(index)
        peer_id = self.cluster.nodes[peer].id
        knowledge = self.knowledge[index]
        if not states:
            if push is not None:
                knowledge.learn_update(peer_id, push)
            return None
        peer_state, decoded = states[-1]
        known = knowledge.peers.get(peer_id)
        if known is not None and not sync.covers(decoded, known.known):
            knowledge.forget(peer_id)  # it restarted without its state: start over
        knowledge.learn_state(peer_id, peer_state)
        return peer_state

    def serve(self, index: int, caller: int, body: bytes, *, pushed: bool) -> tuple[bytes, int]:
        """Answer a sync request at replica ``index`` (``Node.handle_sync``)."""
        node = self.cluster.nodes[index]
        result = sync.handle_sync(node.replica, body)
        if result.peer_state is not None:
            self.knowledge[index].learn_state(self.cluster.nodes[caller].id, result.peer_state)
        if pushed:
            self.cluster.touched(index)
        return result.response, payload_size(sync.decode_messages(result.response))
