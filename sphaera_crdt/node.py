"""A node: one replica, its HTTP server, gossip and timers, owned by one event loop.

Only the event loop that entered the node touches the replica (pycrdt documents must have
a single owner). The replica itself is sans I/O; this module wires it to the network:

* the aiohttp application (:mod:`.net.server`) serves the REST, sync and event routes,
  calling the node only through the operations of :class:`.net.service.NodeService`
  (this module imports the network adapters; they never import it);
* gossip: every decision is the sans-IO :class:`~.core.gossip.GossipMachine`, which
  the driver (:mod:`.net.peering`) feeds and whose commands it carries out: pushes after
  local changes and push-pull rounds with ``fanout`` random live peers every
  ``gossip_interval`` seconds;
* a timer calls :meth:`Replica.tick` at :meth:`Replica.next_deadline`, so entities whose
  evidence ages out disappear with nothing else happening;
* membership is data: the node declares ``replica:<id>`` with its URL and a liveness
  constraint (fresh observations of itself), declares it again whenever a synced write
  retracts or alters it (at start too), observes itself every ``liveness / 4`` seconds,
  and observes a peer after an exchange it started to the URL the peer declares, answered
  in the peer's name (a caller's headers prove nothing). A peer whose entity stops
  existing on this replica drops out of gossip; seeds are retried with backoff;
* signed mode (``trust_file``): the replica signs with the node's key (``key_file``, or
  ``DIR/replica.key`` made on first start) and counts only what the trust file's keys
  verify; the node re-reads the file on SIGHUP (:meth:`Node.reload_trust`, which the
  command wires) and within :data:`TRUST_CHECK` seconds of the file changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .config import NodeConfig
from .core.clocks import ClockWatch, Outlier
from .core.constraints import observed
from .core.gossip import GossipMachine
from .core.replica import Replica
from .core.trust import Trust
from .core.updates import shape
from .core.views import Change, EntityView, Observation, RecordChange, Status
from .errors import ConfigError, InputError, InvalidTrust, RemoteError
from .keys import KEY_FILE, TrustFile, check_own_key, load_key, load_or_create, trust_change
from .net.client import PeerClient
from .net.events import EventHub
from .net.metrics import NodeMetrics
from .net.peering import Peering
from .net.peers import server_ssl_context
from .net.probes import ProbeRunner
from .net.server import RequestErrorLog, create_app
from .net.service import ReplicaInfo
from .persistence import Persistence, open_replica
from .store import SQLiteStore, Store, StoreError

__all__ = ["TRUST_CHECK", "ConfigError", "Node", "NodeConfig"]

_log = logging.getLogger("sphaera_crdt.node")
#: Seconds between two looks at the trust file (an edit counts within this long).
TRUST_CHECK: Final = 1.0


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
        #: the trust file of signed mode, watched for edits (``None``: signed mode is off)
        self.trust_file = TrustFile(config.trust_file) if config.trust_file else None
        if replica is not None and (config.data_dir is not None or config.key_file):
            raise ConfigError("a node with a data directory or key file makes its own replica")
        # Read before the store is opened: a wrong key or list claims nothing on disk.
        trust = self.trust_file.read() if self.trust_file is not None else None
        #: where the signing key was read (for messages)
        self.key_source: str | None = None
        signing_key = None if replica is not None else self._signing_key(trust)
        #: the key this node's replica signs with (``None``: unsigned, or a given replica)
        self.signing_key = signing_key
        if config.data_dir is not None:
            self.store = SQLiteStore(config.data_dir, durability=config.durability)  # type: ignore[arg-type]
            try:
                replica = open_replica(
                    config.replica_id,
                    self.store,
                    clock=clock,
                    logger=self.log,
                    max_skew=config.max_clock_skew,
                    max_held_bytes=config.held_bytes_limit,
                    forget_after=config.forget_after,
                    signing_key=signing_key,
                    trust=trust,
                )
            except (StoreError, InvalidTrust):
                self.store.close()
                raise
        self.replica = replica or Replica(
            config.replica_id,
            clock=clock,
            logger=self.log,
            max_skew=config.max_clock_skew,
            max_held_bytes=config.held_bytes_limit,
            forget_after=config.forget_after,
            signing_key=signing_key,
            trust=trust,
        )
        if self.replica.id != config.replica_id:
            raise ConfigError("the replica's id differs from the configured one")
        if self.trust_file is not None and self.replica.trust != trust:
            raise ConfigError(
                f"the replica's trust list differs from trust file {self.trust_file.path}"
            )
        self.metrics = NodeMetrics()
        #: peers' clock offsets, measured with ``clock`` (the one clock of the node)
        self.clock_watch = ClockWatch(config.max_clock_skew, config.liveness_window)
        self.metrics.watch_held(lambda: self.replica.held_stats)
        self.events = EventHub()
        #: every gossip and membership decision; the server answers sync requests with it
        self.machine = GossipMachine(
            self.replica,
            interval=config.gossip_interval,
            fanout=config.fanout,
            rng=random.Random(),
            liveness=config.liveness_window,
            clocks=self.clock_watch,
            seeds=config.peers,
        )
        self.peers = self.machine.peers
        #: replica id -> URL, from the replica entities (never from a caller's headers)
        self.directory = self.machine.directory
        self.seeds = self.machine.seeds
        self.url = config.public_url or ""
        self.machine.own_url = self.url
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self.gossip: Peering | None = None
        self._client: PeerClient | None = None
        #: runs the probes of replicated records (only with ``run_probes``)
        self.probes: ProbeRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    def _signing_key(self, trust: Trust | None) -> Ed25519PrivateKey | None:
        """The replica's signing key: ``key_file``, else ``DIR/replica.key`` in signed mode
        (made on first start); checked against the trust list.

        Raises:
            InvalidTrust: The key cannot be read or made, or the list gives the replica
                another key (or none).
        """
        config = self.config
        if config.key_file is not None:
            path = config.key_file
            key = load_key(path, logger=self.log)
        elif trust is not None and config.data_dir is not None:
            try:
                os.makedirs(config.data_dir, exist_ok=True)
            except OSError as exc:
                raise InvalidTrust(f"cannot make {config.data_dir}: {exc.strerror}") from None
            path = os.path.join(config.data_dir, KEY_FILE)
            key, _ = load_or_create(path, logger=self.log)
        elif trust is not None:
            raise ConfigError("signed mode in memory needs the replica's key: give --key FILE")
        else:
            return None
        self.key_source = str(path)
        if trust is not None:
            assert self.trust_file is not None
            check_own_key(
                trust,
                config.replica_id,
                key,
                key_source=str(path),
                trust_source=str(self.trust_file.path),
            )
        return key

    @property
    def port(self) -> int:
        """The port the server is bound to (the configured one before start)."""
        return self._bound_port() if self._runner is not None else self.config.port

    @property
    def client(self) -> PeerClient:
        """The connection pool gossip talks to peers with (only while the node runs)."""
        assert self._client is not None, "the node is not running"
        return self._client

    async def _start(self) -> Self:
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
        self.machine.own_url = self.url
        try:
            self._client = PeerClient(
                self.config, replica_id=self.replica.id, url=self.url, clock=self.clock
            )
        except InputError as exc:  # its --tls-ca, certificate or key
            raise ConfigError(str(exc)) from exc
        self._declare_self()
        self.gossip = Peering(self.machine, self.client, self.metrics, self.log, self.clock)
        self._tasks.append(asyncio.create_task(self._timer(), name="sphaera-timer"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="sphaera-heartbeat"))
        if self.trust_file is not None:
            self._tasks.append(asyncio.create_task(self._watch_trust(), name="sphaera-trust"))
        self.gossip.start()
        if self.config.run_probes:
            self.probes = ProbeRunner(
                self.replica,
                allow=self.config.probe_hosts,
                allow_exec=self.config.allow_exec,
                clock=self.clock,
                logger=self.log,
            )
            self._tasks.append(asyncio.create_task(self.probes.run(), name="sphaera-probes"))
        self.log.info("replica %s listening on %s", self.replica.id, self.url)
        trust = self.replica.trust
        if trust is not None and self.trust_file is not None:
            self.log.info(
                "signed mode: %d replicas in trust file %s (digest %s), signing key %s",
                len(trust),
                self.trust_file.path,
                trust.digest,
                self.key_source or "given",
            )
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
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            server = self._runner.server
            await self._runner.cleanup()
            self._runner = None
            if server is not None:
                # A connection accepted while the server was closing is not among those
                # the cleanup closed: close it too, or its socket leaks.
                await asyncio.sleep(0)
                for handler in server.connections:
                    handler.force_close()
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
        try:
            return server_ssl_context(self.config)
        except InputError as exc:
            raise ConfigError(str(exc)) from exc

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

    def _own_record(self) -> tuple[dict[str, Any], Any]:
        """The attributes and rule this node declares ``replica:<id>`` with."""
        return {"url": self.url}, observed(self.replica_entity, within=self.config.liveness_window)

    def _own_record_holds(self) -> bool:
        """Whether the merged ``replica:<id>`` record is the one this node would declare.

        A synced write can make it differ: a peer's retraction, or a declaration by another
        replica (another owner, kind, URL or rule), possibly stamped far in the future.
        """
        view = self.replica.entity(self.replica_entity)
        if view is None:
            return False
        attrs, requires = self._own_record()
        retracted = view.status is Status.ABSENT and view.reason == "retracted"
        return (
            not retracted
            and view.kind == "replica"
            and view.owner == self.replica.id
            and view.attrs == attrs
            and view.requires == requires
        )

    def _assert_self(self) -> bool:
        """Declare ``replica:<id>`` again unless the merged record is already ours.

        The declaration is stamped by the replica's hybrid logical clock, which every
        merged stamp has moved past (``Replica._next_stamp`` takes the greater of the wall
        clock and the last stamp seen, plus one): it wins against the write it answers even
        when that write came from a clock far ahead, and replicas that hold both agree.

        Returns:
            Whether it declared.
        """
        if self._own_record_holds():
            return False
        attrs, requires = self._own_record()
        self.replica.declare(self.replica_entity, kind="replica", attrs=attrs, requires=requires)
        return True

    def _declare_self(self) -> None:
        self._assert_self()
        self.replica.observe(self.replica_entity, ok=True, ttl=self.config.liveness_window)

    def live_peers(self) -> dict[str, str]:
        """Peers to gossip with: replica entities that exist here and have a URL."""
        self.machine.forget_live()
        return self.machine.live_peers()

    # -- what the server and gossip call ---------------------------------------------------

    def handle_sync(self, body: bytes, peer_id: str | None) -> bytes:
        """Answer ``POST /v1/sync``.

        Raises:
            RemoteError: The body is malformed; nothing changed.
        """
        started = time.perf_counter()
        label = self.metrics.peer(peer_id)
        try:
            result = self.machine.request_received(body, peer_id)
        except RemoteError:
            self.metrics.sync_exchanges.labels(label, "in", "error").inc()
            raise
        self.metrics.merge_seconds.observe(time.perf_counter() - started)
        self.metrics.bytes_in.labels(label).inc(len(body))
        self.metrics.bytes_out.labels(label).inc(len(result.response))
        self.metrics.sync_exchanges.labels(label, "in", "ok").inc()
        # The caller's headers are claims: they label metrics and what it is known to
        # hold, never evidence that it is alive (see :meth:`.GossipMachine.answered`).
        return result.response

    def handle_update(self, body: bytes, peer_id: str | None) -> list[Change]:
        """Answer ``POST /v1/updates``.

        Raises:
            RemoteError: The update is malformed; nothing changed.
        """
        started = time.perf_counter()
        # parsed once: for the merge (with its items in signed mode, for the door) and
        # for what the caller holds
        needs = shape(body, items=self.replica.trust is not None)
        changes = self.replica.merge(body, needs)
        self.metrics.merge_seconds.observe(time.perf_counter() - started)
        label = self.metrics.peer(peer_id)
        self.metrics.bytes_in.labels(label).inc(len(body))
        if peer_id:
            self.peers.learn_ranges(peer_id, needs.ranges)
        return changes

    # -- what the HTTP API calls (net.service.NodeService) ---------------------------------

    @property
    def replica_id(self) -> str:
        """The id of this node's replica."""
        return self.replica.id

    def now(self) -> float:
        """This node's clock."""
        return self.clock()

    def entity(self, entity_id: str) -> EntityView | None:
        """One entity, ``None`` if it is not declared."""
        return self.replica.entity(entity_id)

    def entities(self) -> Mapping[str, EntityView]:
        """Every declared entity."""
        return self.replica.entities()

    def why(self, entity_id: str, *, depth: int) -> dict[str, Any]:
        """The explanation tree of an entity's status."""
        return self.replica.why(entity_id, depth=depth)

    def observations(self, subject: str | None = None) -> list[Observation]:
        """The latest observation of each observer, of one subject or of all subjects."""
        return self.replica.observations(subject)

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
        return self.replica.declare(
            entity_id, kind=kind, attrs=attrs, requires=requires, probe=probe
        )

    def patch(self, entity_id: str, attrs: Mapping[str, Any]) -> EntityView:
        """Merge top-level attributes into a declared entity; the entity as it now is."""
        self.replica.update(entity_id, attrs)
        return self._present(entity_id)

    def retract(self, entity_id: str) -> EntityView:
        """Retract a declared entity; the entity as it now is (``absent``)."""
        self.replica.retract(entity_id)
        return self._present(entity_id)

    def _present(self, entity_id: str) -> EntityView:
        view = self.replica.entity(entity_id)
        assert view is not None, "a written entity is declared"
        return view

    def observe(self, subject: str, *, ok: bool, value: Any, ttl: float | None) -> Observation:
        """Record this node's observation of ``subject``."""
        return self.replica.observe(subject, ok=ok, value=value, ttl=ttl)

    def forget(self, replica_id: str) -> list[str]:
        """Forget a departed replica on every replica (see :meth:`Replica.forget`).

        Returns:
            The ids forgotten (empty when this replica knows no container of it).

        Raises:
            InvalidValue: ``replica_id`` is this node's own.
        """
        before = self.replica.forgotten()
        self.replica.forget(replica_id)
        return sorted(self.replica.forgotten() - before)

    def replicas(self) -> dict[str, ReplicaInfo]:
        """Every ``replica:<id>`` entity of the merged state, this node's included."""
        replicas: dict[str, ReplicaInfo] = {}
        now = self.now()
        trust = self.replica.trust
        for view in self.replica.entities().values():
            if view.kind != "replica" or not view.id.startswith("replica:"):
                continue
            url = view.attrs.get("url")
            replica_id = view.id.removeprefix("replica:")
            own = replica_id == self.replica.id
            replicas[replica_id] = ReplicaInfo(
                url=url if type(url) is str else None,
                status=view.status,
                clock_offset=0.0 if own else self.clock_watch.offset(replica_id),
                last_seen_age=self._last_seen_age(view.id, now),
                trusted=None if trust is None else replica_id in trust,
            )
        return replicas

    def _last_seen_age(self, subject: str, now: float) -> float | None:
        """Seconds since the freshest observation of ``subject``, ``None`` if never seen."""
        times = [observation.at for observation in self.replica.observations(subject)]
        return max(0.0, now - max(times)) if times else None

    def metrics_exposition(self) -> bytes:
        """The metrics in the Prometheus text format, gauges brought up to date."""
        for status, count in self.status_counts().items():
            self.metrics.entities.labels(status).set(count)
        self.clock_outlier()  # brings the clock gauges up to date
        self.metrics.count_unreadable(self.replica.unreadable)
        return self.metrics.exposition()

    def count_rejected(self, code: str) -> None:
        """Count a request the HTTP API refused with error ``code``."""
        self.metrics.rejected.labels(code).inc()

    # -- clocks ----------------------------------------------------------------------------

    def clock_outlier(self) -> Outlier | None:
        """Whether this node's clock is now more than ``max_clock_skew`` away from a
        majority of its live peers (``None`` when it is not); logs the transitions."""
        outlier, notices = self.machine.outlier(self.clock())
        for notice in notices:
            self.log.log(notice.level, "%s", notice.text)
        self._clock_gauges()
        return outlier

    def _clock_gauges(self) -> None:
        own = self.clock_watch.own_offset(self.clock())
        self.metrics.clock_offset.set(math.nan if own is None else own)
        self.metrics.clock_outlier.set(0 if self.clock_watch.current is None else 1)

    def status_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for view in self.replica.entities().values():
            counts[view.status.value] += 1
        return counts

    # -- internals -------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        self.metrics.status_changes.labels(change.after.value).inc()
        if self.events:
            data: dict[str, Any] = change.to_json()
            data["at"] = self.now()
            kind = None
            if self.events.wants_kind:  # a lookup only a stream filtering by kind needs
                view = self.replica.entity(change.entity)
                kind = None if view is None else view.kind
            self.events.publish("change", data, entity=change.entity, kind=kind)
        self._wake.set()

    def _on_record(self, change: RecordChange) -> None:
        self._wake.set()  # local changes start gossip's eager pushes by themselves
        if change.kind != "entity" or change.local or change.id != self.replica_entity:
            return
        found = self.replica.entity(change.id)
        if self.url and self._assert_self():
            # Two nodes started with one id would take turns here: the log shows it.
            self.log.warning(
                "a synced change retracted or altered %s (owner %s, url %s); declared it again",
                change.id,
                None if found is None else found.owner,
                None if found is None else found.attrs.get("url"),
            )

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
            self.beat()

    # -- signed mode -----------------------------------------------------------------------

    @property
    def trust_digest(self) -> str | None:
        """The digest of the trust list in use; ``None`` when signed mode is off."""
        trust = self.replica.trust
        return None if trust is None else trust.digest

    async def _watch_trust(self) -> None:
        """Look at the trust file every :data:`TRUST_CHECK` seconds (a stat, no read)."""
        while True:
            await asyncio.sleep(TRUST_CHECK)
            self.check_trust()

    def check_trust(self) -> bool:
        """Re-read the trust file if it changed since it was last read (its modification
        time, size or inode); returns whether the list in use changed."""
        if self.trust_file is None or not self.trust_file.changed():
            return False
        return self.reload_trust()

    def reload_trust(self) -> bool:
        """Re-read the trust file now and apply the list it holds (SIGHUP).

        A file that cannot be read or parsed, or a list that does not give this replica
        its own key, is logged as an error and the list in use is kept.

        Returns:
            Whether the list in use changed.
        """
        if self.trust_file is None:
            self.log.info("not in signed mode: no trust file to reload")
            return False
        where = self.trust_file.path
        before = self.replica.trust
        kept = f"keeping the trust list in use (digest {None if before is None else before.digest})"
        try:
            after = self.trust_file.read()
            if self.signing_key is not None:
                check_own_key(
                    after,
                    self.replica.id,
                    self.signing_key,
                    key_source=self.key_source or "this node's key",
                    trust_source=str(where),
                )
        except InvalidTrust as exc:
            self.log.error("%s; %s", exc, kept)
            return False
        change = trust_change(before, after)
        if not change:
            self.log.debug("trust file %s read again: no change", where)
            return False
        try:
            changes = self.replica.set_trust(after)
        except InvalidTrust as exc:
            self.log.error("%s; %s", exc, kept)
            return False
        self.machine.forget_live()  # who may be a peer changed
        self._wake.set()  # deadlines may have changed with the statuses
        self.log.info(
            "trust file %s reloaded (digest %s -> %s): %s; %d status changes",
            where,
            None if before is None else before.digest,
            after.digest,
            change.describe(),
            len(changes),
        )
        return True

    def beat(self) -> bool:
        """Observe this replica (its heartbeat), unless its clock is the outlier: every
        replica would misjudge the observation's date. Returns whether it observed."""
        self.clock_outlier()  # logs the transition and brings the gauges up to date
        observe = self.machine.heartbeat(self.clock())
        if observe is None:
            return False
        self.replica.observe(f"replica:{observe.replica_id}", ok=True, ttl=observe.ttl)
        return True
