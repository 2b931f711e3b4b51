"""The node's gossip driver: the replica's :class:`~sphaera_crdt.core.gossip.GossipMachine`
fed by asyncio, its commands carried out over HTTP.

Every decision (when rounds and pushes run, whom they contact, what a request carries,
what an answer teaches, when a peer counts as seen, how long a failing peer waits) is the
machine's; its module docstring explains the protocol. This module turns the machine's
deadlines into tasks and sleeps, its requests into ``POST /v1/sync`` calls of the
:class:`~sphaera_crdt.net.client.PeerClient`, and adds what only a node has: metrics and
log lines. Exchanges with one URL never overlap (the machine queues them). The replica is
touched only between awaits, so no pycrdt transaction is ever held across one. A failing
peer costs a log line and a metric, never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..core.gossip import (
    Answer,
    GossipMachine,
    PeerExchange,
    Request,
    StartPush,
    StartRound,
    Target,
)
from ..core.views import Change, RecordChange
from ..errors import RemoteError
from .client import PeerUnavailable, SyncAnswer
from .metrics import NodeMetrics

__all__ = ["Exchange", "PeerLink", "Peering"]

T = TypeVar("T")


class PeerLink(Protocol):
    """What the driver needs of the HTTP client."""

    def allows(self, url: str) -> bool: ...

    async def sync(self, url: str, body: bytes) -> SyncAnswer: ...


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


class Peering:
    """Runs one node's gossip machine. Started and stopped by :class:`~sphaera_crdt.node.Node`.

    Args:
        machine: The gossip machine (it owns the replica it gossips).
        client: Sends sync requests; says which URLs may be contacted.
        metrics: The node's metrics.
        log: The node's logger.
        clock: The node's clock (the machine's ``now``).
    """

    def __init__(
        self,
        machine: GossipMachine,
        client: PeerLink,
        metrics: NodeMetrics,
        log: logging.Logger,
        clock: Callable[[], float],
    ) -> None:
        self.machine = machine
        machine.allows = client.allows
        self._client, self._metrics, self._clock = client, metrics, clock
        self._log = log.getChild("gossip")
        self._clock_log = log  # clock notices are the node's, not the gossip's
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pusher: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic rounds (the first after half to one interval)."""
        if self._running:
            return
        self._running = True
        replica = self.machine.replica
        self._unsubscribe = [
            replica.subscribe(self._on_change),
            replica.subscribe_records(self._on_record),
        ]
        self.machine.forget_live()
        self._spawn(self._run(), f"sphaera-gossip-{replica.id}")
        if self.machine.push_wanted:
            now = self._clock()
            self._push_at(self.machine.push_scheduled(now), now)

    async def stop(self) -> None:
        """Stop rounds and pushes, cancelling exchanges in flight. Idempotent."""
        self._running = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        tasks, self._tasks, self._pusher = list(self._tasks), set(), None
        self.machine.push_stopped()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stamp(self) -> tuple[float, float]:
        """The node's clock (the machine's ``now``) and the loop's monotonic clock."""
        return self._clock(), asyncio.get_running_loop().time()

    @staticmethod
    async def _sleep_until(deadline: float, now: float, issued: float) -> None:
        """Sleep until the machine's ``deadline``, given at ``now`` when the loop's clock
        read ``issued``: timed on the monotonic clock, so a step of the wall clock neither
        stalls nor rushes the gossip."""
        elapsed = asyncio.get_running_loop().time() - issued
        await asyncio.sleep(max(0.0, deadline - now - elapsed))

    async def _run(self) -> None:
        now, issued = self._stamp()
        await self._sleep_until(self.machine.first_round(now), now, issued)
        while True:
            # A round runs on its own: exchanges still in flight never hold the next back.
            now, issued = self._stamp()
            command = self.machine.round_due(now)
            self._spawn(self._logged(functools.partial(self.round, command)), "sphaera-round")
            await self._sleep_until(command.next_round, now, issued)

    async def _logged(self, work: Callable[[], Awaitable[object]]) -> None:
        # The coroutine is made here: a task cancelled before it starts leaves none unawaited.
        try:
            await work()
        except Exception:  # a bug, not a peer's failure: report it and keep gossiping
            self._log.exception("gossip failed")

    # -- eager push ------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        self.machine.entity_changed(change.entity)

    def _on_record(self, change: RecordChange) -> None:
        now = self._clock()
        deadline = self.machine.record_changed(change, now)
        if deadline is not None:
            self._push_at(deadline, now)

    def _push_at(self, deadline: float, now: float) -> None:
        try:
            issued = asyncio.get_running_loop().time()
        except RuntimeError:  # called outside the node's loop: the next round carries it
            self.machine.push_stopped()
            return
        self._pusher = self._spawn(self._pushes(deadline, now, issued), "sphaera-push")

    async def _pushes(self, deadline: float | None, now: float, issued: float) -> None:
        while deadline is not None:
            await self._sleep_until(deadline, now, issued)
            await self._logged(self.push)
            now, issued = self._stamp()
            deadline = self.machine.push_ended(now)

    @property
    def pushing(self) -> bool:
        """Whether a push is scheduled or in flight."""
        return self._pusher is not None and not self._pusher.done()

    async def flush(self) -> None:
        """Wait until the scheduled pushes are done."""
        while (task := self._pusher) is not None and not task.done():
            await asyncio.wait([task])

    async def push(self) -> list[Exchange]:
        """Push this node's changes since the previous push to every target now."""
        command = self.machine.push_due(self._clock())
        self._refused(command.refused)
        return await self._all(command.targets, command, None)

    # -- rounds ----------------------------------------------------------------------------

    async def round(self, command: StartRound | None = None) -> list[Exchange]:
        """One push-pull round: the one the machine started, or a new one now."""
        started = time.perf_counter()
        if command is None:
            command = self.machine.round_due(self._clock())
        self._refused(command.refused)
        results = await self._all(command.targets, None, command.stagger)
        self._metrics.gossip_round_seconds.observe(time.perf_counter() - started)
        return results

    def targets(self) -> dict[str, str | None]:
        """URL -> replica id (if known) of the peers the machine may contact now."""
        targets, refused = self.machine.targets(self._clock())
        self._refused(refused)
        return {target.url: target.peer_id for target in targets}

    def _refused(self, refused: tuple[Target, ...]) -> None:
        for target in refused:
            self._log.warning(
                "not contacting %s at %s: not an allowed peer (a seed's host, loopback, "
                "--allow-peer, or https under --tls-ca)",
                target.peer_id,
                target.url,
            )

    async def _all(
        self, targets: tuple[Target, ...], push: StartPush | None, stagger: float | None
    ) -> list[Exchange]:
        """Exchange with all targets, at once or each after the one before it ended or
        ``stagger`` seconds after it started; a bug with one does not stop the others."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Exchange | None]] = []
        try:
            for target in targets:
                if stagger is not None and tasks:
                    await asyncio.wait(tasks[-1:], timeout=stagger)
                tasks.append(loop.create_task(self._guarded(target, push)))
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # cancelled (stopping): so are the exchanges it started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        done: list[Exchange] = []
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, Exchange):
                done.append(result)
            elif isinstance(result, Exception):  # not a peer's failure: those are Exchanges
                self._log.error("gossip with %s failed", target.url, exc_info=result)
            elif isinstance(result, BaseException):
                raise result
        return done

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, url: str, peer_id: str | None = None) -> Exchange:
        """Push-pull with one peer now (a round's exchange), whatever its backoff.

        Raises:
            PeerUnavailable: The peer could not be reached or refused.
            RemoteError: Its answer was unusable; nothing of it was merged.
        """
        target = Target(url=url.rstrip("/"), peer_id=peer_id)
        result = await self._exchange(target, None)
        assert result is not None  # only eager pushes are skipped
        return result

    async def _guarded(self, target: Target, push: StartPush | None) -> Exchange | None:
        """:meth:`_exchange`, its outcome told to the machine, logged and counted."""
        url, who = target.url, target.peer_id or target.url
        try:
            result = await self._exchange(target, push)
        except (PeerUnavailable, RemoteError) as exc:
            failure = self.machine.failed(url, self._clock(), remote=isinstance(exc, RemoteError))
            if failure.loud:
                self._log.warning("gossip with %s failed: %s; retrying with backoff", who, exc)
            else:
                self._log.debug("gossip with %s failed again (%d): %s", who, failure.failures, exc)
            return Exchange(url=url, peer_id=target.peer_id, ok=False, error=str(exc))
        if result is not None and not result.ok:
            return None  # this node's own URL (a seed list that names it)
        if result is not None and self.machine.succeeded(url):
            self._log.info(
                "gossip with %s works again", f"{result.peer_id} ({url})" if result.peer_id else url
            )
        return result

    async def _exchange(self, target: Target, push: StartPush | None) -> Exchange | None:
        """One exchange, when the machine lets it run: its requests in turn, each answer
        handed to the machine. ``None``: the plan sent nothing."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def go() -> None:
            if turn.cancelled():  # it stopped waiting: the turn passes to the next one
                self.machine.release(target.url)
            elif not turn.done():
                turn.set_result(None)

        if not self.machine.acquire(target.url, go):
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():  # its turn came as it was cancelled
                    self.machine.release(target.url)
                raise
        try:
            return await self._run_exchange(target, push)
        finally:
            self.machine.release(target.url)

    async def _run_exchange(self, target: Target, push: StartPush | None) -> Exchange | None:
        machine, url = self.machine, target.url
        exchange = (
            machine.round_exchange(target)
            if push is None
            else machine.push_exchange(target, push.since)
        )
        request = exchange.start()
        if request is None:
            return None
        sent = received = 0
        while request is not None:
            body = request.body
            answer, request = await self._send(url, exchange, body)
            if answer is None:  # this node's own URL
                return Exchange(url=url, peer_id=machine.replica.id, ok=False, error="this node")
            sent, received = sent + len(body), received + len(answer.body)
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
        self, url: str, exchange: PeerExchange, body: bytes
    ) -> tuple[SyncAnswer | None, Request | None]:
        metrics, label = self._metrics, exchange.peer_id or url
        try:
            answer = await self._client.sync(url, body)
        except (PeerUnavailable, RemoteError):
            metrics.sync_exchanges.labels(label, "out", "error").inc()
            metrics.bytes_out.labels(label).inc(len(body))
            raise
        if answer.replica_id != self.machine.replica.id:
            metrics.bytes_out.labels(answer.replica_id or label).inc(len(body))
            metrics.bytes_in.labels(answer.replica_id or label).inc(len(answer.body))
        event = Answer(
            body=answer.body,
            replica_id=answer.replica_id,
            time=answer.time,
            sent=answer.sent,
            received=answer.received,
        )
        label = answer.replica_id or label
        try:
            outcome = self.machine.answered(exchange, url, event, self._clock())
        except RemoteError:
            metrics.sync_exchanges.labels(label, "out", "error").inc()
            raise
        if outcome.self_contact:
            return None, None
        if outcome.merged:
            metrics.merge_seconds.observe(outcome.merge_seconds)
        metrics.sync_exchanges.labels(label, "out", "ok").inc()
        for notice in outcome.notices:
            self._clock_log.log(notice.level, "%s", notice.text)
        clocks = self.machine.clocks
        if outcome.peer_offset is not None and answer.replica_id is not None and clocks:
            metrics.peer_clock_offset.labels(metrics.peer(answer.replica_id)).set(
                outcome.peer_offset
            )
            own = clocks.own_offset(self._clock())
            metrics.clock_offset.set(math.nan if own is None else own)
            metrics.clock_outlier.set(0 if clocks.current is None else 1)
        if outcome.observe is not None:
            self.machine.replica.observe(
                f"replica:{outcome.observe.replica_id}", ok=True, ttl=outcome.observe.ttl
            )
        return answer, outcome.send
