"""Clock offsets between replicas, sans I/O: what an exchange tells of a peer's clock, and
whether this replica's own clock is the outlier.

Theory of operation
-------------------
Freshness compares an observation's date, read on its observer's clock, with the reader's
clock, so evidence is only as good as the clocks agree. Every sync exchange carries the
sender's clock (a ``Sphaera-Time`` header on requests and on answers). For an exchange
this replica started, sent at ``t_send`` and answered at ``t_recv`` on its own clock, the
peer's reading ``T`` was taken somewhere in between, so the peer's offset is
``T - (t_send + t_recv) / 2`` give or take half the round trip. A peer is *away* when its
offset exceeds ``max_skew`` even after that error is granted in its favour.

Only exchanges this replica started count (the node also checks that they went to the
peer's declared URL): they come back with an answer we waited for, so the round trip
bounds the error, and the answer comes from the address the peer declared. A header on an
inbound request is neither: anyone holding the token can send any ``Sphaera-Replica`` and
``Sphaera-Time``, so it is not recorded, and no forged request can make a node believe its
own clock is wrong.

A replica is the **outlier** when a strict majority of the peers it measured within the
last ``window`` seconds (each such answer is itself a proof that the peer is live) are
away (CockroachDB fences a node in the same way). It stays the outlier until measurements
say otherwise: measurements that merely age out (its peers look dead to a replica whose
clock is wrong, so it may stop calling them) prove nothing about its clock. A replica that
measured a single peer follows it: of two replicas that measure each other, both stop
observing until their clocks agree, which fails closed. Its offset is reported as its
clock minus the median of the peers' clocks.

:class:`ClockWatch` keeps the measurements and reports each transition once, as a
:class:`ClockNotice` the driver logs: a peer going away and coming back, this replica
becoming the outlier and ceasing to be one.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_TIME_TEXT",
    "ClockNotice",
    "ClockWatch",
    "Measurement",
    "Outlier",
    "estimate_offset",
    "format_time",
    "parse_time",
]

#: The longest ``Sphaera-Time`` value read (``repr`` of any float is shorter).
MAX_TIME_TEXT: Final = 32


def format_time(now: float) -> str:
    """A clock reading as a header value: seconds since the epoch as a float."""
    return repr(float(now))


def parse_time(text: str | None) -> float | None:
    """A peer's clock reading from a header value; ``None`` when absent or unusable.

    A peer's bytes are untrusted: anything but a short, finite decimal float is ignored
    (the exchange itself is still good, only its clock reading is unknown).
    """
    if text is None or len(text) > MAX_TIME_TEXT:
        return None
    if not text.isascii() or any(c not in "0123456789.eE+-" for c in text):
        return None  # float() would also accept "nan", "inf", "_" and spaces
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def estimate_offset(peer_time: float, sent: float, received: float) -> float:
    """The peer's clock minus ours, from a reading it took between ``sent`` and
    ``received`` (our clock): the midpoint estimate, wrong by at most half the round trip."""
    return peer_time - (sent + received) / 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One peer's clock as an exchange this replica started measured it.

    Attributes:
        peer: The peer's replica id.
        offset: The peer's clock minus this replica's, in seconds.
        error: Half the exchange's round trip: the true offset is within ``offset ± error``.
        at: This replica's clock when the answer came.
    """

    peer: str
    offset: float
    error: float
    at: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.offset) and math.isfinite(self.at)) or not self.error >= 0:
            raise ValueError(f"unusable clock measurement of {self.peer!r}")

    def away(self, max_skew: float) -> bool:
        """Whether the peer's clock is certainly more than ``max_skew`` from ours."""
        return abs(self.offset) - self.error > max_skew


