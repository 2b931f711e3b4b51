"""The simulated network: latency, loss, duplication, reordering and partitions.

Theory of operation
-------------------
Every message is handed to :meth:`Network.send` with its size, the bytes a node would put
on the wire. Its fate is drawn at once from the network's own seeded generator:

* lost with probability ``loss`` (also when a partition separates the two ends);
* otherwise delivered after the link's latency: a per-link base drawn once, uniformly
  between ``latency_min`` and ``latency_max``, plus exponential jitter with mean
  ``jitter``; with probability ``reorder`` a message is held back a further uniform
  ``0..reorder_delay`` seconds, so that later messages overtake it;
* with probability ``duplicate``, a second copy arrives after its own delay.

On arrival, the message is dropped if a partition now separates the ends or the receiver
is down. :meth:`Network.request` builds a request/answer exchange on top (one HTTP round
trip): the callee's handler runs when the request arrives and its answer travels back
the same way; the caller hears either the answer or, after ``timeout``, a failure, and
nothing at all if it crashed in between (its incarnation changed).

Every body sent is counted in :class:`Traffic`, lost or not, and so is the part of it
that carried updates (``payload``): the rest is envelope (framing, state vectors). The
payload that arrived is counted apart (``delivered_payload``): what the loss took is the
difference. HTTP headers are left out: the figures are protocol bytes, which is what
strategies differ in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .clock import EventLoop

__all__ = ["LinkModel", "Network", "Partition", "Traffic"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkModel:
    """How messages travel: seconds of latency and probabilities of mishaps."""

    latency_min: float = 0.002
    latency_max: float = 0.050
    jitter: float = 0.005
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency_min <= self.latency_max:
            raise ValueError("latencies must satisfy 0 <= latency_min <= latency_max")
        if self.jitter < 0 or self.reorder_delay < 0:
            raise ValueError("jitter and reorder_delay must be non-negative")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability, not {value!r}")
        if self.loss >= 1.0:
            raise ValueError("with loss 1 nothing ever arrives")


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Between ``start`` and ``end`` the replicas form ``groups`` groups that cannot talk."""

    start: float
    end: float
    groups: int

    def __post_init__(self) -> None:
        if self.groups < 2:
            raise ValueError("a partition has at least two groups")
        if not 0.0 <= self.start < self.end:
            raise ValueError("a partition heals after it forms")


@dataclass(slots=True)
class Traffic:
    """Running totals of what went over the network."""

    bytes: int = 0
    payload: int = 0
    #: payload bytes that arrived (a duplicate arrives twice; a lost message not at all)
    delivered_payload: int = 0
    messages: int = 0
    dropped: int = 0
    duplicated: int = 0
    requests: int = 0
    failed: int = 0

    def snapshot(self) -> Traffic:
        return Traffic(
            bytes=self.bytes,
            payload=self.payload,
            delivered_payload=self.delivered_payload,
            messages=self.messages,
            dropped=self.dropped,
            duplicated=self.duplicated,
            requests=self.requests,
            failed=self.failed,
        )

    def minus(self, earlier: Traffic) -> Traffic:
        return Traffic(
            bytes=self.bytes - earlier.bytes,
            payload=self.payload - earlier.payload,
            delivered_payload=self.delivered_payload - earlier.delivered_payload,
            messages=self.messages - earlier.messages,
            dropped=self.dropped - earlier.dropped,
            duplicated=self.duplicated - earlier.duplicated,
            requests=self.requests - earlier.requests,
            failed=self.failed - earlier.failed,
        )


Deliver = Callable[[], object]


