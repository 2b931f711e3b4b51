"""Fan-out of status changes to server-sent-event clients.

An event is serialised once, when it is published, into the bytes every stream sends
(:func:`encode_event`); each client's :class:`Subscriber` gets a reference to those bytes,
so publishing costs one append per client whatever the number of clients. A stream wakes
once for whatever accumulated since it last wrote and sends it in one write.

Each client's backlog is bounded. A client too slow to keep up is cut off (its stream ends
with an ``overflow`` event) rather than letting memory grow or the replica wait: it can
reconnect, and a new stream starts with the current state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

import orjson

__all__ = ["EventHub", "Subscriber", "encode_event"]

#: Events buffered per client before it is cut off.
QUEUE_SIZE: Final = 10_000


def encode_event(name: str, data: Any) -> bytes:
    """One server-sent event: its name and its data as one line of JSON."""
    # orjson never writes a raw newline, so one data line always holds the whole event.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_OVERFLOW: Final = encode_event("overflow", {"dropped": True})


class Subscriber:
    """One client's backlog of serialised events.

    Args:
        size: Events buffered at most; the last slot is kept for the ``overflow`` event.
    """

    def __init__(self, size: int) -> None:
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._size = size
        #: no event is added any more (cut off, or closed); the stream ends once drained
        self.finished = False

    def push(self, frame: bytes) -> bool:
        """Add one serialised event; ``False`` once the client is cut off (too slow)."""
        frames = self._frames
        if len(frames) >= self._size - 1:
            frames.append(_OVERFLOW)
            self.finish()
            return False
        frames.append(frame)
        if not self._ready.is_set():
            self._ready.set()
        return True

    def finish(self) -> None:
        """End the stream once what is buffered has been sent."""
        self.finished = True
        self._ready.set()

    async def take(self) -> bytes:
        """Wait for events, then everything buffered, serialised back to back (empty once
        the stream is finished and drained)."""
        if not self._frames and not self.finished:
            await self._ready.wait()
        self._ready.clear()
        frames = self._frames
        if len(frames) == 1:
            return frames.popleft()
        taken = b"".join(frames)
        frames.clear()
        return taken

    @property
    def backlog(self) -> int:
        """Events buffered and not yet taken."""
        return len(self._frames)


class EventHub:
    """Publishes events to every subscriber without ever blocking the publisher.

    Args:
        queue_size: Events buffered per subscriber before it is cut off.
    """

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._subscribers: set[Subscriber] = set()
        self._size = queue_size

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self._size)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, name: str, data: Any) -> None:
        """Serialise an event once and hand the bytes to every subscriber."""
        if not self._subscribers:
            return
        frame = encode_event(name, data)
        cut_off = [subscriber for subscriber in self._subscribers if not subscriber.push(frame)]
        for subscriber in cut_off:
            self._subscribers.discard(subscriber)
