"""A node: one replica, its HTTP server, gossip and timers, owned by one event loop.

Only the event loop that entered the node touches the replica (pycrdt documents must have
a single owner). The replica itself is sans I/O; this module wires it to the network:

* the aiohttp application (:mod:`.net.server`) serves the REST, sync and event routes;
* gossip (:mod:`.net.gossip`) pushes deltas after local changes and runs push-pull rounds
  with ``fanout`` random live peers every ``gossip_interval`` seconds;
* a timer calls :meth:`Replica.tick` at :meth:`Replica.next_deadline`, so entities whose
  evidence ages out disappear with nothing else happening;
* membership is data: the node declares ``replica:<id>`` with its URL and a liveness
  constraint (fresh observations of itself), observes itself every ``liveness / 4`` seconds
  and observes a peer after a successful exchange. A peer whose entity stops existing on
  this replica drops out of gossip; seeds are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from .core import sync
from .core.constraints import observed
from .core.gossip import GossipPlanner
from .core.replica import Replica
from .core.views import Change, RecordChange, Status
from .errors import InputError, RemoteError
from .net.events import EventHub
from .net.metrics import NodeMetrics
from .persistence import Persistence, open_replica
from .store import SQLiteStore, Store, StoreError

__all__ = ["ConfigError", "Node", "NodeConfig"]

DEFAULT_PORT: Final = 8470
DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
_log = logging.getLogger("sphaera_crdt.node")


class ConfigError(InputError):
    """A node cannot start with this configuration."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node runs; every field has the meaning of the ``sphaera serve`` flag."""

    replica_id: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    peers: tuple[str, ...] = ()
    token: str | None = None
    gossip_interval: float = 1.0
    fanout: int = 2
    max_body: int = DEFAULT_MAX_BODY
    #: Bytes of updates held for missing predecessors at most (default: 4x ``max_body``).
    max_held_bytes: int | None = None
    #: Seconds a client may take to send one request.
    read_timeout: float = 10.0
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The URL peers use to reach this node (default: derived from host and port).
    public_url: str | None = None
    #: Seconds without a fresh observation after which a replica is no longer alive
    #: (default: 10 gossip intervals).
    liveness: float | None = None
    #: Metrics need the token too when true.
    metrics_auth: bool = False
    #: Where the SQLite store lives; ``None`` keeps nothing (``--memory``).
    data_dir: str | None = None
    #: ``"full"``: an acknowledged write survives power loss; ``"normal"``: a crash.
    durability: str = "full"
    #: Compact the update log once it holds this many updates or bytes.
    compact_count: int = 10_000
    compact_bytes: int = 16 * 1024 * 1024
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.gossip_interval) or self.gossip_interval <= 0:
            raise ConfigError(f"gossip interval must be positive, not {self.gossip_interval}")
        if self.fanout < 1:
            raise ConfigError(f"fanout must be at least 1, not {self.fanout}")
        if self.max_body < 1024:
            raise ConfigError(f"max body must be at least 1024 bytes, not {self.max_body}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {self.port}")
        if self.read_timeout <= 0:
            raise ConfigError("read timeout must be positive")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ConfigError("the token must be non-empty and contain no whitespace")
        if not is_loopback(self.host) and self.token is None and not self.insecure:
            raise ConfigError(
                f"refusing to serve {self.host} without a token; give --token-file "
                "(or SPHAERA_TOKEN), or --insecure to accept the risk"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.liveness is not None and self.liveness <= 0:
            raise ConfigError("liveness must be positive")
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"durability must be full or normal, not {self.durability!r}")
        if self.compact_count < 1 or self.compact_bytes < 1:
            raise ConfigError("compaction thresholds must be positive")
        if self.max_held_bytes is not None and self.max_held_bytes < 0:
            raise ConfigError(f"max held bytes must not be negative, not {self.max_held_bytes}")

    @property
    def held_bytes_limit(self) -> int:
        """Bytes of updates held for missing predecessors at most."""
        return 4 * self.max_body if self.max_held_bytes is None else self.max_held_bytes

    @property
    def liveness_window(self) -> float:
        return self.liveness if self.liveness is not None else 10 * self.gossip_interval

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