@dataclass(frozen=True, slots=True, kw_only=True)
class Outlier:
    """This replica's clock disagrees with a majority of its live peers.

    Attributes:
        offset: This replica's clock minus the median of the measured peers' clocks.
        away: Peers more than the allowed skew away.
        measured: Peers measured within the window.
        max_skew: The allowed skew.
    """

    offset: float
    away: int
    measured: int
    max_skew: float

    def describe(self) -> str:
        """One line for logs and error messages."""
        if abs(self.offset) > self.max_skew:
            side = "ahead of" if self.offset > 0 else "behind"
            where = f"{abs(self.offset):.3f}s {side} the median of its live peers"
        else:
            where = f"{self.offset:+.3f}s from the median of its live peers"
        return (
            f"this node's clock is {where}: {self.away} of {self.measured} measured peers "
            f"are more than the {self.max_skew:g}s allowed away"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockNotice:
    """A transition worth one log line.

    Attributes:
        kind: ``"peer_away"``, ``"peer_back"``, ``"outlier"`` or ``"outlier_over"``.
        peer: The peer, for the ``peer_*`` kinds.
        offset: The peer's offset, or this replica's (for the ``outlier*`` kinds).
        text: The log line.
    """

    kind: Literal["peer_away", "peer_back", "outlier", "outlier_over"]
    peer: str | None
    offset: float
    text: str

    @property
    def level(self) -> int:
        """The :mod:`logging` level of its line: this replica's clock being the outlier is
        an error, a peer's clock going away a warning, the rest information."""
        return _LEVELS.get(self.kind, logging.INFO)


_LEVELS: Final = {"outlier": logging.ERROR, "peer_away": logging.WARNING}


class ClockWatch:
    """The clock measurements of one replica, and the decision whether it is the outlier.

    Args:
        max_skew: Seconds two clocks may differ (``--max-clock-skew``).
        window: Seconds a measurement counts towards the outlier decision (the liveness
            window: a peer that answered within it is live).
    """

    def __init__(self, max_skew: float, window: float) -> None:
        if not 0 < max_skew < math.inf or not 0 < window < math.inf:
            raise ValueError("max_skew and window must be positive and finite")
        self.max_skew = max_skew
        self.window = window
        self._latest: dict[str, Measurement] = {}
        self._away: set[str] = set()
        self._outlier: Outlier | None = None

    def measured(
        self, peer: str, peer_time: float, sent: float, received: float
    ) -> list[ClockNotice]:
        """Record what an exchange this replica started to ``peer`` showed of its clock.

        ``sent`` and ``received`` are this replica's clock before the request and when the
        answer came; ``peer_time`` is the peer's reading in the answer.

        Returns:
            The transitions this measurement caused (the peer's, then this replica's).
        """
        if not all(math.isfinite(value) for value in (peer_time, sent, received)):
            return []
        error = abs(received - sent) / 2
        measurement = Measurement(
            peer=peer, offset=estimate_offset(peer_time, sent, received), error=error, at=received
        )
        self._latest[peer] = measurement
        notices: list[ClockNotice] = []
        offset = measurement.offset
        if measurement.away(self.max_skew):
            if peer not in self._away:
                self._away.add(peer)
                notices.append(
                    ClockNotice(
                        kind="peer_away",
                        peer=peer,
                        offset=offset,
                        text=(
                            f"the clock of {peer} is {offset:+.3f}s from this node's, more "
                            f"than the {self.max_skew:g}s allowed"
                        ),
                    )
                )
        elif peer in self._away:
            self._away.discard(peer)
            notices.append(
                ClockNotice(
                    kind="peer_back",
                    peer=peer,
                    offset=offset,
                    text=f"the clock of {peer} is back within {self.max_skew:g}s ({offset:+.3f}s)",
                )
            )
        notices.extend(self.check(received))
        return notices

    def offset(self, peer: str) -> float | None:
        """The peer's clock minus this replica's, as last measured; ``None`` if never."""
        measurement = self._latest.get(peer)
        return None if measurement is None else measurement.offset

    def outlier(self, now: float) -> Outlier | None:
        """Whether, at ``now``, this replica's clock is away from a majority of its peers."""
        recent = [m for m in self._latest.values() if abs(now - m.at) <= self.window]
        if not recent:
            return None
        away = sum(m.away(self.max_skew) for m in recent)
        if 2 * away <= len(recent):
            return None
        return Outlier(
            offset=-statistics.median(m.offset for m in recent),
            away=away,
            measured=len(recent),
            max_skew=self.max_skew,
        )

    def own_offset(self, now: float) -> float | None:
        """This replica's clock minus the median of the peers measured within the window."""
        recent = [m.offset for m in self._latest.values() if abs(now - m.at) <= self.window]
        return -statistics.median(recent) if recent else None

    @property
    def current(self) -> Outlier | None:
        """What the last :meth:`check` found: the outlier state, or ``None``."""
        return self._outlier

    def check(self, now: float) -> list[ClockNotice]:
        """Decide whether this replica is the outlier at ``now``; returns the transition,
        if it is one. With no measurement within the window, the decision stands."""
        was = self._outlier
        recent = any(abs(now - m.at) <= self.window for m in self._latest.values())
        outlier = self.outlier(now) if recent else was
        self._outlier = outlier
        if outlier is not None and was is None:
            return [
                ClockNotice(
                    kind="outlier",
                    peer=None,
                    offset=outlier.offset,
                    text=outlier.describe() + "; refusing to record observations",
                )
            ]
        if outlier is None and was is not None:
            return [
                ClockNotice(
                    kind="outlier_over",
                    peer=None,
                    offset=0.0,
                    text="this node's clock agrees with its live peers again; recording "
                    "observations",
                )
            ]
        return []
