"""The contract every store passes, whatever keeps its bytes.

A store implementation gets the whole suite by subclassing :class:`StoreContract` in a
``test_*.py`` module and implementing :meth:`StoreContract.make_factory`; pytest collects
the inherited tests there (this module is not a test module, so the abstract class itself
is never collected). ``tests/test_store_contract.py`` runs it for ``SQLiteStore`` (both
durabilities) and ``MemoryStore``.

The suite checks the protocol of :mod:`sphaera_crdt.store.base` directly (load, initialise,
append, compact, stats, close and their refusals), then through a real replica: writes
recorded by :class:`~sphaera_crdt.persistence.Persistence`, flushed, compacted and
reopened come back as the same entities, observations and statuses.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import typed

from sphaera_crdt import Replica
from sphaera_crdt.persistence import Persistence, open_replica
from sphaera_crdt.store import Store, StoreError

__all__ = ["StoreContract", "StoreFactory", "replica_state"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFactory:
    """How the suite gets stores of one kind.

    Attributes:
        create: A fresh, empty store.
        reopen: A store over the same data as the given one, which may be open or closed
            (the given one is closed, or left alone, as the kind requires).
    """

    create: Callable[[], Store]
    reopen: Callable[[Store], Store]


class Clock:
    """A clock that moves only when told, so statuses do not age during a test."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def replica_state(replica: Replica) -> Any:
    """What a restart must keep: every entity (with its status) and every observation,
    with exact value types (``1``, ``1.0`` and ``True`` differ)."""
    return typed(
        {
            "entities": {name: view.to_json() for name, view in replica.entities().items()},
            "observations": [observation.to_json() for observation in replica.observations()],
        }
    )


