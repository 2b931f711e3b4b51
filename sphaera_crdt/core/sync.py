"""The sync protocol, sans I/O: y-protocols framing and what each peer already has.

A sync body is y-protocols SYNC messages back to back, exactly as pycrdt's
``create_sync_message`` / ``create_update_message`` write them::

    0x00 (SYNC) | sync type (0 STEP1, 1 STEP2, 2 UPDATE) | varuint length | payload

One HTTP round trip is a push-pull: the caller sends STEP1 (its state vector) and,
optionally, an UPDATE with what it believes the callee lacks; the callee merges the update
and answers STEP2 (what the caller lacks, per the caller's state vector) then STEP1 (its own
state vector). A body without STEP1 is a push alone: the callee merges it and answers a
STEP1 that acknowledges it, with its clocks of the clients the push carried only (a
partial state vector, whose size follows the push rather than the number of clients). A
bare pycrdt client that answers the callee's STEP1 with ``handle_sync_message`` sends a
STEP2 back, which the callee merges like an UPDATE.

:class:`PeerKnowledge` remembers, per peer, the newest state vector it is known to hold, so
that pushes carry only what a peer lacks and nothing is echoed back to where it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import pycrdt

from ..errors import InvalidMessage, InvalidUpdate
from .lib0 import decode_state_vector, encode_state_vector, read_varuint, write_varuint
from .replica import Replica
from .updates import UpdateShape, shape
from .views import Change

__all__ = [
    "EMPTY_UPDATE",
    "InvalidMessage",
    "MessageType",
    "PeerKnowledge",
    "Received",
    "SyncMessage",
    "SyncResult",
    "decode_messages",
    "encode_messages",
    "handle_sync",
    "merge_update",
    "sync_request",
]

#: The update that carries nothing (what Yrs encodes for an empty diff without deletions).
EMPTY_UPDATE: Final = b"\x00\x00"
#: More messages than this in one body is refused.
MAX_MESSAGES: Final = 64
_SYNC: Final = 0


class MessageType(IntEnum):
    """y-protocols sync message types."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncMessage:
    """One y-protocols SYNC message."""

    type: MessageType
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.type, MessageType):
            raise ValueError(f"unknown sync message type {self.type!r}")
        if type(self.payload) is not bytes:
            raise ValueError("a sync message payload is bytes")

    def encode(self) -> bytes:
        return bytes((_SYNC, self.type)) + write_varuint(len(self.payload)) + self.payload


def encode_messages(messages: Iterable[SyncMessage]) -> bytes:
    """Frame messages back to back."""
    return b"".join(message.encode() for message in messages)


def decode_messages(body: bytes) -> list[SyncMessage]:
    """Parse a sync body.

    Raises:
        InvalidMessage: Not a sequence of well-formed SYNC messages (unknown types,
            lengths that run past the end, trailing bytes, too many messages).
    """
    messages: list[SyncMessage] = []
    pos = 0
    end = len(body)
    if end == 0:
        raise InvalidMessage("empty sync body")
    try:
        while pos < end:
            if len(messages) >= MAX_MESSAGES:
                raise InvalidMessage(f"more than {MAX_MESSAGES} messages in one body")
            kind, pos = read_varuint(body, pos)
            if kind != _SYNC:
                raise InvalidMessage(f"message {len(messages)}: type {kind} is not SYNC (0)")
            sync_type, pos = read_varuint(body, pos)
            if sync_type not in (0, 1, 2):
                raise InvalidMessage(f"message {len(messages)}: unknown sync type {sync_type}")
            length, pos = read_varuint(body, pos)
            if length > end - pos:
                raise InvalidMessage(
                    f"message {len(messages)}: length {length} runs past the end of the body"
                )
            payload = body[pos : pos + length]
            pos += length
            messages.append(SyncMessage(type=MessageType(sync_type), payload=payload))
    except InvalidUpdate as exc:  # a truncated or overlong varuint
        raise InvalidMessage(f"malformed sync body: {exc}") from exc
    return messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """An update a peer sent, parsed once: its shape travels with it to the merge, the
    acknowledgement and what the peer is known to hold.

    Attributes:
        type: The message that carried it (UPDATE or STEP2).
        payload: The update (never the empty one).
        shape: :func:`~.updates.shape` of ``payload``.
    """

    type: MessageType
    payload: bytes
    shape: UpdateShape


