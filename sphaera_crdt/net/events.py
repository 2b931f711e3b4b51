"""Fan-out of status changes to server-sent-event clients.

Each client gets a bounded queue. A client too slow to keep up is cut off (its stream ends
with an ``overflow`` event) rather than letting memory grow or the replica wait: it can
reconnect, and a new stream starts with the current state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

__all__ = ["EventHub", "Subscriber"]

#: Events buffered per client before it is cut off.
QUEUE_SIZE: Final = 10_000


class Subscriber:
    """One client's queue of ``(event name, JSON data)``."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(size)
        self.overflowed = False

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            name, data = await self.queue.get()
            yield name, data
            if name == "overflow":
                return


class EventHub:
    """Publishes events to every subscriber without ever blocking the publisher."""

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
        for subscriber in list(self._subscribers):
            if subscriber.overflowed:
                continue
            queue = subscriber.queue
            if queue.qsize() >= self._size - 1:
                subscriber.overflowed = True
                queue.put_nowait(("overflow", {"dropped": True}))
                self._subscribers.discard(subscriber)
            else:
                queue.put_nowait((name, data))
