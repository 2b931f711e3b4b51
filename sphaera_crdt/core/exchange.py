"""One exchange with one peer, sans I/O: what each request carries and what each answer
teaches (:class:`PeerExchange`, planned by :class:`GossipPlanner` after :data:`PLANS`).

The kinds of exchange, the rule that a round's push is computed from the peer's own
answer, and why eager pushes carry only a writer's own items are explained in
:mod:`.gossip`, whose machine decides when exchanges run and with whom; this module only
says what one exchange sends and learns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from . import sync
from .lib0 import decode_state_vector, encode_state_vector
from .replica import Replica
from .views import Change

__all__ = [
    "PLANS",
    "ExchangeKind",
    "GossipPlanner",
    "PeerExchange",
    "Plan",
    "Request",
    "learn_state",
    "parse_answer",
]


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
        for update in result.pushed:
            if peer_id:
                self.peers.learn_ranges(peer_id, update.shape.ranges)
            if update.type is sync.MessageType.UPDATE:
                self._note_fresh(update.shape.ranges)
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