def receive(messages: Iterable[SyncMessage], items: bool = False) -> list[Received]:
    """The non-empty updates among ``messages`` (UPDATE and STEP2), each parsed once.

    ``items``: list each update's items in its shape (for signed mode's door) when there
    is one update; several are combined before they are merged, and listed then.

    Raises:
        InvalidUpdate: Some update is malformed.
    """
    found = [
        message
        for message in messages
        if message.type is not MessageType.STEP1 and message.payload != EMPTY_UPDATE
    ]
    listed = items and len(found) == 1
    return [
        Received(type=message.type, payload=message.payload, shape=shape(message.payload, listed))
        for message in found
    ]


def merge_update(replica: Replica, updates: Sequence[bytes | Received]) -> list[Change]:
    """Merge several updates all-or-nothing: combined first, so one bad update applies none.

    Updates already parsed (:class:`Received`) are not parsed again.

    Raises:
        InvalidUpdate: Some update is malformed; the replica is unchanged.
    """
    items: list[tuple[bytes, UpdateShape | None]] = [
        (item.payload, item.shape) if isinstance(item, Received) else (item, None)
        for item in updates
    ]
    items = [(payload, parsed) for payload, parsed in items if payload != EMPTY_UPDATE]
    if not items:
        return []
    if len(items) == 1:
        return replica.merge(*items[0])
    for payload, parsed in items:
        if parsed is None:
            shape(payload)  # bounded checks before Yrs decodes any of them
    try:
        combined = pycrdt.merge_updates(*(payload for payload, _ in items))
    except (ValueError, RuntimeError) as exc:
        raise InvalidUpdate(f"cannot combine updates: {exc}") from exc
    return replica.merge(combined)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    """What one sync exchange did, on the side that answered it."""

    response: bytes
    peer_state: bytes | None
    changes: list[Change] = field(default_factory=list)
    #: ``peer_state`` decoded
    peer_clocks: dict[int, int] | None = None
    bytes_in: int = 0
    #: the non-empty updates the request carried (merged), parsed
    pushed: list[Received] = field(default_factory=list)


def handle_sync(
    replica: Replica, body: bytes, *, assume: Mapping[int, tuple[int, int]] | None = None
) -> SyncResult:
    """Answer a sync request: merge what it carries, reply STEP2 + STEP1 (to a push alone,
    without STEP1: an acknowledging STEP1 of the pushed clients' clocks).

    ``assume`` is passed on to :func:`delta_for` for the STEP2.

    Raises:
        InvalidMessage: The body is malformed.
        InvalidUpdate: A carried update is malformed.
        Either way the replica is unchanged.
    """
    messages = decode_messages(body)
    peer_state: bytes | None = None
    peer_clocks: dict[int, int] | None = None
    for message in messages:
        if message.type is MessageType.STEP1:
            peer_clocks = decode_state_vector(message.payload)
            peer_state = message.payload
    pushed = receive(messages, items=replica.trust is not None)
    changes = merge_update(replica, pushed)
    reply = []
    if peer_state is not None and peer_clocks is not None:
        payload = delta_for(replica, peer_state, peer_clocks, assume)
        reply.append(SyncMessage(type=MessageType.STEP2, payload=payload))
        reply.append(SyncMessage(type=MessageType.STEP1, payload=replica.state_vector()))
    else:
        reply.append(SyncMessage(type=MessageType.STEP1, payload=_acknowledgement(replica, pushed)))
    return SyncResult(
        response=encode_messages(reply),
        peer_state=peer_state,
        changes=changes,
        peer_clocks=peer_clocks,
        bytes_in=len(body),
        pushed=pushed,
    )


def _acknowledgement(replica: Replica, pushed: list[Received]) -> bytes:
    """The answer to a push alone: our clocks of the clients it carried, not of all.

    The pusher learns whether its update was integrated, in bytes that grow with what it
    pushed rather than with every client this replica has ever seen.
    """
    clients: set[int] = set()
    for update in pushed:
        clients.update(update.shape.ranges)
    clocks = replica.clocks()
    return encode_state_vector({client: clocks.get(client, 0) for client in sorted(clients)})


