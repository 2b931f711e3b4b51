"""The subscribers of a replica's status and record changes, and the queue that delivers
events to them in order.

A subscriber may write to the replica while it is called; the events of that nested step
are queued behind the ones being delivered, so the last event a subscriber hears for an
entity is its current status. A subscriber that raises is logged and the others are still
called.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .views import Change, RecordChange

__all__ = ["ChangeCallback", "Outbox", "RecordCallback"]

ChangeCallback = Callable[[Change], object]
RecordCallback = Callable[[RecordChange], object]


class Outbox:
    """Status-change and record-change subscribers, and the events waiting for them."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.changes: list[ChangeCallback] = []
        self.records: list[RecordCallback] = []
        self._queue: deque[tuple[list[Any], Any]] = deque()
        self._delivering = False

    @property
    def pending(self) -> bool:
        """Whether events are waiting (queued by a step nested in a delivery)."""
        return bool(self._queue)

    def subscribe(self, table: list[Any], callback: Callable[[Any], object]) -> Callable[[], None]:
        """Add ``callback`` to ``table`` (:attr:`changes` or :attr:`records`); returns the
        function that removes it."""
        table.append(callback)

        def unsubscribe() -> None:
            if callback in table:
                table.remove(callback)

        return unsubscribe

    def deliver(self, records: list[RecordChange], changes: list[Change]) -> None:
        """Queue a step's events, records first, and deliver everything queued unless a
        delivery is already under way (it will deliver them)."""
        self._queue.extend((self.records, event) for event in records)
        self._queue.extend((self.changes, event) for event in changes)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._queue:
                callbacks, event = self._queue.popleft()
                for callback in list(callbacks):
                    try:
                        callback(event)
                    except Exception:
                        self._log.exception("subscriber %r failed on %r", callback, event)
        finally:
            self._delivering = False
