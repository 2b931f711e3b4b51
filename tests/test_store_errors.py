"""Startup refusals: a data directory that would give a wrong replica is an error naming the file.

Each case builds a broken data directory, then checks that opening it (``SQLiteStore`` and
``open_replica``) raises :class:`StoreError` naming the file, and that
``python -m sphaera_crdt serve`` on it writes one line to stderr, no traceback, and exits
with a non-zero status without ever listening.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import Processes

from sphaera_crdt import Replica
from sphaera_crdt.persistence import open_replica
from sphaera_crdt.store import SQLiteStore, StoreError
from sphaera_crdt.store.sqlite import APPLICATION_ID, DB_NAME, MIGRATIONS, SCHEMA_VERSION

CLI_TIMEOUT = 30.0


def make_database(directory: Path, replica_id: str = "a", *, entities: int = 30) -> Path:
    """A sound database of ``replica_id`` holding a snapshot and a log; returns its path."""
    store = SQLiteStore(directory)
    replica = open_replica(replica_id, store)
    updates: list[bytes] = []
    replica.on_update(updates.append)
    for index in range(entities):
        replica.declare(f"svc-{index}", attrs={"port": 8000 + index, "name": "x" * 40})
    store.append(updates)
    store.close()
    return directory / DB_NAME


@dataclass(frozen=True, slots=True)
class Broken:
    """A broken data directory: the id to start it as, the file the error names and a
    pattern of what it says."""

    directory: Path
    replica_id: str
    names: Path
    says: str


def copied_to_another_id(tmp_path: Path) -> Broken:
    original = make_database(tmp_path / "a")
    copy = tmp_path / "other"
    copy.mkdir()
    shutil.copy(original, copy / DB_NAME)
    return Broken(copy, "other", copy / DB_NAME, "belongs to replica 'a'")


def newer_schema(tmp_path: Path) -> Broken:
    path = make_database(tmp_path / "a")
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    return Broken(path.parent, "a", path, f"schema version {SCHEMA_VERSION + 1}")


def garbage_file(tmp_path: Path) -> Broken:
    path = make_database(tmp_path / "a")
    path.write_bytes(os.urandom(8192))
    return Broken(path.parent, "a", path, "not a usable database")


def flipped_byte_in_an_update(tmp_path: Path) -> Broken:
    path = make_database(tmp_path / "a")
    data = bytearray(path.read_bytes())
    # A stored entry's text, found in the file: flip one bit inside it.
    where = data.index(b"x" * 40) + 5
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    return Broken(path.parent, "a", path, "does not match its checksum")


def compressed_database(tmp_path: Path) -> Path:
    """A sound database whose snapshot is stored compressed; returns its path."""
    path = make_database(tmp_path / "a", entities=60)
    open_directory(path.parent, "a")  # restoring compacts: the snapshot holds the entities
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT codec FROM snapshot").fetchone()[0] == "zlib"
    db.close()
    return path


def flipped_byte_in_a_compressed_snapshot(tmp_path: Path) -> Broken:
    path = compressed_database(tmp_path)
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT data FROM snapshot").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    where = data.index(stored[100:140]) + 5
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    return Broken(path.parent, "a", path, "the snapshot does not match its checksum")


def rewritten_snapshot(tmp_path: Path, change: str, says: str) -> Broken:
    """A snapshot row changed behind the store's back, with a checksum that matches."""
    path = compressed_database(tmp_path)
    with sqlite3.connect(path) as db:
        db.create_function("crc32", 1, zlib.crc32)
        db.execute(f"UPDATE snapshot SET {change}")
        db.execute("UPDATE snapshot SET crc = crc32(data)")
    db.close()
    return Broken(path.parent, "a", path, says)