class Node:
    """One replica served over HTTP, with gossip and timers. Use as an async context manager.

    Args:
        config: How to run.
        clock: Seconds as float; the replica's clock (``time.time`` by default).
        logger: Where the node logs.
        replica: An existing replica to serve (a fresh one by default).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.log = logger or _log
        self.store: Store | None = None
        self.persistence: Persistence | None = None
        if config.data_dir is not None:
            if replica is not None:
                raise ConfigError("a node with a data directory restores its own replica")
            self.store = SQLiteStore(config.data_dir, durability=config.durability)  # type: ignore[arg-type]
            try:
                replica = open_replica(
                    config.replica_id,
                    self.store,
                    clock=clock,
                    logger=self.log,
                    max_held_bytes=config.held_bytes_limit,
                )
            except StoreError:
                self.store.close()
                raise
        self.replica = replica or Replica(
            config.replica_id,
            clock=clock,
            logger=self.log,
            max_held_bytes=config.held_bytes_limit,
        )
        if self.replica.id != config.replica_id:
            raise ConfigError("the replica's id differs from the configured one")
        self.metrics = NodeMetrics()
        self.metrics.watch_held(lambda: self.replica.held_stats)
        self.events = EventHub()
        self.peers = sync.PeerKnowledge()
        #: the gossip's decisions (what to send, what answers teach), shared with the server
        self.planner = GossipPlanner(self.replica, self.peers)
        #: replica id -> URL, from seeds, sync headers and replica entities
        self.directory: dict[str, str] = {}
        self.seeds: tuple[str, ...] = tuple(url.rstrip("/") for url in config.peers)
        self.url = config.public_url or ""
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._last_observed: dict[str, float] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self.gossip: Any = None
        self.client: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    @property
    def port(self) -> int:
        """The port the server is bound to (the configured one before start)."""
        return self._bound_port() if self._runner is not None else self.config.port

    async def _start(self) -> Self:
        from .net.client import PeerClient
        from .net.gossip import Gossip
        from .net.server import RequestErrorLog, create_app

        if self.store is not None:
            self.persistence = Persistence(
                self.replica,
                self.store,
                compact_count=self.config.compact_count,
                compact_bytes=self.config.compact_bytes,
                logger=self.log,
            )
        self._unsubscribe.append(self.replica.subscribe(self._on_change))
        self._unsubscribe.append(self.replica.subscribe_records(self._on_record))
        app = create_app(self)
        # aiohttp's keep-alive timer also runs from the moment a connection opens and
        # closes one that has not completed a request head by then: with read_timeout it
        # is the deadline on request headers (the server puts one on bodies).
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.config.read_timeout,
            logger=RequestErrorLog(),
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=self._ssl_context()
        )
        await site.start()
        port = self._bound_port()
        if not self.config.public_url:
            host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
            self.url = f"{self.config.scheme}://{host}:{port}"
        self.client = PeerClient(self)
        self._declare_self()
        self.gossip = Gossip(self)
        self._tasks.append(asyncio.create_task(self._timer(), name="sphaera-timer"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="sphaera-heartbeat"))
        self.gossip.start()
        self.log.info("replica %s listening on %s", self.replica.id, self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop gossip and timers, close connections and the server. Idempotent."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.gossip is not None:
            await self.gossip.stop()
            self.gossip = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.persistence is not None:
            await self.persistence.close()
            self.persistence = None
            self.store = None
        elif self.store is not None:
            self.store.close()
            self.store = None

    async def flush(self) -> None:
        """Return once every change made so far is in the store (at once with ``--memory``).

        The server awaits this before it answers a write with 2xx.

        Raises:
            StoreError: The store failed; the write must not be acknowledged.
        """
        if self.persistence is not None:
            await self.persistence.flush()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate or key: {exc}") from exc
        return context

    def _bound_port(self) -> int:
        assert self._runner is not None
        for server_site in self._runner.sites:
            server = getattr(server_site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            for sock in sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    # -- membership ------------------------------------------------------------------------

    @property
    def replica_entity(self) -> str:
        return self.replica.replica_entity

    def _declare_self(self) -> None:
        window = self.config.liveness_window
        entity = self.replica.replica_entity
        view = self.replica.entity(entity)
        attrs = {"url": self.url}
        requires = observed(entity, within=window)
        if view is None or view.attrs != attrs or view.requires != requires:
            self.replica.declare(entity, kind="replica", attrs=attrs, requires=requires)
        self.replica.observe(entity, ok=True, ttl=window)
        self._last_observed[self.replica.id] = self.clock()

    def note_peer(self, replica_id: str | None, url: str | None) -> None:
        """Remember a peer's URL from a request header or a replica entity."""
        if replica_id and url and replica_id != self.replica.id:
            self.directory[replica_id] = url.rstrip("/")

    def observe_peer(self, replica_id: str) -> None:
        """A successful exchange with a peer is an observation of it (rate limited).

        Only declared replicas are observed: an id a caller merely claims in a header would
        otherwise leave an entry in the replicated state for every id ever claimed.
        """
        if replica_id == self.replica.id:
            return
        declared = self.replica.entity(f"replica:{replica_id}")
        if declared is None or declared.kind != "replica":
            return
        now = self.clock()
        window = self.config.liveness_window
        if now - self._last_observed.get(replica_id, -math.inf) < window / 4:
            return
        self._last_observed[replica_id] = now
        self.replica.observe(f"replica:{replica_id}", ok=True, ttl=window)

    def live_peers(self) -> dict[str, str]:
        """Peers to gossip with: replica entities that exist here and have a URL."""
        peers: dict[str, str] = {}
        for entity_id in self.replica.entity_ids("replica:"):
            view = self.replica.entity(entity_id)
            if view is None or view.kind != "replica":
                continue
            peer_id = view.id.removeprefix("replica:")
            url = view.attrs.get("url")
            if peer_id == self.replica.id or type(url) is not str:
                continue
            self.directory.setdefault(peer_id, url.rstrip("/"))
            if view.status is Status.EXISTS:
                peers[peer_id] = url.rstrip("/")
        return peers

    # -- what the server and gossip call ---------------------------------------------------

    def handle_sync(self, body: bytes, peer_id: str | None, peer_url: str | None) -> bytes:
        """Answer ``POST /v1/sync``.

        Raises:
            RemoteError: The body is malformed; nothing changed.
        """
        started = time.perf_counter()
        result = self.planner.answer(body, peer_id)
        self.metrics.merge_seconds.observe(time.perf_counter() - started)
        label = self.metrics.peer(peer_id)
        self.metrics.bytes_in.labels(label).inc(len(body))
        self.metrics.bytes_out.labels(label).inc(len(result.response))
        self.metrics.sync_exchanges.labels(label, "in", "ok").inc()
        if peer_id:
            self.note_peer(peer_id, peer_url)
            self.observe_peer(peer_id)
        return result.response

    def handle_update(self, body: bytes, peer_id: str | None) -> list[Change]:
        """Answer ``POST /v1/updates``.

        Raises:
            RemoteError: The update is malformed; nothing changed.
        """
        started = time.perf_counter()
        changes = self.replica.merge(body)
        self.metrics.merge_seconds.observe(time.perf_counter() - started)
        label = self.metrics.peer(peer_id)
        self.metrics.bytes_in.labels(label).inc(len(body))
        if peer_id:
            self.peers.learn_update(peer_id, body)
        return changes

    def status_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for view in self.replica.entities().values():
            counts[view.status.value] += 1
        return counts

    # -- internals -------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        self.metrics.status_changes.labels(change.after.value).inc()
        self.events.publish("change", change.to_json())
        self._wake.set()

    def _on_record(self, change: RecordChange) -> None:
        self._wake.set()  # local changes start gossip's eager pushes by themselves

    async def _timer(self) -> None:
        """Tick the replica at its next deadline (and re-arm whenever something changed)."""
        while True:
            deadline = self.replica.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                try:
                    self.replica.tick()
                except RemoteError:  # pragma: no cover - tick never parses peer bytes
                    self.log.exception("tick failed")

    async def _heartbeat(self) -> None:
        """Observe this replica every liveness/4 seconds, so that peers keep it alive."""
        period = self.config.liveness_window / 4
        while True:
            await asyncio.sleep(period)
            self.replica.observe(self.replica_entity, ok=True, ttl=self.config.liveness_window)
            self._last_observed[self.replica.id] = self.clock()
