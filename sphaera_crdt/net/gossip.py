"""Gossip over HTTP: eager pushes after local changes, and periodic push-pull rounds.

Every decision (what a request carries, what an answer teaches, when to push, which peers
a round contacts, how long a failing peer waits) is made by the sans-IO
:mod:`sphaera_crdt.core.gossip`, whose docstring explains the protocol; this module drives
it with asyncio and the node's :class:`~sphaera_crdt.net.client.PeerClient`, and adds
what only a node has: peers found by URL, metrics and logs.

* **Eager push.** A local change (:func:`~sphaera_crdt.core.gossip.pushes_eagerly`) starts
  a push after :data:`DEBOUNCE` seconds: every target gets this node's own changes since
  the previous push that it is not known to hold, in a request that pulls nothing; a
  target known to hold them gets no request at all.
* **Rounds.** Every ``gossip_interval`` seconds a round starts, whatever exchanges of
  earlier rounds are still in flight: it pulls from ``fanout`` random targets (not
  backing off, no exchange in flight), one after another, and pushes each exactly what
  its answer shows it lacks. An idle round carries state vectors (and headers) only.
* **Targets** are the live peers (``replica:<id>`` entities that exist here) and the seeds
  (``--peer`` URLs), which stay candidates whatever the merged state says. A URL that a
  record declares is contacted only if it is an allowed peer (:mod:`.peers`): the merged
  state is anyone's with the token, and the token must not go wherever it points. A URL that
  failed is skipped for a while, the delay doubling per failure (capped); seeds are
  thereby retried with exponential backoff, and dead peers stop costing timeouts until
  their entity ages out and they drop out of gossip by themselves.
* **First contact.** A round with a peer we know nothing of (a seed, a freshly discovered
  or a restarted peer) is no different: its answer tells exactly what it lacks.

Exchanges with one URL never overlap (a lock per URL). The replica is touched only
between awaits, so no pycrdt transaction is ever held across one. A failing peer costs a
log line and a metric, never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.gossip import (
    BACKOFF_INTERVALS,
    DEBOUNCE,
    MAX_BACKOFF,
    Backoff,
    GossipPlanner,
    PeerExchange,
    PushSchedule,
    Request,
    choose,
    pushes_eagerly,
    round_stagger,
)
from ..core.replica import REPLICA_PREFIX
from ..core.views import Change, RecordChange
from ..errors import RemoteError, SelfContact
from .client import PeerUnavailable

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["BACKOFF_INTERVALS", "DEBOUNCE", "MAX_BACKOFF", "Exchange", "Gossip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """What gossip did with one peer: one or two sync requests to ``url``.

    Attributes:
        url: The peer's base URL.
        peer_id: Its replica id, if known (from the answer's header or the directory).
        ok: Whether every request succeeded.
        requests: Requests sent (a round takes two when the peer lacks something).
        sent: Request body bytes.
        received: Answer body bytes.
        pushed: Whether an UPDATE was sent.
        error: Why it failed.
    """

    url: str
    peer_id: str | None
    ok: bool
    requests: int = 0
    sent: int = 0
    received: int = 0
    pushed: bool = False
    error: str | None = None


class Gossip:
    """The gossip of one node. Started and stopped by :class:`~sphaera_crdt.node.Node`.

    Args:
        node: The node whose replica, peers and client gossip uses.
        rng: Source of the random choice of targets (seed it for repeatable tests).
        debounce: Seconds to gather local changes before pushing them.
    """

    def __init__(
        self, node: Node, *, rng: random.Random | None = None, debounce: float = DEBOUNCE
    ) -> None:
        self.node = node
        self.planner: GossipPlanner = node.planner
        self._rng = rng or random.Random()
        self._debounce = debounce
        self._log = node.log.getChild("gossip")
        self._running = False
        self._loop_task: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[list[Exchange]]] = set()
        self._schedule = PushSchedule()
        self._backoff: Backoff[str] = Backoff()
        self._locks: dict[str, asyncio.Lock] = {}
        #: url -> replica id, from the ``Sphaera-Replica`` header of its answers
        self._url_ids: dict[str, str] = {}
        self._self_urls: set[str] = set()
        #: declared URLs not contacted because they are not allowed (warned about once)
        self._refused: set[str] = set()
        #: node.live_peers() builds every entity's view: cached until a replica entity changes
        self._live: dict[str, str] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic rounds (the first after half to one interval)."""
        if self._running:
            return
        self._running = True
        replica = self.node.replica
        self._unsubscribe = [
            replica.subscribe(self._on_change),
            replica.subscribe_records(self._on_record),
        ]
        self._live = None
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name=f"sphaera-gossip-{self.node.replica.id}"
        )
        if self._schedule.dirty:
            self.push_soon()

    async def stop(self) -> None:
        """Stop rounds and pushes, cancelling exchanges in flight. Idempotent."""
        self._running = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        tasks: list[asyncio.Task[object]] = [
            task for task in (self._loop_task, self._pusher, *self._rounds) if task is not None
        ]
        self._loop_task = self._pusher = None
        self._rounds.clear()
        self._schedule.stopped()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        interval = self.node.config.gossip_interval
        loop = asyncio.get_running_loop()
        # Half to one interval: nodes started together do not gossip in lockstep.
        await asyncio.sleep(self._rng.uniform(interval / 2, interval))
        while True:
            started = loop.time()
            # A round runs on its own: exchanges still in flight (a lost answer waits for
            # its deadline) never hold the next round back.
            task = loop.create_task(self._logged_round(), name="sphaera-round")
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _logged_round(self) -> list[Exchange]:
        try:
            return await self.round()
        except Exception:  # a bug, not a peer's failure: report it and keep gossiping
            self._log.exception("gossip round failed")
            return []

    # -- eager push ------------------------------------------------------------------------

    def push_soon(self) -> None:
        """Push local changes to every target shortly (changes in a burst go in one push)."""
        if not self._schedule.request() or not self._running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the node's loop: the next round carries it
            return
        self._schedule.started()
        self._pusher = loop.create_task(self._push_later(), name="sphaera-push")

    async def _push_later(self) -> None:
        again = True
        while again:
            await asyncio.sleep(self._debounce)
            try:
                await self.push()
            except Exception:  # a bug, not a peer's failure
                self._log.exception("gossip push failed")
            again = self._schedule.end()

    @property
    def pushing(self) -> bool:
        """Whether a push is scheduled or in flight."""
        return self._pusher is not None and not self._pusher.done()

    async def flush(self) -> None:
        """Wait until the pushes scheduled by :meth:`push_soon` are done."""
        while (task := self._pusher) is not None and not task.done():
            await asyncio.wait([task])

    async def push(self) -> list[Exchange]:
        """Send every target this node's changes since the previous push that it is not
        known to hold; targets known to hold them are skipped."""
        self._schedule.begin()
        since = self.planner.begin_push()
        targets = list(self.targets().items())
        return await self._exchange_all(
            [
                (url, peer_id, lambda peer: self.planner.push(peer, since))
                for url, peer_id in targets
            ]
        )

    # -- rounds ----------------------------------------------------------------------------

    async def round(self) -> list[Exchange]:
        """One push-pull round with ``fanout`` random targets that have no exchange in
        flight."""
        started = time.perf_counter()
        self.planner.begin_round()
        targets = self.targets()
        urls = sorted(targets)
        chosen = choose(
            self._rng,
            self.node.config.fanout,
            len(urls),
            urls.__getitem__,
            lambda url: not self._busy(url),
        )
        config = self.node.config
        results = await self._exchange_all(
            [(url, targets[url], self.planner.round) for url in chosen],
            stagger=round_stagger(config.gossip_interval, config.fanout),
        )
        self.node.metrics.gossip_round_seconds.observe(time.perf_counter() - started)
        return results

    def _busy(self, url: str) -> bool:
        lock = self._locks.get(url)
        return lock is not None and lock.locked()

    async def _exchange_all(
        self,
        targets: list[tuple[str, str | None, Callable[[str | None], PeerExchange]]],
        *,
        stagger: float | None = None,
    ) -> list[Exchange]:
        """Exchange with all targets, at once or (with ``stagger``) each after the one
        before it ended or ``stagger`` seconds after it started; a bug with one does not
        stop the others."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Exchange | None]] = []
        try:
            for url, peer_id, plan in targets:
                if stagger is not None and tasks:
                    await asyncio.wait(tasks[-1:], timeout=stagger)
                tasks.append(loop.create_task(self._guarded(url, peer_id, plan)))
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # cancelled (stopping): so are the exchanges it started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        done: list[Exchange] = []
        for (url, _, _), result in zip(targets, results, strict=True):
            if isinstance(result, Exchange):
                done.append(result)
            elif isinstance(result, Exception):  # not a peer's failure: those are Exchanges
                self._log.error("gossip with %s failed", url, exc_info=result)
            elif isinstance(result, BaseException):
                raise result
        return done

    def targets(self) -> dict[str, str | None]:
        """URL -> replica id (if known) of live peers and seeds that are not backing off.

        A seed that is a live peer under another URL is left out, unless that URL fails.
        """
        node = self.node
        now = node.clock()
        skip = {*self._self_urls, node.url}
        due = self._backoff.due
        found: dict[str, str | None] = {
            url: peer_id
            for peer_id, url in self._live_peers().items()
            if url not in skip and due(url, now) and self._allowed(peer_id, url)
        }
        for url in node.seeds:
            if url in found or url in skip or not due(url, now):
                continue
            seed_id = self._id_for(url)
            if seed_id is None or (seed_id not in found.values() and seed_id != node.replica.id):
                found[url] = seed_id
        return found

    def _allowed(self, peer_id: str, url: str) -> bool:
        """Whether the URL a peer's record declares may be contacted (warned once if not:
        the record may be a stranger's, or the cluster lacks an ``--allow-peer``)."""
        if self.node.client.allows(url):
            return True
        if url not in self._refused:
            self._refused.add(url)
            self._log.warning(
                "not contacting %s at %s: not an allowed peer (a seed's host, loopback, "
                "--allow-peer, or https under --tls-ca)",
                peer_id,
                url,
            )
        return False

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, url: str, peer_id: str | None = None) -> Exchange:
        """Push-pull with one peer now (a round's exchange), whatever its backoff.

        Raises:
            PeerUnavailable: The peer could not be reached or refused.
            RemoteError: Its answer was unusable; nothing of it was merged.
        """
        url = url.rstrip("/")
        try:
            result = await self._exchange(url, peer_id, self.planner.round)
        except SelfContact:
            return Exchange(url=url, peer_id=self.node.replica.id, ok=False, error="this node")
        assert result is not None  # only eager pushes are skipped
        return result

    async def _guarded(
        self, url: str, peer_id: str | None, plan: Callable[[str | None], PeerExchange]
    ) -> Exchange | None:
        """:meth:`_exchange` with failures turned into backoff, logs and metrics."""
        try:
            result = await self._exchange(url, peer_id, plan)
        except (PeerUnavailable, RemoteError) as exc:
            self._failed(url, peer_id, exc)
            return Exchange(url=url, peer_id=peer_id, ok=False, error=str(exc))
        except SelfContact:
            return None
        if result is not None:
            self._succeeded(url, result.peer_id)
        return result

    async def _exchange(
        self, url: str, peer_id: str | None, plan: Callable[[str | None], PeerExchange]
    ) -> Exchange | None:
        """Run one planned exchange: its requests in turn, each answer merged and learned.

        Returns:
            What was done, or ``None`` if the plan sent nothing (an eager push to a peer
            that holds everything).
        """
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            if peer_id is None:
                peer_id = self._id_for(url)
            exchange = plan(peer_id)
            request = exchange.start()
            if request is None:
                return None
            sent = received = 0
            while request is not None:
                size, answer_size, request = await self._send(url, exchange, request)
                sent, received = sent + size, received + answer_size
            return Exchange(
                url=url,
                peer_id=exchange.peer_id,
                ok=True,
                requests=exchange.requests,
                sent=sent,
                received=received,
                pushed=exchange.pushed,
            )

    async def _send(
        self, url: str, exchange: PeerExchange, request: Request
    ) -> tuple[int, int, Request | None]:
        """Send one request; merge the answer and learn from it.

        Returns:
            Bytes sent, bytes received and the exchange's next request.
        """
        node = self.node
        body = request.body
        label = exchange.peer_id or url
        try:
            answer = await node.client.sync(url, body)
        except (PeerUnavailable, RemoteError):
            node.metrics.sync_exchanges.labels(label, "out", "error").inc()
            node.metrics.bytes_out.labels(label).inc(len(body))
            raise
        if answer.replica_id is not None:
            if answer.replica_id == node.replica.id:
                self._self_urls.add(url)
                raise SelfContact(url)
            self._url_ids[url] = answer.replica_id
        label = answer.replica_id or label
        node.metrics.bytes_out.labels(label).inc(len(body))
        node.metrics.bytes_in.labels(label).inc(len(answer.body))
        merged_before = exchange.merge_seconds
        try:
            # a seed without the header: its replica entity may tell, once merged
            follow = exchange.answered(
                answer.body, answer.replica_id, identify=lambda: self._id_for(url)
            )
        except RemoteError:
            node.metrics.sync_exchanges.labels(label, "out", "error").inc()
            raise
        if exchange.merge_seconds > merged_before:
            node.metrics.merge_seconds.observe(exchange.merge_seconds - merged_before)
        node.metrics.sync_exchanges.labels(label, "out", "ok").inc()
        if answer.replica_id is not None:
            node.measure_clock(
                answer.replica_id, url, answer.time, sent=answer.sent, received=answer.received
            )
            # Evidence of a peer: this node reached the URL it chose and the answer named
            # the peer; the node checks that the URL is the one the peer's record declares.
            node.observe_peer(answer.replica_id, url)
        return len(body), len(answer.body), follow

    # -- bookkeeping -----------------------------------------------------------------------

    def _id_for(self, url: str) -> str | None:
        """The replica id at ``url``: from its answers, else from the replica entities."""
        peer_id = self._url_ids.get(url)
        if peer_id is not None:
            return peer_id
        self._live_peers()  # fills the directory from the replica entities
        for candidate, known_url in self.node.directory.items():
            if known_url == url:
                return candidate
        return None

    def _live_peers(self) -> dict[str, str]:
        if self._live is None or not self._running:
            self._live = self.node.live_peers()
        return self._live

    def _on_change(self, change: Change) -> None:
        if change.entity.startswith(REPLICA_PREFIX):
            self._live = None

    def _on_record(self, change: RecordChange) -> None:
        if change.kind == "entity" and change.id.startswith(REPLICA_PREFIX):
            self._live = None
        if pushes_eagerly(change):
            self.push_soon()

    def _failed(self, url: str, peer_id: str | None, exc: Exception) -> None:
        failures = self._backoff.failed(url, self.node.clock(), self.node.config.gossip_interval)
        who = peer_id or url  # the error names the URL
        if failures == 1 or isinstance(exc, RemoteError):
            self._log.warning("gossip with %s failed: %s; retrying with backoff", who, exc)
        else:
            self._log.debug("gossip with %s failed again (%d): %s", who, failures, exc)

    def _succeeded(self, url: str, peer_id: str | None) -> None:
        if self._backoff.succeeded(url):
            who = f"{peer_id} ({url})" if peer_id else url
            self._log.info("gossip with %s works again", who)
