"""Persistence: restart round trips, nothing acknowledged is ever lost, group commit, bounded disk.

The property test drives a replica through random interleavings of local writes, merges
from a peer, flushes, explicit and threshold compactions, clean restarts and crashes. A
crash is a copy of what the store had committed at that instant (SQLite's online backup,
or a copy of the in-memory store), taken while appends may be in flight in the worker
thread; the run then continues from the copy. After every restart the restored replica
must show the state of some instant between the last acknowledged flush and the crash:
never older (an acknowledged write lost), never a state that never was.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from profiles import examples
from store_contract import Clock, replica_state

from sphaera_crdt import Replica
from sphaera_crdt.core import ydoc
from sphaera_crdt.persistence import (
    DEFAULT_COMPACT_RATIO,
    MIN_RATIO_BYTES,
    Persistence,
    open_replica,
)
from sphaera_crdt.store import MemoryStore, SQLiteStore, Store, StoreError
from sphaera_crdt.store.base import Saved, StoreStats
from sphaera_crdt.store.sqlite import DB_NAME, MIN_WAL_PAGES

State = Any


# -- restart round trip --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_restart_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path)
    replica = open_replica("a", store, clock=clock)
    persistence = Persistence(replica, store, compact_count=25)
    peer = Replica("p", clock=clock)
    peer.declare("db", kind="database", attrs={"port": 5432, "weight": 1.0, "on": True})
    replica.merge(peer.delta())
    replica.declare("app", requires={"all": [{"exists": "db"}, {"observed": "db", "within": 30}]})
    for index in range(60):
        replica.declare(f"svc-{index}", attrs={"n": index, "tags": ["a", index]})
        replica.observe(f"svc-{index}", ok=index % 2 == 0, value={"load": index / 4}, ttl=100)
        if index % 10 == 9:
            await persistence.flush()
    replica.observe("db", ok=True, ttl=30)
    replica.retract("svc-3")
    replica.update("svc-4", {"n": None})
    await persistence.flush()
    before, client_id = replica_state(replica), replica.client_id
    assert replica.status("app").value == "exists"
    assert persistence.compactions >= 1
    await persistence.close()

    again = SQLiteStore(tmp_path)
    try:
        restored = open_replica("a", again, clock=clock)
        assert replica_state(restored) == before
        assert restored.client_id != client_id
        # Statuses are derived afresh: time passed while the node was down.
        clock.now += 31
        later = open_replica_copy(tmp_path, clock)
        assert later.status("app").value == "absent"
        assert later.status("db").value == "exists"
    finally:
        again.close()


def open_replica_copy(directory: Path, clock: Clock) -> Replica:
    """Restore from a copy of the database (the original is locked by an open store)."""
    copy = directory.parent / (directory.name + "-copy")
    backup(directory, copy)
    store = SQLiteStore(copy)
    try:
        return open_replica("a", store, clock=clock)
    finally:
        store.close()


def backup(source: Path, destination: Path) -> None:
    """What the database holds committed right now, as a crash would leave it."""
    destination.mkdir()
    src = sqlite3.connect(source / DB_NAME)
    dst = sqlite3.connect(destination / DB_NAME)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.mark.asyncio
async def test_restarting_from_a_long_log_keeps_later_writes(tmp_path: Path) -> None:
    """Updates written after a restart build on the restore's own writes (regression).

    Restoring writes a fresh container before anything can record it; unless the store
    gets that state, the next start drops every write of the previous run.
    """
    for generation in range(3):
        store = SQLiteStore(tmp_path)
        replica = open_replica("a", store)
        persistence = Persistence(replica, store)
        assert {f"gen-{n}" for n in range(generation)} <= set(replica.entity_ids())
        replica.declare(f"gen-{generation}")
        await persistence.flush()
        await persistence.close()


# -- nothing acknowledged is lost ----------------------------------------------------------

ENTITIES = 5
Op = tuple[str, int]

op_strategy: st.SearchStrategy[Op] = st.one_of(
    st.tuples(
        st.sampled_from(["declare", "update", "observe", "retract", "peer"]),
        st.integers(0, ENTITIES - 1),
    ),
    st.tuples(st.sampled_from(["flush", "compact", "restart", "crash"]), st.just(0)),
    st.tuples(st.just("yield"), st.integers(1, 4)),
)


class Harness:
    """One replica with its persistence over a store that restarts and crashes."""

    def __init__(self, kind: str, directory: Path, compact_count: int, compact_bytes: int):
        self.kind = kind
        self.directory = directory
        self.generation = 0
        self.compact_count = compact_count
        self.compact_bytes = compact_bytes
        self.clock = Clock()
        self.peer = Replica("p", clock=self.clock)
        self.counter = 0
        self.store = self._new_store()
        self.replica = open_replica("a", self.store, clock=self.clock)
        self.persistence = self._persist()

    def _new_store(self) -> Store:
        if self.kind == "memory":
            return MemoryStore()
        return SQLiteStore(self.path, durability="normal")

    def _reopened(self) -> Store:
        """The closed store's data, opened again."""
        if isinstance(self.store, MemoryStore):
            return self.store.reopened()
        return SQLiteStore(self.path, durability="normal")

    def _crashed(self) -> Store:
        """What the running store has committed at this instant, opened as a new store."""
        if isinstance(self.store, MemoryStore):
            return self.store.reopened()
        source = self.path
        self.generation += 1
        backup(source, self.path)
        return SQLiteStore(self.path, durability="normal")

    @property
    def path(self) -> Path:
        return self.directory / f"gen-{self.generation}"

    def _persist(self) -> Persistence:
        return Persistence(
            self.replica,
            self.store,
            compact_count=self.compact_count,
            compact_bytes=self.compact_bytes,
        )

    def apply(self, op: str, index: int) -> bool:
        """Run one synchronous operation; whether it may have changed the replica."""
        self.counter += 1
        name, replica = f"e{index}", self.replica
        if op == "declare":
            replica.declare(name, kind="svc", attrs={"n": self.counter, "f": self.counter / 2})
        elif op == "update" and replica.entity(name) is not None:
            replica.update(name, {"u": self.counter})
        elif op == "observe":
            replica.observe(name, ok=self.counter % 3 != 0, value=self.counter, ttl=1e6)
        elif op == "retract" and replica.entity(name) is not None:
            replica.retract(name)
        elif op == "peer":
            self.peer.declare(name, attrs={"peer": self.counter})
            self.peer.observe(name, value=self.counter)
            replica.merge(self.peer.delta(replica.state_vector()))
        else:
            return False
        return True

    async def restart(self, *, crash: bool) -> None:
        # A crash keeps what is committed now, appends possibly in flight in the worker
        # thread; the old run then finishes against the old data, which is dropped.
        survivor = self._crashed() if crash else None
        await self.persistence.close()
        self.store = survivor or self._reopened()
        self.replica = open_replica("a", self.store, clock=self.clock)
        self.persistence = self._persist()

    async def close(self) -> None:
        await self.persistence.close()


