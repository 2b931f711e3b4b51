"""Simulated time: a discrete-event loop.

Theory of operation
-------------------
Nothing in the simulator sleeps or reads the wall clock. Every future action (a message
arriving, a gossip round starting, a request timing out, a replica's freshness deadline)
is an event ``(time, sequence, callback, args)`` in one heap. :meth:`EventLoop.run` pops
events in time order and moves :attr:`EventLoop.now` to each event's time before calling
it, so replicas built with ``clock=loop.clock`` see simulated seconds.

Ties are broken by the order events were scheduled (the sequence number), never by
comparing callbacks, so a run is a pure function of its inputs and seeds.

After the last event of one instant has run, ``run`` calls its ``settled`` hook: that is
where agreement is checked, once per instant rather than after every event (between two
events of the same instant, replicas that tick at a shared deadline disagree for no time
at all).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

__all__ = ["EventLoop"]

Callback = Callable[..., object]


class EventLoop:
    """A heap of timed callbacks over a simulated clock.

    Args:
        start: The initial simulated time, in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"the start time must be finite, not {start!r}")
        self.now = start
        self.processed = 0
        self._queue: list[tuple[float, int, Callback, tuple[Any, ...]]] = []
        self._seq = 0

    def clock(self) -> float:
        """The simulated time (what replicas get as their clock)."""
        return self.now

    def at(self, when: float, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` at simulated time ``when`` (never in the past)."""
        if when < self.now:
            when = self.now
        heapq.heappush(self._queue, (when, self._seq, callback, args))
        self._seq += 1

    def later(self, delay: float, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` ``delay`` simulated seconds from now."""
        self.at(self.now + delay, callback, *args)

    @property
    def pending(self) -> int:
        """Events scheduled and not yet run."""
        return len(self._queue)

    def next_time(self) -> float | None:
        """The time of the next event, if any."""
        return self._queue[0][0] if self._queue else None

    def run(self, until: float, settled: Callable[[float], bool] | None = None) -> bool:
        """Run events in time order up to and including time ``until``.

        Args:
            until: Stop before any event later than this; the clock ends at ``until``
                unless ``settled`` stopped the loop earlier.
            settled: Called with the time after the last event of each instant; the loop
                stops when it returns true.

        Returns:
            Whether ``settled`` stopped the loop.
        """
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, callback, args = heapq.heappop(queue)
            self.now = when
            callback(*args)
            self.processed += 1
            if settled is not None and (not queue or queue[0][0] > when) and settled(when):
                return True
        self.now = max(self.now, until)
        return False
