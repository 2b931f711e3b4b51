"""Durable storage of a replica behind one small protocol: SQLite and in-memory.

``SQLiteStore`` is imported on first use, so that the in-memory store (which
:mod:`sphaera_crdt.testing` ships) does not load ``sqlite3``.
"""

from typing import TYPE_CHECKING, Any

from .base import Saved, Store, StoreError, StoreStats
from .memory import MemoryStore

if TYPE_CHECKING:
    from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Saved", "Store", "StoreError", "StoreStats"]


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
