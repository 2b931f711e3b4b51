"""Durable storage of a replica behind one small protocol: SQLite and in-memory."""

from .base import Saved, Store, StoreError, StoreStats
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Saved", "Store", "StoreError", "StoreStats"]
