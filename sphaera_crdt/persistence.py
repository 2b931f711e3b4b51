"""Durability for a node: the replica's updates go to a store before writes are answered.

Every transaction the replica commits (local write, rotation or merge) hands its Yrs update
to :meth:`Persistence.record`, which only buffers it. One writer task drains the buffer into
the store in a worker thread, so that updates arriving together are committed together
(group commit) and SQLite never blocks the event loop. A request handler that acknowledges a
write awaits :meth:`Persistence.flush` first: it returns once everything recorded before the
call is committed.

Compaction runs in the same writer task, between appends: when the log passes a count or
size threshold, or outweighs a quarter of the snapshot, the replica's whole state is
encoded (on the event loop, where the document lives) and the store replaces its snapshot
and log by it in one transaction. The encoding includes every update recorded so far, and the worker
thread runs store calls in the order they were made, so updates recorded meanwhile are
appended after the new snapshot and nothing is ever lost; an update may appear in both the
snapshot and the log, which is harmless because updates are idempotent.

If the store fails, the writer stops and every later :meth:`Persistence.flush` raises:
the node stops acknowledging writes rather than acknowledge what it did not keep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .core.causal import MAX_HELD_BYTES
from .core.formulas import DEFAULT_MAX_SKEW
from .core.replica import Replica
from .core.trust import Trust
from .errors import InvalidUpdate
from .store.base import Store, StoreError

__all__ = ["Persistence", "open_replica"]

DEFAULT_COMPACT_COUNT: Final = 10_000
DEFAULT_COMPACT_BYTES: Final = 16 * 1024 * 1024
#: Compact once the log outweighs this fraction of the snapshot (the update, before the
#: store compresses it)...
DEFAULT_COMPACT_RATIO: Final = 0.25
#: ...unless it is smaller than this (a small replica would compact at every write).
MIN_RATIO_BYTES: Final = 64 * 1024
T = TypeVar("T")
_log = logging.getLogger("sphaera_crdt.persistence")


def open_replica(
    replica_id: str,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
    max_skew: float = DEFAULT_MAX_SKEW,
    max_held_bytes: int = MAX_HELD_BYTES,
    forget_after: float | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    trust: Trust | None = None,
) -> Replica:
    """Restore the replica a store holds, or create one and claim the store for it.

    A restored replica's whole state is saved back as the store's snapshot before it is
    returned: restoring writes too (a fresh container holding the entries of the earlier
    ones, which are retired), before anything can subscribe to the replica's updates.
    Every later update builds on those writes, so a log without them would hold updates
    whose predecessors are missing, and the next start would silently drop them.

    ``signing_key`` and ``trust`` are those of :class:`Replica` (signed mode); a restored
    replica in signed mode signs its rewritten container with ``signing_key``.

    Raises:
        StoreError: The store belongs to another replica, cannot be read or written, or
            holds an update that cannot be applied.
        InvalidTrust: ``signing_key`` is not the key ``trust`` gives for ``replica_id``.
    """
    saved = store.load(replica_id)
    if saved is None:
        replica = Replica(
            replica_id,
            clock=clock,
            logger=logger,
            max_skew=max_skew,
            max_held_bytes=max_held_bytes,
            forget_after=forget_after,
            signing_key=signing_key,
            trust=trust,
        )
        store.initialise(replica_id, replica.delta())
        return replica
    try:
        replica = Replica.restore(
            replica_id,
            saved.updates,
            clock=clock,
            logger=logger,
            max_skew=max_skew,
            max_held_bytes=max_held_bytes,
            forget_after=forget_after,
            signing_key=signing_key,
            trust=trust,
        )
    except InvalidUpdate as exc:
        raise StoreError(f"{store.location} holds a corrupt update: {exc}") from exc
    store.compact(replica.delta())
    return replica


class Persistence:
    """Group-committed appends and background compaction for one replica and its store.

    Args:
        replica: The replica; its updates are recorded from now on.
        store: Where they go.
        compact_count: Compact once the log holds this many updates...
        compact_bytes: ...or this many bytes...
        compact_ratio: ...or more bytes than this fraction of the snapshot (and at least
            :data:`MIN_RATIO_BYTES`). The store then holds at most ``1 + compact_ratio``
            times the state, however long the history, and each compaction (which costs
            the size of the state) is paid for by that many bytes of appends. Snapshots
            are stored compressed and heartbeats are not, so the log is most of the disk
            use of a small replica: a quarter keeps it well below the state's size.
    """

    def __init__(
        self,
        replica: Replica,
        store: Store,
        *,
        compact_count: int = DEFAULT_COMPACT_COUNT,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        compact_ratio: float = DEFAULT_COMPACT_RATIO,
        logger: logging.Logger | None = None,
    ) -> None:
        self.replica = replica
        self.store = store
        self.compact_count = compact_count
        self.compact_bytes = compact_bytes
        self.compact_ratio = compact_ratio
        self.log = logger or _log
        self._pending: list[bytes] = []
        self._recorded = 0
        self._committed = 0
        stats = store.stats()
        self._log_count = stats.log_count
        self._log_bytes = stats.log_bytes
        self._snapshot_bytes = stats.snapshot_bytes
        self.compactions = 0
        self.commits = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sphaera-store")
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._failure: BaseException | None = None
        self._closing = False
        self._unsubscribe = replica.on_update(self.record)
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._writer(), name="sphaera-store-writer"
        )

    def record(self, update: bytes) -> None:
        """Buffer one committed transaction's update (called by the replica)."""
        self._pending.append(update)
        self._recorded += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once every update recorded before the call is in the store.

        Raises:
            StoreError: The store failed; the node must not acknowledge writes.
        """
        target = self._recorded
        async with self._done:
            await self._done.wait_for(lambda: self._committed >= target or self._failure)
        if self._failure is not None:
            raise StoreError(f"the store failed: {self._failure}") from self._failure

    async def compact(self) -> None:
        """Compact now (after pending appends)."""
        await self.flush()
        await self._compact()

    async def close(self) -> None:
        """Commit what is pending, let a compaction under way finish, close the store.

        Idempotent. The writer is not cancelled: a store call already handed to the worker
        thread would run anyway, and one still queued would be dropped.
        """
        if self._closing:
            return
        self._closing = True
        self._unsubscribe()
        if self._task is not None:
            self._wake.set()
            await self._task  # returns once nothing is pending (or the store failed)
            self._task = None
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _writer(self) -> None:
        doing = "append"
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    batch, self._pending = self._pending, []
                    doing = "append"
                    await self._run(self.store.append, batch)
                    self.commits += 1
                    self._log_count += len(batch)
                    self._log_bytes += sum(map(len, batch))
                    async with self._done:
                        self._committed += len(batch)
                        self._done.notify_all()
                    if self._compaction_due():
                        doing = "compaction"
                        await self._compact()
                if self._closing:
                    return
        except Exception as exc:
            # Whatever the store raised, no later write may be acknowledged: flush()
            # raises from now on (a writer that died silently would make it wait forever).
            self.log.error("store %s failed: %s", doing, exc)
            await self._fail(exc)

    def _compaction_due(self) -> bool:
        ratio_bytes = max(MIN_RATIO_BYTES, self.compact_ratio * self._snapshot_bytes)
        return (
            self._log_count >= self.compact_count
            or self._log_bytes >= self.compact_bytes
            or self._log_bytes >= ratio_bytes
        )

    async def _compact(self) -> None:
        snapshot = self.replica.delta()
        await self._run(self.store.compact, snapshot)
        self._log_count = 0
        self._log_bytes = 0
        self._snapshot_bytes = len(snapshot)
        self.compactions += 1

    async def _fail(self, exc: BaseException) -> None:
        async with self._done:
            self._failure = exc
            self._done.notify_all()
