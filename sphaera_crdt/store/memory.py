"""A store that keeps everything in memory: for ``--memory`` nodes and for tests."""

from __future__ import annotations

from .base import Saved, StoreError, StoreStats

__all__ = ["MemoryStore"]


class MemoryStore:
    """The in-memory implementation of :class:`~sphaera_crdt.store.base.Store`."""

    def __init__(self) -> None:
        self._replica_id: str | None = None
        self._snapshot = b""
        self._log: list[bytes] = []
        self._closed = False

    def reopened(self) -> MemoryStore:
        """A new store holding what this one holds now, as a file is opened again.

        It works on a closed store too: a test "restarts" a replica from the same data,
        or takes what was committed at some instant as a crash would leave it.
        """
        store = MemoryStore()
        store._replica_id = self._replica_id
        store._snapshot = self._snapshot
        store._log = list(self._log)
        return store

    @property
    def location(self) -> str:
        return "memory"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the memory store is closed")

    def load(self, replica_id: str) -> Saved | None:
        self._check_open()
        if self._replica_id is None:
            return None
        if self._replica_id != replica_id:
            raise StoreError(
                f"the memory store belongs to replica {self._replica_id!r}, not {replica_id!r}"
            )
        return Saved(replica_id=replica_id, updates=[self._snapshot, *self._log])

    def initialise(self, replica_id: str, snapshot: bytes) -> None:
        self._check_open()
        if self._replica_id is not None:
            raise StoreError(f"the memory store already belongs to {self._replica_id!r}")
        self._replica_id = replica_id
        self._snapshot = snapshot

    def append(self, updates: list[bytes]) -> None:
        self._check_open()
        if self._replica_id is None:
            raise StoreError("append to a store that was never initialised")
        self._log.extend(updates)

    def compact(self, snapshot: bytes) -> None:
        self._check_open()
        if self._replica_id is None:
            raise StoreError("compact a store that was never initialised")
        self._snapshot = snapshot
        self._log.clear()

    def stats(self) -> StoreStats:
        log_bytes = sum(map(len, self._log))
        return StoreStats(
            log_count=len(self._log),
            log_bytes=log_bytes,
            snapshot_bytes=len(self._snapshot),
            file_bytes=log_bytes + len(self._snapshot),
        )

    def close(self) -> None:
        self._closed = True