async def run_scenario(harness: Harness, ops: list[Op]) -> None:
    history: list[State] = [replica_state(harness.replica)]
    acknowledged = 0
    for op, arg in ops:
        if op == "flush":
            await harness.persistence.flush()
            acknowledged = len(history) - 1
        elif op == "compact":
            await harness.persistence.compact()
            acknowledged = len(history) - 1
        elif op == "yield":
            for _ in range(arg):
                await asyncio.sleep(0)
        elif op in ("restart", "crash"):
            await harness.restart(crash=op == "crash")
            restored = replica_state(harness.replica)
            if op == "restart":
                assert restored == history[-1], "a clean restart must keep everything"
            else:
                assert restored in history[acknowledged:], (
                    "a crash may lose only unacknowledged writes, and only a suffix of them"
                )
            history, acknowledged = [restored], 0
        elif harness.apply(op, arg):
            history.append(replica_state(harness.replica))
    await harness.persistence.flush()
    final = replica_state(harness.replica)
    await harness.restart(crash=False)
    assert replica_state(harness.replica) == final


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["sqlite", "memory"]),
    ops=st.lists(op_strategy, min_size=4, max_size=60),
    compact_count=st.integers(1, 12),
    compact_bytes=st.sampled_from([200, 2_000, 1 << 24]),
)
def test_nothing_acknowledged_is_lost(
    kind: str, ops: list[Op], compact_count: int, compact_bytes: int
) -> None:
    event(f"store: {kind}")
    for name in ("restart", "crash"):
        count = sum(op == name for op, _ in ops)
        event(f"{name}: {count if count < 3 else '3 or more'} times")
    with tempfile.TemporaryDirectory(prefix="sphaera-prop-") as directory:

        async def main() -> None:
            harness = Harness(kind, Path(directory), compact_count, compact_bytes)
            try:
                await run_scenario(harness, ops)
            finally:
                await harness.close()

        asyncio.run(main())


# -- group commit --------------------------------------------------------------------------