def truncated_file(tmp_path: Path) -> Broken:
    path = make_database(tmp_path / "a", entities=300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return Broken(path.parent, "a", path, "corrupt|malformed")


def foreign_sqlite(tmp_path: Path) -> Broken:
    path = tmp_path / "a" / DB_NAME
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('hello')")
    db.close()
    return Broken(path.parent, "a", path, "not a sphaera_crdt database")


def other_application(tmp_path: Path) -> Broken:
    path = tmp_path / "a" / DB_NAME
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id = 1234")
    db.close()
    return Broken(path.parent, "a", path, "not a sphaera_crdt database")


def wal_alone(tmp_path: Path, *, empty_database: bool) -> Broken:
    source = tmp_path / "source"
    store = SQLiteStore(source)
    replica = open_replica("a", store)
    updates: list[bytes] = []
    replica.on_update(updates.append)
    replica.declare("only-in-the-log")
    store.append(updates)
    wal = source / (DB_NAME + "-wal")
    assert wal.stat().st_size > 0
    directory = tmp_path / "a"
    directory.mkdir()
    shutil.copy(wal, directory / wal.name)
    store.close()
    if empty_database:
        (directory / DB_NAME).touch()
    return Broken(directory, "a", directory / wal.name, "without its database")


CASES: dict[str, Callable[[Path], Broken]] = {
    "copied to another id": copied_to_another_id,
    "newer schema": newer_schema,
    "garbage file": garbage_file,
    "flipped byte in an update": flipped_byte_in_an_update,
    "flipped byte in a compressed snapshot": flipped_byte_in_a_compressed_snapshot,
    "snapshot that does not decompress": lambda tmp_path: rewritten_snapshot(
        tmp_path, "data = substr(data, 1, length(data) / 2)", "cannot be decompressed"
    ),
    "snapshot of another size": lambda tmp_path: rewritten_snapshot(
        tmp_path, "size = size + 1", r"the snapshot holds \d+ bytes, not \d+"
    ),
    "snapshot of an unknown codec": lambda tmp_path: rewritten_snapshot(
        tmp_path, "codec = 'lz4'", "the snapshot has codec 'lz4'"
    ),
    "truncated file": truncated_file,
    "foreign sqlite database": foreign_sqlite,
    "another application's database": other_application,
    "wal without its database": lambda tmp_path: wal_alone(tmp_path, empty_database=False),
    "wal with an empty database": lambda tmp_path: wal_alone(tmp_path, empty_database=True),
}


def open_directory(directory: Path, replica_id: str) -> None:
    store = SQLiteStore(directory)
    try:
        open_replica(replica_id, store)
    finally:
        store.close()


@pytest.mark.parametrize("case", list(CASES))
def test_startup_error_names_the_file(case: str, tmp_path: Path) -> None:
    broken = CASES[case](tmp_path)
    with pytest.raises(StoreError) as info:
        open_directory(broken.directory, broken.replica_id)
    message = str(info.value)
    assert str(broken.names) in message
    assert re.search(broken.says, message), message
    assert "\n" not in message


#: Each case costs a process start: the fast tier runs the first in a real process (the test
#: above runs every case in this one), the slow tier the others.
IN_A_PROCESS = [
    case if index == 0 else pytest.param(case, marks=pytest.mark.slow)
    for index, case in enumerate(CASES)
]


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_serve_refuses_in_one_line(case: str, tmp_path: Path) -> None:
    broken = CASES[case](tmp_path)
    done = serve(broken.directory, broken.replica_id)
    assert done.returncode != 0
    assert "listening" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("sphaera: error: ")
    assert str(broken.names) in lines[0]


def serve(directory: Path, replica_id: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sphaera_crdt", "serve", "--data", str(directory)]
    command += ["--id", replica_id, "--port", "0", "--host", "127.0.0.1"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")}
    # run() kills the process if it outlives the timeout (it would be serving: a failure).
    return subprocess.run(
        command, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env, check=False
    )


def test_an_older_schema_is_migrated(tmp_path: Path) -> None:
    """A version 1 database (no checksums) opens, migrates and keeps its data."""
    replica = Replica("a")
    replica.declare("kept", attrs={"n": 1})
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(MIGRATIONS[0][1])
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO meta VALUES ('replica_id', 'a')")
        db.execute("INSERT INTO snapshot (id, data) VALUES (1, ?)", (replica.delta(),))
        db.execute("INSERT INTO log (data) VALUES (?)", (b"\x00\x00",))
    db.close()
    store = SQLiteStore(tmp_path)
    try:
        assert open_replica("a", store).entity("kept") is not None
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(log)")}
    db.close()
    assert "crc" in columns


def test_a_version_2_database_is_migrated_and_keeps_its_log_in_order(tmp_path: Path) -> None:
    """Version 2 stores every update as it is and numbers the log with AUTOINCREMENT."""
    replica = Replica("a")
    updates: list[bytes] = []
    replica.on_update(updates.append)
    snapshot = replica.delta()
    for index in range(40):
        replica.declare(f"svc-{index}", attrs={"text": "x" * (index * 40)})
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for _, script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO meta VALUES ('replica_id', 'a')")
        db.execute(
            "INSERT INTO snapshot (id, data, crc) VALUES (1, ?, ?)",
            (snapshot, zlib.crc32(snapshot)),
        )
        db.executemany(
            "INSERT INTO log (data, crc) VALUES (?, ?)",
            [(update, zlib.crc32(update)) for update in updates],
        )
    db.close()
    store = SQLiteStore(tmp_path)
    try:
        saved = store.load("a")
        assert saved is not None
        assert saved.updates == [snapshot, *updates]
        stats = store.stats()
        assert (stats.log_count, stats.log_bytes) == (len(updates), sum(map(len, updates)))
        # New appends go after the migrated ones, and large ones are compressed.
        store.append([b"y" * 4000])
        saved = store.load("a")
        assert saved is not None and saved.updates[-1] == b"y" * 4000
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        log_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'log'").fetchone()[0]
        assert "AUTOINCREMENT" not in log_sql.upper()
        last = db.execute("SELECT codec, size, length(data) FROM log ORDER BY seq DESC").fetchone()
        assert last[:2] == ("zlib", 4000) and last[2] < 100
    db.close()


def test_one_directory_is_one_process(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="in use by another process") as info:
            SQLiteStore(tmp_path)
        assert str(tmp_path / DB_NAME) in str(info.value)
    finally:
        store.close()
    SQLiteStore(tmp_path).close()  # released on close


def test_serve_refuses_a_directory_another_node_serves(tmp_path: Path) -> None:
    procs = Processes()
    try:
        procs.start("a", args=["--data", str(tmp_path)])
        done = serve(tmp_path, "a")
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "in use by another process" in lines[0]
        assert str(tmp_path / DB_NAME) in lines[0]
    finally:
        procs.close()
