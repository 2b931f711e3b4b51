"""Durability for a node: the replica's updates go to a store before writes are answered.

Every transaction the replica commits (local write, rotation or merge) hands its Yrs update
to :meth:`Persistence.record`, which only buffers it. One writer task drains the buffer into
the store in a worker thread, so that updates arriving together are committed together
(group commit) and SQLite never blocks the event loop. A request handler that acknowledges a
write awaits :meth:`Persistence.flush` first: it returns once everything recorded before the
call is committed.

Compaction runs in the same writer task, between appends: when the log passes a size or
count threshold, the replica's whole state is encoded (on the event loop, where the
document lives) and the store replaces its snapshot and log by it in one transaction.
Updates recorded meanwhile are appended after it, so nothing is ever lost; an update may
appear in both the snapshot and the log, which is harmless because updates are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from .core.replica import Replica
from .store.base import Store, StoreError

__all__ = ["Persistence", "open_replica"]

DEFAULT_COMPACT_COUNT: Final = 10_000
DEFAULT_COMPACT_BYTES: Final = 16 * 1024 * 1024
T = TypeVar("T")
_log = logging.getLogger("sphaera_crdt.persistence")


def open_replica(
    replica_id: str,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
) -> Replica:
    """Restore the replica a store holds, or create one and claim the store for it.

    Raises:
        StoreError: The store belongs to another replica or cannot be read.
        InvalidUpdate: A saved update is corrupt.
    """
    saved = store.load(replica_id)
    if saved is None:
        replica = Replica(replica_id, clock=clock, logger=logger)
        store.initialise(replica_id, replica.delta())
        return replica
    return Replica.restore(replica_id, saved.updates, clock=clock, logger=logger)


class Persistence:
    """Group-committed appends and background compaction for one replica and its store.

    Args:
        replica: The replica; its updates are recorded from now on.
        store: Where they go.
        compact_count: Compact once the log holds this many updates...
        compact_bytes: ...or this many bytes.
    """

    def __init__(
        self,
        replica: Replica,
        store: Store,
        *,
        compact_count: int = DEFAULT_COMPACT_COUNT,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        logger: logging.Logger | None = None,
    ) -> None:
        self.replica = replica
        self.store = store
        self.compact_count = compact_count
        self.compact_bytes = compact_bytes
        self.log = logger or _log
        self._pending: list[bytes] = []
        self._recorded = 0
        self._committed = 0
        self._log_count = 0
        self._log_bytes = 0
        self.compactions = 0
        self.commits = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sphaera-store")
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._failure: BaseException | None = None
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
        """Commit what is pending, stop the writer and close the store."""
        self._unsubscribe()
        if self._task is not None:
            with contextlib.suppress(StoreError):
                await self.flush()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._run(self.store.append, batch)
                except StoreError as exc:
                    self.log.error("store append failed: %s", exc)
                    await self._fail(exc)
                    return
                self.commits += 1
                self._log_count += len(batch)
                self._log_bytes += sum(map(len, batch))
                async with self._done:
                    self._committed += len(batch)
                    self._done.notify_all()
                if self._log_count >= self.compact_count or self._log_bytes >= self.compact_bytes:
                    try:
                        await self._compact()
                    except StoreError as exc:
                        self.log.error("compaction failed: %s", exc)
                        await self._fail(exc)
                        return

    async def _compact(self) -> None:
        snapshot = self.replica.delta()
        await self._run(self.store.compact, snapshot)
        self._log_count = 0
        self._log_bytes = 0
        self.compactions += 1

    async def _fail(self, exc: BaseException) -> None:
        async with self._done:
            self._failure = exc
            self._done.notify_all()