class CountingStore:
    """A memory store that counts appends, optionally failing or slow."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.inner = MemoryStore()
        self.appends: list[int] = []
        self.fail = fail
        self.delay = delay

    @property
    def location(self) -> str:
        return "counting"

    def load(self, replica_id: str) -> Saved | None:
        return self.inner.load(replica_id)

    def initialise(self, replica_id: str, snapshot: bytes) -> None:
        self.inner.initialise(replica_id, snapshot)

    def append(self, updates: list[bytes]) -> None:
        if self.fail:
            raise StoreError("disk full")
        if self.delay:
            time.sleep(self.delay)
        self.appends.append(len(updates))
        self.inner.append(updates)

    def compact(self, snapshot: bytes) -> None:
        self.inner.compact(snapshot)

    def stats(self) -> StoreStats:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.asyncio
async def test_many_writes_then_one_flush_is_one_commit() -> None:
    store = CountingStore()
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    for index in range(200):
        replica.declare(f"e{index}")
    await persistence.flush()
    assert store.appends == [200]
    assert persistence.commits == 1
    await persistence.close()


@pytest.mark.parametrize("kind", ["sqlite-full", "slow-memory"])
@pytest.mark.asyncio
async def test_concurrent_writers_are_group_committed(kind: str, tmp_path: Path) -> None:
    store: Any = SQLiteStore(tmp_path) if kind == "sqlite-full" else CountingStore(delay=0.002)
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    writers = 100

    async def writer(index: int) -> None:
        replica.declare(f"e{index}")
        await persistence.flush()

    await asyncio.gather(*(writer(index) for index in range(writers)))
    # While one commit is on disk, the writes arriving meanwhile wait for the next.
    assert persistence.commits < writers / 4
    await persistence.close()
    again = SQLiteStore(tmp_path) if kind == "sqlite-full" else store.inner.reopened()
    try:
        restored = open_replica("a", again)
        assert {f"e{index}" for index in range(writers)} <= set(restored.entity_ids())
    finally:
        again.close()


@pytest.mark.asyncio
async def test_a_failed_store_refuses_every_later_flush() -> None:
    store = CountingStore()
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    store.fail = True
    replica.declare("lost")
    for _ in range(2):
        with pytest.raises(StoreError, match="disk full"):
            await persistence.flush()
    await persistence.close()


@pytest.mark.asyncio
async def test_thresholds_count_the_log_left_by_an_earlier_run() -> None:
    store = MemoryStore()
    replica = open_replica("a", store)
    for index in range(5):
        store.append([replica.delta()])
        replica.declare(f"e{index}")
    persistence = Persistence(replica, store, compact_count=6)
    replica.declare("one-more")
    await persistence.flush()
    # The writer compacts after that append and only then takes the next one.
    replica.declare("after")
    await persistence.flush()
    assert persistence.compactions == 1
    assert store.stats().log_count == 1
    await persistence.close()


# -- disk stays bounded --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_disk_stays_bounded_under_heartbeat_churn(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path, durability="normal")
    replica = open_replica("a", store, clock=clock)
    for index in range(300):
        replica.declare(f"svc-{index}", kind="service", attrs={"port": 8000 + index})
    persistence = Persistence(replica, store, compact_count=400)
    files: list[int] = []
    for round_ in range(40):
        clock.now += 1
        for subject in range(300):
            replica.observe(f"svc-{subject}", ok=True, value={"round": round_}, ttl=5)
            if subject % 10 == 9:
                await persistence.flush()
                stats = store.stats()
                files.append(stats.file_bytes)
                # The log outweighs its share of the snapshot by one batch at most, and a batch
                # is small unless it holds a rotation of the replica's container (an
                # update of all its live entries, less than the snapshot).
                ratio_bytes = max(MIN_RATIO_BYTES, DEFAULT_COMPACT_RATIO * stats.snapshot_bytes)
                log_bound = ratio_bytes + stats.snapshot_bytes
                assert stats.log_bytes <= log_bound
                # The database holds the snapshot and the log (SQLite gives freed pages
                # back); the write-ahead log stays within its floor, and the shared
                # memory file at its 32 KB.
                wal_bound = (MIN_WAL_PAGES + 16) * 4096 + 32 * 1024
                assert stats.file_bytes <= 1.2 * (stats.snapshot_bytes + log_bound) + wal_bound
                wal = tmp_path / (DB_NAME + "-wal")
                assert wal.stat().st_size <= (MIN_WAL_PAGES + 16) * (4096 + 24) + 32
    assert persistence.compactions >= 25
    # Bounded: the files stop growing once compaction keeps up, so the second half of the
    # run is hardly bigger than the first.
    half = len(files) // 2
    assert max(files[half:]) <= 1.1 * max(files[:half])
    await persistence.close()


@pytest.mark.asyncio
async def test_the_log_is_compacted_once_it_outweighs_its_share_of_the_snapshot() -> None:
    store = MemoryStore()
    replica = open_replica("a", store)
    for index in range(3000):
        replica.declare(f"svc-{index}", attrs={"port": index})
    persistence = Persistence(replica, store, compact_count=10**9, compact_bytes=1 << 40)
    await persistence.compact()
    snapshot = store.stats().snapshot_bytes
    assert DEFAULT_COMPACT_RATIO * snapshot > 1.5 * MIN_RATIO_BYTES  # the ratio decides
    for index in range(6000):
        replica.observe(f"svc-{index % 3000}", value=index)
        await persistence.flush()
        stats = store.stats()
        assert stats.log_bytes <= DEFAULT_COMPACT_RATIO * stats.snapshot_bytes + 200
    assert persistence.compactions >= 2


def test_compaction_reuses_the_pages_of_the_old_snapshot(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, durability="normal")
    size = 300_000
    noise = random.Random(5)  # incompressible snapshots: stored as they are
    store.initialise("a", noise.randbytes(size))
    try:
        for round_ in range(6):
            store.append([bytes([round_]) * 90 for _ in range(300)])
            store.compact(noise.randbytes(size + 1000 * round_))
            # The old snapshot and the log are gone from the file, not just unused, and
            # the write-ahead log is empty.
            assert store.stats().file_bytes <= size + 1000 * round_ + 32 * 4096
    finally:
        store.close()


def test_snapshots_and_large_updates_are_stored_compressed(tmp_path: Path) -> None:
    replica = Replica("a")
    for index in range(2000):
        replica.declare(f"svc-{index:05d}", kind="service", attrs={"port": 8000 + index})
    state = replica.delta()
    heartbeat = b"h" * 100
    store = SQLiteStore(tmp_path, durability="normal")
    try:
        store.initialise("a", b"\x00\x00")
        store.append([heartbeat, state])
        store.compact(state)
        stats = store.stats()
        assert (stats.snapshot_bytes, stats.log_bytes) == (len(state), 0)
        # Database, write-ahead log and shared memory together: a Yrs state shrinks
        # several times over.
        assert stats.file_bytes < len(state) / 2
        store.append([heartbeat])
        saved = store.load("a")
        assert saved is not None and saved.updates == [state, heartbeat]
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_store_that_raises_anything_fails_flush_instead_of_hanging() -> None:
    class Broken(CountingStore):
        def append(self, updates: list[bytes]) -> None:
            raise OSError("I/O error")

    store = Broken()
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    replica.declare("lost")
    async with asyncio.timeout(5):
        with pytest.raises(StoreError, match="I/O error"):
            await persistence.flush()
    await persistence.close()


@pytest.mark.asyncio
async def test_close_finishes_a_compaction_under_way_and_is_idempotent() -> None:
    store = MemoryStore()
    replica = open_replica("a", store)
    persistence = Persistence(replica, store, compact_count=3)
    for index in range(3):
        replica.declare(f"e{index}")
    await persistence.flush()  # the writer compacts right after this append
    await persistence.close()
    await persistence.close()
    assert persistence.compactions == 1
    assert store.reopened().stats().log_count == 0


# -- restoring retires the earlier container ---------------------------------------------


def test_restore_retires_a_large_earlier_container_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The earlier incarnation's container is emptied batch by batch, then retired: the
    restored replica and a peer that merges it agree, and nothing of it stays live."""
    monkeypatch.setattr(ydoc, "DROP_BATCH", 7)
    clock = Clock()
    before = Replica("a", clock=clock)
    for index in range(40):
        before.declare(f"svc-{index}", attrs={"port": index})
        before.observe(f"svc-{index}", value=index)
    peer = Replica("b", clock=clock)
    peer.merge(before.delta())
    old = before.nonce
    restored = Replica.restore("a", [before.delta()], clock=clock)
    assert restored.nonce != old
    assert replica_state(restored) == replica_state(before)
    containers = restored._doc._root
    assert containers.get(f"a\x1f{old}") == ""
    assert len(containers.get(f"a\x1f{restored.nonce}")) == len(before._doc.own_entries)
    peer.merge(restored.delta(peer.state_vector()))
    restored.merge(peer.delta(restored.state_vector()))
    assert peer._doc._root.get(f"a\x1f{old}") == ""
    assert replica_state(peer) == replica_state(restored)
    assert peer.entity("svc-39") is not None
    # The state holds the live entries once, not the retired ones beside them.
    assert len(restored.delta()) < 1.3 * len(before.delta())