class Network:
    """Moves messages between replicas ``0..n-1`` over simulated links.

    Args:
        loop: The event loop that carries messages.
        size: Number of replicas.
        model: Latency and mishap probabilities.
        rng: The network's own generator (loss, delays, duplicates, partition groups).
        is_up: Whether a replica is running now.
        incarnation: A number that changes whenever a replica restarts.
    """

    def __init__(
        self,
        loop: EventLoop,
        size: int,
        model: LinkModel,
        rng: random.Random,
        *,
        is_up: Callable[[int], bool],
        incarnation: Callable[[int], int],
    ) -> None:
        self.loop = loop
        self.size = size
        self.model = model
        self.traffic = Traffic()
        self._rng = rng
        self._is_up = is_up
        self._incarnation = incarnation
        self._links: dict[tuple[int, int], float] = {}
        self._group: list[int] | None = None

    # -- partitions ------------------------------------------------------------------------

    def schedule(self, partition: Partition) -> None:
        """Form ``partition`` at its start and heal it at its end."""
        self.loop.at(partition.start, self._form, partition.groups)
        self.loop.at(partition.end, self._heal)

    def _form(self, groups: int) -> None:
        order = list(range(self.size))
        self._rng.shuffle(order)
        group = [0] * self.size
        for position, replica in enumerate(order):
            group[replica] = position % groups
        self._group = group

    def _heal(self) -> None:
        self._group = None

    @property
    def partitioned(self) -> bool:
        return self._group is not None

    def separated(self, a: int, b: int) -> bool:
        """Whether a partition keeps ``a`` and ``b`` apart now."""
        group = self._group
        return group is not None and group[a] != group[b]

    # -- messages --------------------------------------------------------------------------

    def latency(self, src: int, dst: int) -> float:
        """One message's delay from ``src`` to ``dst``."""
        model = self.model
        rng = self._rng
        key = (src, dst) if src < dst else (dst, src)
        base = self._links.get(key)
        if base is None:
            base = self._links[key] = rng.uniform(model.latency_min, model.latency_max)
        delay = base
        if model.jitter > 0:
            delay += rng.expovariate(1.0 / model.jitter)
        if model.reorder > 0 and rng.random() < model.reorder:
            delay += rng.uniform(0.0, model.reorder_delay)
        return delay

    def send(self, src: int, dst: int, size: int, deliver: Deliver, *, payload: int = 0) -> None:
        """Put ``size`` bytes on the wire from ``src`` to ``dst``; ``deliver()`` on arrival."""
        traffic = self.traffic
        traffic.bytes += size
        traffic.payload += payload
        traffic.messages += 1
        rng = self._rng
        if self.separated(src, dst) or (self.model.loss > 0 and rng.random() < self.model.loss):
            traffic.dropped += 1
            return
        self.loop.later(self.latency(src, dst), self._arrive, src, dst, deliver, payload)
        if self.model.duplicate > 0 and rng.random() < self.model.duplicate:
            traffic.duplicated += 1
            self.loop.later(self.latency(src, dst), self._arrive, src, dst, deliver, payload)

    def _arrive(self, src: int, dst: int, deliver: Deliver, payload: int) -> None:
        if self.separated(src, dst) or not self._is_up(dst):
            self.traffic.dropped += 1
            return
        self.traffic.delivered_payload += payload
        deliver()

    def request(
        self,
        src: int,
        dst: int,
        body: bytes,
        *,
        payload: int,
        serve: Callable[[bytes], tuple[bytes, int]],
        answered: Callable[[bytes], object],
        failed: Callable[[], object],
        timeout: float,
    ) -> None:
        """One round trip: ``serve(body)`` runs at ``dst`` and returns (answer, its payload).

        ``answered(answer)`` or ``failed()`` is called exactly once at ``src``, unless
        ``src`` restarted meanwhile (then neither is). A duplicated request is served
        twice; only the first answer counts.
        """
        self.traffic.requests += 1
        incarnation = self._incarnation(src)
        state = [False]  # finished

        def current() -> bool:
            return not state[0] and self._incarnation(src) == incarnation and self._is_up(src)

        def receive_answer(answer: bytes) -> None:
            if current():
                state[0] = True
                answered(answer)

        def arrive() -> None:
            answer, answer_payload = serve(body)
            self.send(dst, src, len(answer), lambda: receive_answer(answer), payload=answer_payload)

        def expire() -> None:
            if current():
                state[0] = True
                self.traffic.failed += 1
                failed()

        self.send(src, dst, len(body), arrive, payload=payload)
        self.loop.later(timeout, expire)
