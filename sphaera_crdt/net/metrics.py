"""Prometheus metrics of one node, in a registry of its own (several nodes may share a
process, as they do in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.causal import HeldStats

__all__ = ["MAX_PEER_LABELS", "NodeMetrics"]

#: Peers named in metric labels; further peers are counted together as ``"other"``, so a
#: caller that invents peer ids cannot grow the registry without bound.
MAX_PEER_LABELS = 256


class NodeMetrics:
    """The metrics a node exports on ``GET /metrics``."""

    def __init__(self, max_peer_labels: int = MAX_PEER_LABELS) -> None:
        self._peer_labels: set[str] = set()
        self._max_peer_labels = max_peer_labels
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sync_exchanges = Counter(
            "sphaera_sync_exchanges_total",
            "Sync exchanges with peers, by peer, direction and outcome.",
            ["peer", "direction", "outcome"],
            registry=r,
        )
        self.bytes_in = Counter(
            "sphaera_sync_bytes_received_total",
            "Sync and update bytes received, by peer.",
            ["peer"],
            registry=r,
        )
        self.bytes_out = Counter(
            "sphaera_sync_bytes_sent_total",
            "Sync and update bytes sent, by peer.",
            ["peer"],
            registry=r,
        )
        self.merge_seconds = Histogram(
            "sphaera_merge_seconds",
            "Time to merge one received update, including re-derivation.",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.entities = Gauge(
            "sphaera_entities",
            "Declared entities on this replica, by status.",
            ["status"],
            registry=r,
        )
        self.gossip_round_seconds = Histogram(
            "sphaera_gossip_round_seconds",
            "Duration of one periodic gossip round.",
            buckets=(1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.rejected = Counter(
            "sphaera_rejected_requests_total",
            "Requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.status_changes = Counter(
            "sphaera_status_changes_total",
            "Status changes derived on this replica, by new status.",
            ["status"],
            registry=r,
        )
        self.peer_clock_offset = Gauge(
            "sphaera_peer_clock_offset_seconds",
            "Each peer's clock minus this node's, as last measured by an exchange this node "
            "started.",
            ["peer"],
            registry=r,
        )
        self.clock_offset = Gauge(
            "sphaera_clock_offset_seconds",
            "This node's clock minus the median of its recently measured peers' clocks "
            "(NaN when none was measured).",
            registry=r,
        )
        self.clock_offset.set(float("nan"))
        self.clock_outlier = Gauge(
            "sphaera_clock_outlier",
            "1 while this node's clock is more than the allowed skew away from a majority "
            "of its live peers (it then refuses to record observations), else 0.",
            registry=r,
        )
        self.unreadable_entries = Counter(
            "sphaera_unreadable_entries_total",
            "Entries merged from other writers that could not be read (never read as absent).",
            registry=r,
        )
        self._unreadable_seen = 0

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)

    def count_unreadable(self, total: int) -> None:
        """Bring ``sphaera_unreadable_entries_total`` up to the replica's running count."""
        if total > self._unreadable_seen:
            self.unreadable_entries.inc(total - self._unreadable_seen)
            self._unreadable_seen = total

    def watch_held(self, source: Callable[[], HeldStats]) -> None:
        """Export the updates held for missing predecessors, read from ``source`` at each
        scrape: ``sphaera_held_updates``, ``sphaera_held_update_bytes`` and
        ``sphaera_held_updates_dropped_total`` by reason (count or bytes limit, or invalid
        once released)."""
        self.registry.register(_HeldCollector(source))

    def peer(self, peer: str | None) -> str:
        """The label value for a peer: its id or URL while labels are left, else ``"other"``."""
        if not peer:
            return "anonymous"
        if peer in self._peer_labels:
            return peer
        if len(self._peer_labels) >= self._max_peer_labels:
            return "other"
        self._peer_labels.add(peer)
        return peer


class _HeldCollector(Collector):
    """Reads the held updates' figures when scraped (the replica keeps them)."""

    def __init__(self, source: Callable[[], HeldStats]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        yield GaugeMetricFamily(
            "sphaera_held_updates",
            "Received updates held until their predecessors arrive.",
            value=stats.count,
        )
        yield GaugeMetricFamily(
            "sphaera_held_update_bytes",
            "Bytes of the received updates held until their predecessors arrive.",
            value=stats.bytes,
        )
        dropped = CounterMetricFamily(
            "sphaera_held_updates_dropped",
            "Held updates dropped, by reason: the count or bytes limit, or invalid once "
            "their predecessors arrived.",
            labels=["reason"],
        )
        for reason, count in stats.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped

    def describe(self) -> Iterator[Metric]:
        return iter(())
