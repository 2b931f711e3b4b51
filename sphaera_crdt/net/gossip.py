"""Gossip: eager pushes after local changes, and periodic push-pull rounds.

Theory of operation
-------------------
Every exchange is one ``POST /v1/sync`` round trip: we send STEP1 (our state vector) and,
when the peer lacks something, an UPDATE; the peer merges it and answers STEP2 (what we
lack) and STEP1 (its state vector after the merge). What a peer holds is tracked in the
node's :class:`~sphaera_crdt.core.sync.PeerKnowledge`, so an UPDATE is always a delta
against the peer's last known state vector: never a raw per-transaction update, never
something the peer sent us or already told us it has (no echo).

* **Eager push.** Node calls :meth:`Gossip.push_soon` after every local change. Changes
  within :data:`DEBOUNCE` seconds are batched into one push, which sends each target the
  delta it lacks; a target known to have everything gets no request at all.
* **Rounds.** Every ``gossip_interval`` seconds, :meth:`Gossip.round` exchanges with
  ``fanout`` random targets, pushing what they lack and pulling what we lack. An idle
  round carries state vectors (and headers) only.
* **Targets** are the live peers (``replica:<id>`` entities that exist here) and the seeds
  (``--peer`` URLs), which stay candidates whatever the merged state says. A URL that
  failed is skipped for a while, the delay doubling per failure (capped); seeds are
  thereby retried with exponential backoff, and dead peers stop costing timeouts until
  their entity ages out and they drop out of gossip by themselves.
* **First contact.** With a peer we know nothing of (a seed, a freshly discovered or a
  restarted peer), the first request is STEP1 only; the peer's answering STEP1 tells us
  exactly what it lacks, which a follow-up request pushes. A peer whose state vector shows
  less than we believed it had (it restarted without its state) is forgotten and
  re-learned the same way.

The replica is touched only between awaits, so no pycrdt transaction is ever held across
one. A failing peer costs a log line and a metric, never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..core import sync
from ..core.lib0 import decode_state_vector
from ..core.replica import REPLICA_PREFIX
from ..core.views import Change, RecordChange
from ..errors import RemoteError, SphaeraError
from .client import PeerUnavailable

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["DEBOUNCE", "Exchange", "Gossip"]

#: Seconds local changes are gathered before one push carries them all.
DEBOUNCE: Final = 0.005
#: A failing URL is retried after at most this many gossip intervals ...
BACKOFF_INTERVALS: Final = 16
#: ... and at most this many seconds.
MAX_BACKOFF: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """What gossip did with one peer: one or two sync requests to ``url``.

    Attributes:
        url: The peer's base URL.
        peer_id: Its replica id, if known (from the answer's header or the directory).
        ok: Whether every request succeeded.
        requests: Requests sent (a first contact takes two when the peer lacks something).
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


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    retry_at: float = -math.inf


class _SelfContact(SphaeraError):
    """A target URL turned out to be this node's own (a seed list that names it)."""


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
        self._rng = rng or random.Random()
        self._debounce = debounce
        self._log = node.log.getChild("gossip")
        self._running = False
        self._loop_task: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._dirty = False
        self._backoff: dict[str, _Backoff] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: url -> replica id, from the ``Sphaera-Replica`` header of its answers
        self._url_ids: dict[str, str] = {}
        self._self_urls: set[str] = set()
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
        if self._dirty:
            self.push_soon()

    async def stop(self) -> None:
        """Stop rounds and pushes, cancelling exchanges in flight. Idempotent."""
        self._running = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        tasks = [task for task in (self._loop_task, self._pusher) if task is not None]
        self._loop_task = self._pusher = None
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
            try:
                await self.round()
            except Exception:  # a bug, not a peer's failure: report it and keep gossiping
                self._log.exception("gossip round failed")
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    # -- eager push ------------------------------------------------------------------------

    def push_soon(self) -> None:
        """Push local changes to every target shortly (changes in a burst go in one push)."""
        self._dirty = True
        if not self._running or (self._pusher is not None and not self._pusher.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the node's loop: the next round carries it
            return
        self._pusher = loop.create_task(self._push_later(), name="sphaera-push")

    async def _push_later(self) -> None:
        while self._dirty:
            await asyncio.sleep(self._debounce)
            self._dirty = False
            try:
                await self.push()
            except Exception:  # a bug, not a peer's failure
                self._log.exception("gossip push failed")

    @property
    def pushing(self) -> bool:
        """Whether a push is scheduled or in flight."""
        return self._pusher is not None and not self._pusher.done()

    async def flush(self) -> None:
        """Wait until the pushes scheduled by :meth:`push_soon` are done."""
        while (task := self._pusher) is not None and not task.done():
            await asyncio.wait([task])

    async def push(self) -> list[Exchange]:
        """Send every target what it lacks; targets known to have everything are skipped."""
        return await self._exchange_all(list(self.targets().items()), eager=True)

    # -- rounds ----------------------------------------------------------------------------

    async def round(self) -> list[Exchange]:
        """One push-pull round with ``fanout`` random targets."""
        started = time.perf_counter()
        targets = self.targets()
        fanout = min(self.node.config.fanout, len(targets))
        chosen = self._rng.sample(sorted(targets), fanout)
        results = await self._exchange_all([(url, targets[url]) for url in chosen], eager=False)
        self.node.metrics.gossip_round_seconds.observe(time.perf_counter() - started)
        return results

    async def _exchange_all(
        self, targets: list[tuple[str, str | None]], *, eager: bool
    ) -> list[Exchange]:
        """Exchange with all targets at once; a bug with one does not stop the others."""
        results = await asyncio.gather(
            *(self._guarded(url, peer_id, eager=eager) for url, peer_id in targets),
            return_exceptions=True,
        )
        done: list[Exchange] = []
        for (url, _), result in zip(targets, results, strict=True):
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
        found: dict[str, str | None] = {
            url: peer_id
            for peer_id, url in self._live_peers().items()
            if url not in skip and self._due(url, now)
        }
        for url in node.seeds:
            if url in found or url in skip or not self._due(url, now):
                continue
            seed_id = self._id_for(url)
            if seed_id is None or (seed_id not in found.values() and seed_id != node.replica.id):
                found[url] = seed_id
        return found

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, url: str, peer_id: str | None = None) -> Exchange:
        """Push-pull with one peer now, whatever its backoff.

        Raises:
            PeerUnavailable: The peer could not be reached or refused.
            RemoteError: Its answer was unusable; nothing of it was merged.
        """
        url = url.rstrip("/")
        try:
            result = await self._exchange(url, peer_id, eager=False)
        except _SelfContact:
            return Exchange(url=url, peer_id=self.node.replica.id, ok=False, error="this node")
        assert result is not None  # only eager exchanges are skipped
        return result

    async def _guarded(self, url: str, peer_id: str | None, *, eager: bool) -> Exchange | None:
        """:meth:`_exchange` with failures turned into backoff, logs and metrics."""
        try:
            result = await self._exchange(url, peer_id, eager=eager)
        except (PeerUnavailable, RemoteError) as exc:
            self._failed(url, peer_id, exc)
            return Exchange(url=url, peer_id=peer_id, ok=False, error=str(exc))
        except _SelfContact:
            return None
        if result is not None:
            self._succeeded(url, result.peer_id)
        return result

    async def _exchange(self, url: str, peer_id: str | None, *, eager: bool) -> Exchange | None:
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            if peer_id is None:
                peer_id = self._id_for(url)
            push: bytes | None = None
            known = False
            if peer_id is not None and self._knows(peer_id):
                known = True
                push = self.node.peers.pending(self.node.replica, peer_id)
            if eager and known and push is None:
                return None
            sent, received, peer_id, peer_state = await self._send(url, peer_id, push)
            requests, pushed = 1, push is not None
            if peer_state is not None:
                lacking = sync.delta_for(self.node.replica, peer_state)
                if lacking != sync.EMPTY_UPDATE:
                    more_sent, more_received, peer_id, _ = await self._send(url, peer_id, lacking)
                    sent, received = sent + more_sent, received + more_received
                    requests, pushed = 2, True
            return Exchange(
                url=url,
                peer_id=peer_id,
                ok=True,
                requests=requests,
                sent=sent,
                received=received,
                pushed=pushed,
            )

    async def _send(
        self, url: str, peer_id: str | None, push: bytes | None
    ) -> tuple[int, int, str | None, bytes | None]:
        """One request; merge the answer and learn from it.

        Returns:
            Bytes sent, bytes received, the peer's id and its announced state vector.
        """
        node = self.node
        body = sync.sync_request(node.replica, push)
        label = peer_id or url
        try:
            answer = await node.client.sync(url, body)
        except (PeerUnavailable, RemoteError):
            node.metrics.sync_exchanges.labels(label, "out", "error").inc()
            node.metrics.bytes_out.labels(label).inc(len(body))
            raise
        if answer.replica_id is not None:
            if answer.replica_id == node.replica.id:
                self._self_urls.add(url)
                raise _SelfContact(url)
            peer_id = answer.replica_id
            self._url_ids[url] = peer_id
        label = peer_id or url
        node.metrics.bytes_out.labels(label).inc(len(body))
        node.metrics.bytes_in.labels(label).inc(len(answer.body))
        try:
            states, updates = _parse_answer(answer.body)
            started = time.perf_counter()
            sync.merge_update(node.replica, updates)
            node.metrics.merge_seconds.observe(time.perf_counter() - started)
        except RemoteError:
            node.metrics.sync_exchanges.labels(label, "out", "error").inc()
            raise
        node.metrics.sync_exchanges.labels(label, "out", "ok").inc()
        peer_state = states[-1] if states else None
        if peer_id is None:  # a seed without the header: its replica entity may tell now
            peer_id = self._id_for(url)
        if peer_id is not None:
            self._learn(peer_id, peer_state, push)
            node.note_peer(peer_id, answer.url or url)
            node.observe_peer(peer_id)
        return len(body), len(answer.body), peer_id, peer_state

    def _learn(self, peer_id: str, peer_state: bytes | None, push: bytes | None) -> None:
        """Update what we know ``peer_id`` holds from its answer."""
        peers = self.node.peers
        if peer_state is None:  # a server that does not announce its state has our push
            if push is not None:
                peers.learn_update(peer_id, push)
            return
        known = peers.peers.get(peer_id)
        if known is not None and not sync.covers(decode_state_vector(peer_state), known.known):
            # It holds less than it once did: restarted without its state. Start over.
            self._log.debug("peer %s holds less than before; re-learning its state", peer_id)
            peers.forget(peer_id)
        peers.learn_state(peer_id, peer_state)

    # -- bookkeeping -----------------------------------------------------------------------

    def _knows(self, peer_id: str) -> bool:
        state = self.node.peers.peers.get(peer_id)
        return state is not None and bool(state.known)

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

    def _due(self, url: str, now: float) -> bool:
        backoff = self._backoff.get(url)
        return backoff is None or now >= backoff.retry_at

    def _failed(self, url: str, peer_id: str | None, exc: Exception) -> None:
        backoff = self._backoff.setdefault(url, _Backoff())
        backoff.failures += 1
        interval = self.node.config.gossip_interval
        cap = max(interval, min(MAX_BACKOFF, BACKOFF_INTERVALS * interval))
        delay = min(cap, interval * 2 ** min(backoff.failures - 1, 32))
        backoff.retry_at = self.node.clock() + delay
        who = peer_id or url  # the error names the URL
        if backoff.failures == 1 or isinstance(exc, RemoteError):
            self._log.warning("gossip with %s failed: %s; retrying with backoff", who, exc)
        else:
            self._log.debug("gossip with %s failed again (%d): %s", who, backoff.failures, exc)

    def _succeeded(self, url: str, peer_id: str | None) -> None:
        backoff = self._backoff.pop(url, None)
        if backoff is not None:
            who = f"{peer_id} ({url})" if peer_id else url
            self._log.info("gossip with %s works again", who)


def _parse_answer(body: bytes) -> tuple[list[bytes], list[bytes]]:
    """A sync answer's state vectors (checked) and updates.

    Raises:
        RemoteError: The answer is not well-formed sync messages.
    """
    states: list[bytes] = []
    updates: list[bytes] = []
    for message in sync.decode_messages(body):
        if message.type is sync.MessageType.STEP1:
            decode_state_vector(message.payload)
            states.append(message.payload)
        else:
            updates.append(message.payload)
    return states, updates
