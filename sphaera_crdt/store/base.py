"""The storage protocol: what a durable replica needs from a store, and nothing more.

A store holds one replica's identity (its replica id), one snapshot (a Yrs
update of the whole state) and an append-only log of the updates committed since. Loading
replays ``snapshot + log`` in order. Every implementation passes the same contract suite
(``tests/store_contract.py``).

Stores are synchronous; the node calls them from one worker thread and batches appends
(group commit). ``stats()`` may also be called from another thread meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import StoreError

__all__ = ["Saved", "Store", "StoreError", "StoreStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Saved:
    """What a store holds for its replica."""

    replica_id: str
    updates: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStats:
    """Sizes, for compaction decisions, metrics and benchmarks."""

    log_count: int
    log_bytes: int
    snapshot_bytes: int
    file_bytes: int


class Store(Protocol):
    """One replica's durable state."""

    @property
    def location(self) -> str:
        """Where the data lives, for messages: a file path, or ``"memory"``."""
        ...

    def load(self, replica_id: str) -> Saved | None:
        """The saved state, or ``None`` if the store is new.

        Raises:
            StoreError: The store belongs to another replica, or cannot be read.
        """
        ...

    def initialise(self, replica_id: str, snapshot: bytes) -> None:
        """Claim a new store for a replica, with its first snapshot."""
        ...

    def append(self, updates: list[bytes]) -> None:
        """Append updates to the log; durable (per the store's setting) on return."""
        ...

    def compact(self, snapshot: bytes) -> None:
        """Replace the snapshot and everything appended so far by ``snapshot``, atomically.

        ``snapshot`` must include every update appended before the call.
        """
        ...

    def stats(self) -> StoreStats:
        """Current sizes."""
        ...

    def close(self) -> None:
        """Release the store. Idempotent."""
        ...