class StoreContract(abc.ABC):
    """Tests every :class:`~sphaera_crdt.store.Store` implementation must pass."""

    @abc.abstractmethod
    def make_factory(self, tmp_path: Path) -> StoreFactory:
        """The factory of the store kind under test; its data lives under ``tmp_path``."""

    @pytest.fixture
    def stores(self, tmp_path: Path) -> StoreFactory:
        return self.make_factory(tmp_path)

    @pytest.fixture
    def store(self, stores: StoreFactory) -> Any:
        store = stores.create()
        yield store
        store.close()

    # -- the protocol ----------------------------------------------------------------------

    def test_a_new_store_holds_nothing(self, store: Store) -> None:
        assert store.load("a") is None
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes, stats.snapshot_bytes) == (0, 0, 0)

    def test_location_names_the_store(self, store: Store) -> None:
        assert isinstance(store.location, str)
        assert store.location

    def test_initialise_then_load_gives_the_snapshot(self, store: Store) -> None:
        store.initialise("a", b"snapshot")
        saved = store.load("a")
        assert saved is not None
        assert saved.replica_id == "a"
        assert saved.updates == [b"snapshot"]
        assert all(type(update) is bytes for update in saved.updates)

    def test_appends_come_back_in_order_after_the_snapshot(self, store: Store) -> None:
        store.initialise("a", b"s")
        batches = [[b"u0"], [b"u1", b"u2"], [], [bytes([n]) * n for n in range(1, 40)]]
        for batch in batches:
            store.append(batch)
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [b"s", *(update for batch in batches for update in batch)]

    def test_compact_replaces_snapshot_and_log(self, store: Store) -> None:
        store.initialise("a", b"s0")
        store.append([b"u1", b"u2"])
        store.compact(b"s1")
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [b"s1"]
        store.append([b"u3"])
        store.compact(b"s2")
        store.append([b"u4", b"u5"])
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [b"s2", b"u4", b"u5"]

    def test_stats_count_the_log_and_the_snapshot(self, store: Store) -> None:
        store.initialise("a", b"x" * 100)
        store.append([b"y" * 10, b"z" * 30])
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes, stats.snapshot_bytes) == (2, 40, 100)
        assert stats.file_bytes >= 0
        store.compact(b"w" * 70)
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes, stats.snapshot_bytes) == (0, 0, 70)

    def test_stats_count_updates_not_their_stored_form(self, store: Store) -> None:
        # Large updates may be stored compressed; thresholds are about the updates.
        store.initialise("a", b"s" * 50_000)
        store.append([b"y" * 20_000, b"z" * 30])
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes, stats.snapshot_bytes) == (2, 20_030, 50_000)
        store.compact(b"w" * 70_000)
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes, stats.snapshot_bytes) == (0, 0, 70_000)

    def test_binary_and_large_updates_round_trip(self, store: Store) -> None:
        every_byte = bytes(range(256)) * 4
        large = bytes(index * 7 % 251 for index in range(3 * 1024 * 1024))
        store.initialise("a", b"\x00" * 3)
        store.append([every_byte, large, b"\x00", b""])
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [b"\x00" * 3, every_byte, large, b"\x00", b""]

    def test_unicode_replica_ids(self, store: Store) -> None:
        store.initialise("nœud-1", b"s")
        saved = store.load("nœud-1")
        assert saved is not None
        assert saved.replica_id == "nœud-1"

    def test_another_replica_is_refused_with_the_location(self, store: Store) -> None:
        store.initialise("a", b"s")
        with pytest.raises(StoreError, match="belongs to replica 'a'") as info:
            store.load("b")
        assert store.location in str(info.value)

    def test_initialise_twice_is_refused(self, store: Store) -> None:
        store.initialise("a", b"s")
        with pytest.raises(StoreError):
            store.initialise("a", b"t")
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [b"s"]

    @pytest.mark.parametrize("operation", ["append", "compact"])
    def test_writing_before_initialise_is_refused(self, store: Store, operation: str) -> None:
        with pytest.raises(StoreError):
            if operation == "append":
                store.append([b"u"])
            else:
                store.compact(b"s")
        assert store.load("a") is None

    def test_close_is_idempotent_and_final(self, stores: StoreFactory) -> None:
        store = stores.create()
        store.initialise("a", b"s")
        store.close()
        store.close()
        for use in (
            lambda: store.load("a"),
            lambda: store.append([b"u"]),
            lambda: store.compact(b"t"),
        ):
            with pytest.raises(StoreError):
                use()

    def test_reopening_keeps_everything(self, stores: StoreFactory) -> None:
        store = stores.create()
        store.initialise("a", b"s")
        store.append([b"u1"])
        store.compact(b"s2")
        store.append([b"u2", b"u3"])
        store.close()
        again = stores.reopen(store)
        try:
            saved = again.load("a")
            assert saved is not None
            assert saved.updates == [b"s2", b"u2", b"u3"]
            assert again.stats().log_count == 2
        finally:
            again.close()

    # -- through a replica -----------------------------------------------------------------

    def test_replica_round_trip(self, stores: StoreFactory) -> None:
        clock = Clock()

        async def first(store: Store) -> tuple[Any, int]:
            replica = open_replica("a", store, clock=clock)
            persistence = Persistence(replica, store, compact_count=7)
            peer = Replica("p", clock=clock)
            for index in range(20):
                replica.declare(f"svc-{index}", kind="service", attrs={"n": index})
                replica.observe(f"svc-{index}", ok=index % 3 != 0, ttl=60.0)
                if index % 5 == 0:
                    peer.declare(f"peer-{index}", attrs={"from": "p"})
                    replica.merge(peer.delta(replica.state_vector()))
            replica.declare("app", requires={"all": [{"exists": "svc-1"}, {"exists": "peer-0"}]})
            replica.retract("svc-2")
            await persistence.flush()
            await persistence.compact()
            replica.update("svc-4", {"n": 40})
            state = replica_state(replica)
            client_id = replica.client_id
            await persistence.close()
            return state, client_id

        store = stores.create()
        state, client_id = asyncio.run(first(store))
        again = stores.reopen(store)
        try:
            restored = open_replica("a", again, clock=clock)
            assert replica_state(restored) == state
            assert restored.client_id != client_id
            assert restored.entity("app") is not None
            assert restored.status("app").value == "exists"
        finally:
            again.close()

    def test_writes_after_a_restart_survive_the_next_one(self, stores: StoreFactory) -> None:
        clock = Clock()

        async def generation(store: Store, number: int) -> Any:
            replica = open_replica("a", store, clock=clock)
            persistence = Persistence(replica, store)
            replica.declare(f"gen-{number}", attrs={"n": number})
            await persistence.flush()
            state = replica_state(replica)
            await persistence.close()
            return state

        store = stores.create()
        try:
            for number in range(4):
                state = asyncio.run(generation(store, number))
                store = stores.reopen(store)
                restored = open_replica("a", store, clock=clock)
                assert replica_state(restored) == state
                assert {f"gen-{n}" for n in range(number + 1)} <= set(restored.entity_ids())
                store = stores.reopen(store)
        finally:
            store.close()

    def test_flush_commits_every_recorded_update(self, stores: StoreFactory) -> None:
        async def run(store: Store) -> int:
            replica = open_replica("a", store)
            persistence = Persistence(replica, store)
            for index in range(50):
                replica.declare(f"e{index}")
            await persistence.flush()
            committed = store.stats().log_count
            await persistence.close()
            return committed

        store = stores.create()
        assert asyncio.run(run(store)) >= 50