def sync_request(
    replica: Replica, push: bytes | None = None, *, pull: bool = True, reply: bool = False
) -> bytes:
    """The body a caller sends: STEP1 with its state vector, then an UPDATE if it pushes one.

    With ``pull=False`` the body is the update alone (a push that asks for nothing back):
    the callee then answers with a STEP1 of its clocks of the pushed clients only. With
    ``reply=True`` the update goes as a STEP2, the answer to the STEP1 the callee sent
    earlier (the callee merges both alike).

    Raises:
        ValueError: ``pull=False`` without anything to push (the body would be empty).
    """
    if not pull and (push is None or push == EMPTY_UPDATE):
        raise ValueError("a push-only request needs an update to push")
    messages = []
    if pull:
        messages.append(SyncMessage(type=MessageType.STEP1, payload=replica.state_vector()))
    if push is not None and push != EMPTY_UPDATE:
        kind = MessageType.STEP2 if reply else MessageType.UPDATE
        messages.append(SyncMessage(type=kind, payload=push))
    return encode_messages(messages)


def covers(have: dict[int, int], want: dict[int, int]) -> bool:
    """Whether state vector ``have`` includes everything in ``want``."""
    return all(have.get(client, 0) >= clock for client, clock in want.items())


def delta_for(
    replica: Replica,
    peer_state: bytes,
    peer_clocks: dict[int, int] | None = None,
    assume: Mapping[int, tuple[int, int]] | None = None,
) -> bytes:
    """What a peer at ``peer_state`` lacks; :data:`EMPTY_UPDATE` if it lacks nothing.

    In this project's document layout every change inserts items, so a peer whose state
    vector covers ours lacks nothing (Yrs would otherwise resend the whole delete set).

    ``assume`` maps clients to clock ranges ``(start, end)`` the peer is taken to receive
    by other means: where the peer holds a client's items up to ``start``, the delta leaves
    out that client's items up to ``end``.
    """
    if peer_clocks is None:
        peer_clocks = decode_state_vector(peer_state)
    if assume:
        raised: dict[int, int] | None = None
        for client, (start, end) in assume.items():
            have = peer_clocks.get(client, 0)
            if start <= have < end:
                if raised is None:
                    raised = dict(peer_clocks)
                raised[client] = end
        if raised is not None:
            peer_clocks = raised
            peer_state = encode_state_vector(raised)
    if covers(peer_clocks, replica.clocks()):
        return EMPTY_UPDATE
    return replica.delta(peer_state)


@dataclass(slots=True)
class PeerState:
    """What this replica knows of one peer."""

    replica_id: str
    url: str | None = None
    known: dict[int, int] = field(default_factory=dict)


class PeerKnowledge:
    """Per-peer state vectors: what each peer is known to hold.

    A peer's known state only grows: from the state vectors it sends, from the updates it
    sends (it has them), and from what was pushed to it successfully.
    """

    def __init__(self) -> None:
        self.peers: dict[str, PeerState] = {}

    def peer(self, replica_id: str) -> PeerState:
        state = self.peers.get(replica_id)
        if state is None:
            state = self.peers[replica_id] = PeerState(replica_id)
        return state

    def forget(self, replica_id: str) -> None:
        """Forget what a peer holds (it restarted empty, or went away)."""
        self.peers.pop(replica_id, None)

    def learn_state(
        self, replica_id: str, state_vector: bytes, clocks: dict[int, int] | None = None
    ) -> None:
        """The peer holds at least ``state_vector`` (``clocks``: the same, decoded)."""
        known = self.peer(replica_id).known
        if clocks is None:
            clocks = decode_state_vector(state_vector)
        for client, clock in clocks.items():
            if clock > known.get(client, 0):
                known[client] = clock

    def learn_update(self, replica_id: str, update: bytes) -> None:
        """The peer holds every item of ``update`` and what precedes them (it sent them).

        The peer's clock of each client is at least the end of the range the update
        carries for it. (``pycrdt.get_state(update)`` would not do: it names only the
        clients whose structs an update carries from clock 0, so it learns nothing from an
        incremental update.)

        Raises:
            InvalidUpdate: The bytes are not a well-formed update; nothing is learned.
        """
        if update == EMPTY_UPDATE:
            return
        self.learn_ranges(replica_id, shape(update).ranges)

    def learn_ranges(self, replica_id: str, ranges: Mapping[int, tuple[int, int]]) -> None:
        """The peer holds the clock ranges of an update it sent (already parsed)."""
        known = self.peer(replica_id).known
        for client, (_, end) in ranges.items():
            if end > known.get(client, 0):
                known[client] = end
