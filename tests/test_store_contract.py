"""The store contract (``tests/store_contract.py``) for every store this package ships."""

from __future__ import annotations

from pathlib import Path

from store_contract import StoreContract, StoreFactory

from sphaera_crdt.store import MemoryStore, SQLiteStore, Store
from sphaera_crdt.testing import MemoryStore as ExportedMemoryStore


def sqlite_factory(tmp_path: Path, durability: str) -> StoreFactory:
    directory = tmp_path / "data"

    def reopen(store: Store) -> Store:
        store.close()
        return SQLiteStore(directory, durability=durability)  # type: ignore[arg-type]

    return StoreFactory(
        create=lambda: SQLiteStore(directory, durability=durability),  # type: ignore[arg-type]
        reopen=reopen,
    )


class TestSQLiteFull(StoreContract):
    def make_factory(self, tmp_path: Path) -> StoreFactory:
        return sqlite_factory(tmp_path, "full")


class TestSQLiteNormal(StoreContract):
    def make_factory(self, tmp_path: Path) -> StoreFactory:
        return sqlite_factory(tmp_path, "normal")


class TestMemory(StoreContract):
    def make_factory(self, tmp_path: Path) -> StoreFactory:
        def reopen(store: Store) -> Store:
            assert isinstance(store, MemoryStore)
            again = store.reopened()
            store.close()
            return again

        return StoreFactory(create=MemoryStore, reopen=reopen)


def test_the_memory_store_ships_in_testing() -> None:
    assert ExportedMemoryStore is MemoryStore
