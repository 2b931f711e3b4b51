"""What the HTTP server asks of the node it serves: :class:`NodeService`.

The handlers and middlewares of :mod:`.server` and :mod:`.middleware` see a node through
this protocol only: named operations (read, declare, patch, retract, why, observe, sync,
merge an update, list replicas, metrics, health) and the few values they need, never the
node's replica, gossip or attributes. :class:`~sphaera_crdt.node.Node` satisfies it, so
the dependency runs one way: the node imports the server, the server imports this.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import NodeConfig
from ..core.clocks import Outlier
from ..core.views import Change, EntityView, Observation, Status
from .events import EventHub

__all__ = ["NodeService", "ReplicaInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaInfo:
    """One replica as ``GET /v1/replicas`` lists it.

    Attributes:
        url: The URL its record declares (``None`` if it declares none).
        status: Its derived status here.
        clock_offset: Its clock minus this node's in seconds, as last measured by an
            exchange this node started (``0`` for this node, ``None`` when never measured).
        last_seen_age: Seconds since the freshest observation of the replica (by any
            replica, on this node's clock), ``None`` if it was never observed.
        trusted: In signed mode, whether the trust list names the replica (its entries
            count, and it may be a peer); ``None`` when signed mode is off.
    """

    url: str | None
    status: Status
    clock_offset: float | None
    last_seen_age: float | None = None
    trusted: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"url", "status", "clock_offset", "last_seen_age", "trusted"}``."""
        return {
            "url": self.url,
            "status": self.status.value,
            "clock_offset": self.clock_offset,
            "last_seen_age": self.last_seen_age,
            "trusted": self.trusted,
        }


class NodeService(Protocol):
    """The operations of a node that its HTTP API serves."""

    @property
    def config(self) -> NodeConfig:
        """How the node runs (limits, token, intervals)."""

    @property
    def log(self) -> logging.Logger:
        """Where the node logs."""

    @property
    def events(self) -> EventHub:
        """The hub that fans status changes out to event streams."""

    @property
    def replica_id(self) -> str:
        """The id of the node's replica."""

    @property
    def url(self) -> str:
        """The URL peers reach the node at."""

    @property
    def trust_digest(self) -> str | None:
        """The digest of the trust list in use; ``None`` when signed mode is off."""

    def now(self) -> float:
        """The node's clock, seconds since the epoch."""

    # -- reads ------------------------------------------------------------------------------

    def entity(self, entity_id: str) -> EntityView | None:
        """One entity, ``None`` if it is not declared."""

    def entities(self) -> Mapping[str, EntityView]:
        """Every declared entity."""

    def why(self, entity_id: str, *, depth: int) -> dict[str, Any]:
        """The explanation tree of an entity's status."""

    def replicas(self) -> dict[str, ReplicaInfo]:
        """Every replica the merged state declares, this node's included."""

    # -- writes -----------------------------------------------------------------------------

    def declare(
        self,
        entity_id: str,
        *,
        kind: str | None,
        attrs: Mapping[str, Any],
        requires: Any,
        probe: Mapping[str, Any] | None = None,
    ) -> EntityView:
        """Declare (or re-declare) an entity, stating its whole record."""

    def patch(self, entity_id: str, attrs: Mapping[str, Any]) -> EntityView:
        """Merge top-level attributes into a declared entity; the entity as it now is."""

    def retract(self, entity_id: str) -> EntityView:
        """Retract a declared entity; the entity as it now is."""

    def observe(self, subject: str, *, ok: bool, value: Any, ttl: float | None) -> Observation:
        """Record the node's observation of ``subject``."""

    def observations(self, subject: str | None = None) -> list[Observation]:
        """The latest observation of each observer, of one subject or of all subjects."""

    def forget(self, replica_id: str) -> list[str]:
        """Forget a departed replica on every replica; the ids forgotten (empty if unknown).

        Raises ``InvalidValue`` for this node's own id."""

    async def flush(self) -> None:
        """Return once every change so far is committed (a write is answered only then)."""

    # -- peers ------------------------------------------------------------------------------

    def handle_sync(self, body: bytes, peer_id: str | None) -> bytes:
        """Answer a peer's sync exchange; raises a ``RemoteError`` for a malformed body
        (``UnverifiedUpdate`` in signed mode for entries that do not verify)."""

    def handle_update(self, body: bytes, peer_id: str | None) -> list[Change]:
        """Merge a peer's pushed update; raises a ``RemoteError`` for a malformed one
        (``UnverifiedUpdate`` in signed mode for entries that do not verify)."""

    # -- operations -------------------------------------------------------------------------

    def clock_outlier(self) -> Outlier | None:
        """Health: whether the node's clock is the outlier among its live peers."""

    def status_counts(self) -> dict[str, int]:
        """How many entities hold each status."""

    def metrics_exposition(self) -> bytes:
        """The node's metrics in the Prometheus text format, brought up to date."""

    def count_rejected(self, code: str) -> None:
        """Count a request refused with error ``code``."""
