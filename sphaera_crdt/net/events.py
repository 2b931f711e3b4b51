"""Fan-out of status changes to server-sent-event clients.

Theory of operation: the hub keeps one log of serialised events, shared by every client.
Publishing serialises an event once (:func:`encode_event`) and appends the bytes to the
log; it touches the clients only to wake those that wait for an event, and a woken client
stays awake until it runs, so a write that publishes many events wakes each client once.
Each client (:class:`Subscriber`) has a cursor into the log and takes everything after it
in one piece, which its stream sends in one write.

Every so often (every half backlog limit of events) the hub looks at every cursor: a client
too far behind is cut off (it still receives what it was owed up to the limit, then an
``overflow`` event, and its stream ends) rather than letting memory grow or the replica
wait; it can reconnect, and a new stream starts with the current state. The log is then
trimmed to what some client has not taken yet. That look is the only work per client, and
it comes once per many events.

A client may take only some entities' changes (an :class:`~.filters.EntityFilter`). Each
event is logged with the entity id and kind it concerns, and a filtered client's read skips
the others on those alone, so the one serialisation is still shared. A waiting filtered
client is woken only by an event it keeps; one it skips moves its cursor on. A filtered
client that is busy when the hub looks at the cursors has the events it keeps moved out of
the log into its own list, and is cut off only when that list is too long: skipped events
never count against it, nor keep the log from being trimmed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson

from .filters import EntityFilter

__all__ = ["EventHub", "Subscriber", "encode_event"]

#: Events a client may fall behind by before it is cut off.
QUEUE_SIZE: Final = 10_000


def encode_event(name: str, data: Any) -> bytes:
    """One server-sent event: its name and its data as one line of JSON."""
    # orjson never writes a raw newline, so one data line always holds the whole event.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_OVERFLOW: Final = encode_event("overflow", {"dropped": True})


class Subscriber:
    """One client's place in its hub's log of serialised events."""

    def __init__(self, hub: EventHub, cursor: int, keep: EntityFilter | None = None) -> None:
        self._hub = hub
        #: which entities' events the client takes (``None``: every one)
        self.keep = keep
        #: a filtered client's kept events, moved out of the log when it fell behind
        self.pending: list[bytes] = []
        #: absolute index in the hub's log of the next event to take
        self.cursor = cursor
        self._waiter: asyncio.Future[None] | None = None
        #: what the client is still owed once no event is added any more
        self._final: bytes | None = None

    @property
    def finished(self) -> bool:
        """No event is added any more (cut off, or closed): the stream ends once drained."""
        return self._final is not None

    @property
    def backlog(self) -> int:
        """Events published and not taken yet."""
        if self._final is not None:
            return 1 if self._final else 0
        return self._hub.end - self.cursor + len(self.pending)

    def finish(self) -> None:
        """End the stream once it has sent what was published until now."""
        if self._final is None:
            self._end(self._hub.read(self))

    def _end(self, final: bytes) -> None:
        self._final = final
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> bytes:
        """Wait for events and return every one not taken yet, serialised back to back;
        empty once the stream is finished and everything was taken."""
        hub = self._hub
        while True:
            if self._final is None and self.cursor == hub.end and not self.pending:
                self._waiter = asyncio.get_running_loop().create_future()
                hub.waiting.add(self)
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                    hub.waiting.discard(self)
            if self._final is not None:
                final, self._final = self._final, b""
                return final
            frames = hub.read(self)
            if frames:  # a filtered client may have skipped every event it was woken for
                return frames


class EventHub:
    """Publishes events to every subscriber without ever blocking the publisher.

    Args:
        queue_size: Events a subscriber may fall behind by before it is cut off.
    """

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._subscribers: set[Subscriber] = set()
        #: subscribers waiting for the next event
        self.waiting: set[Subscriber] = set()
        self._size = queue_size
        self._log: list[bytes] = []
        #: the entity id and kind of each event of ``_log`` (``None`` for neither)
        self._about: list[tuple[str | None, str | None]] = []
        #: subscribers filtering by kind (the publisher looks kinds up only for them)
        self._by_kind = 0
        #: absolute index of ``_log[0]``
        self._base = 0
        self._step = max(1, queue_size // 2)
        self._check_at = self._step

    @property
    def end(self) -> int:
        """Absolute index after the last event published."""
        return self._base + len(self._log)

    @property
    def retained(self) -> int:
        """Events kept in the shared log (published, and not taken by every subscriber)."""
        return len(self._log)

    @property
    def wants_kind(self) -> bool:
        """Whether some subscriber filters by kind, so events must be published with it."""
        return self._by_kind > 0

    def subscribe(self, keep: EntityFilter | None = None) -> Subscriber:
        """A new subscriber, taking the events published from now on that ``keep`` keeps."""
        subscriber = Subscriber(self, self.end, None if keep is None or keep.everything else keep)
        self._subscribers.add(subscriber)
        if subscriber.keep is not None and subscriber.keep.kind is not None:
            self._by_kind += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            if subscriber.keep is not None and subscriber.keep.kind is not None:
                self._by_kind -= 1
        self.waiting.discard(subscriber)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(
        self, name: str, data: Any, *, entity: str | None = None, kind: str | None = None
    ) -> None:
        """Serialise an event once and make it the next one of every subscriber that keeps
        it (``entity`` and ``kind``: what filtered subscribers match it on)."""
        if not self._subscribers:
            return
        self._log.append(encode_event(name, data))
        self._about.append((entity, kind))
        if self.waiting:
            waiting, self.waiting = self.waiting, set()
            end = self.end
            for subscriber in waiting:
                keep = subscriber.keep
                if keep is None or entity is None or keep.matches(entity, kind):
                    subscriber.wake()
                else:
                    # It had taken everything before this event and skips this one.
                    subscriber.cursor = end
                    self.waiting.add(subscriber)
        if len(self._log) >= self._check_at:
            self._check()

    def read(self, subscriber: Subscriber) -> bytes:
        """Everything after ``subscriber``'s cursor, which moves to the end."""
        start = subscriber.cursor - self._base
        frames = self._log[start:]
        subscriber.cursor = self.end
        keep = subscriber.keep
        if keep is not None:
            frames = subscriber.pending + self._kept(keep, start, len(self._log))
            subscriber.pending = []
            if not frames:
                return b""
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _kept(self, keep: EntityFilter, start: int, stop: int) -> list[bytes]:
        """The events of ``_log[start:stop]`` that ``keep`` keeps."""
        kept = []
        for frame, (entity, kind) in zip(
            self._log[start:stop], self._about[start:stop], strict=True
        ):
            if entity is None or keep.matches(entity, kind):
                kept.append(frame)
        return kept

    def _check(self) -> None:
        """Cut off subscribers too far behind; drop the events every other one has taken."""
        end = self.end
        limit = self._size - 1
        for subscriber in list(self._subscribers):
            if end - subscriber.cursor > limit:
                start = subscriber.cursor - self._base
                keep = subscriber.keep
                if keep is not None:
                    # Only the events it keeps count against it: they move out of the log
                    # into its own list, so the log can be trimmed past the ones it skips.
                    subscriber.pending += self._kept(keep, start, len(self._log))
                    subscriber.cursor = end
                    if len(subscriber.pending) <= limit:
                        continue
                    owed = subscriber.pending[:limit]
                    subscriber.pending = []
                else:
                    owed = self._log[start : start + limit]
                self.unsubscribe(subscriber)
                subscriber._end(b"".join(owed) + _OVERFLOW)
        oldest = min((subscriber.cursor for subscriber in self._subscribers), default=end)
        del self._log[: oldest - self._base]
        del self._about[: oldest - self._base]
        self._base = oldest
        self._check_at = len(self._log) + self._step
