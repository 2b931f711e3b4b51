"""A replica's durable state in one embedded SQLite database (WAL journal).

Layout (schema version 3)::

    meta(key, value)                          replica_id
    snapshot(id = 1, data, crc, codec, size)  the compacted state: one Yrs update
    log(seq, data, crc, codec, size)          updates committed since the snapshot, in order

``crc`` is the CRC-32 of ``data`` as stored, checked on every load (rows written before
migration 0002 have none). Updates of :data:`COMPRESS_FROM` bytes or more (the snapshot,
a rotation of the replica's container, a peer's state merged at once) are stored
zlib-compressed, ``codec = 'zlib'``, unless that would not make them smaller (a Yrs update
of a whole state shrinks about sevenfold); ``size`` is then the update's own length.
Small updates, such as heartbeats, are stored as they are.

``PRAGMA application_id`` marks the file as this project's and ``PRAGMA user_version``
counts the named migrations applied. Opening refuses, with a message naming the file, a
database of another replica, of a newer schema, of another application, a corrupt file,
a write-ahead log whose database is missing, or a database another process has open
(``replica.sqlite3.lock``): each would otherwise give a silently empty or diverging
replica, or lose updates.

``durability="full"`` is SQLite ``synchronous=FULL``: a committed append survives power
loss. ``"normal"`` is ``synchronous=NORMAL``: it survives a crash of the process, and a
power loss may drop the last appends (peers send them again).

Disk use follows the state, not its history: compaction deletes the log and the old
snapshot before it inserts the new one (which reuses their pages), ``auto_vacuum=FULL``
gives freed pages back to the file system, and the write-ahead log is emptied after each
compaction and checkpointed (and truncated) whenever it outgrows a quarter of the stored
snapshot, or :data:`MIN_WAL_PAGES`. An append writes one page to the write-ahead log (the
log table has no ``AUTOINCREMENT`` counter to update beside it), so a small write-ahead
log still holds many commits between checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Concatenate, Final, Literal, ParamSpec, TypeVar

from .base import Saved, StoreError, StoreStats

if sys.platform != "win32":
    import fcntl

__all__ = [
    "APPLICATION_ID",
    "DB_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLiteStore",
    "footprint",
    "recorded_replica_id",
]

DB_NAME: Final = "replica.sqlite3"
#: "SPHR"
APPLICATION_ID: Final = 0x53504852
Durability = Literal["full", "normal"]
#: The write-ahead log is checkpointed (and truncated) at this many pages at least: about
#: as many commits of one writer, each of which costs two fsyncs at ``synchronous=NORMAL``
#: (fewer pages make acknowledged writes slower when fsync is slow).
MIN_WAL_PAGES: Final = 32
#: zlib level of stored updates: the fastest; higher levels save a few percent more.
ZLIB_LEVEL: Final = 1

#: Named migrations, applied in order; ``user_version`` is how many have been applied.
MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (
    (
        "0001_initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
        CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
        """,
    ),
    (
        # SQLite checks its pages' structure, not their content: a flipped bit in an update
        # (or a truncated file, read as zeros) would otherwise load as a different state.
        "0002_checksums",
        """
        ALTER TABLE snapshot ADD COLUMN crc INTEGER;
        ALTER TABLE log ADD COLUMN crc INTEGER;
        """,
    ),
    (
        # codec NULL: data is the update itself; 'zlib': compressed. size: the update's
        # length (NULL: that of data). The log is rebuilt without AUTOINCREMENT, which
        # updates sqlite_sequence on every insert: a second page written to the
        # write-ahead log per append. Sequence numbers only order the log, which
        # compaction empties, so reusing them afterwards is harmless.
        "0003_compression",
        """
        ALTER TABLE snapshot ADD COLUMN codec TEXT;
        ALTER TABLE snapshot ADD COLUMN size INTEGER;
        CREATE TABLE log_0003 (
            seq INTEGER PRIMARY KEY, data BLOB NOT NULL, crc INTEGER, codec TEXT, size INTEGER
        );
        INSERT INTO log_0003 (seq, data, crc) SELECT seq, data, crc FROM log;
        DROP TABLE log;
        ALTER TABLE log_0003 RENAME TO log;
        """,
    ),
)
#: Codecs a stored update may use (``None``: stored as it is).
CODECS: Final = (None, "zlib")
#: Updates shorter than this are stored as they are (a heartbeat's is about 100 bytes).
COMPRESS_FROM: Final = 512
SCHEMA_VERSION: Final = len(MIGRATIONS)
P = ParamSpec("P")
R = TypeVar("R")


def _serialised(
    method: Callable[Concatenate[SQLiteStore, P], R],
) -> Callable[Concatenate[SQLiteStore, P], R]:
    """Run the method under the store's lock.

    The node uses the store from its worker thread, but anyone may ask for ``stats()``
    from the event loop meanwhile; one connection must not interleave two statements
    (a checkpoint fails while another thread's query is open).
    """

    @functools.wraps(method)
    def locked(self: SQLiteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._mutex:
            return method(self, *args, **kwargs)

    return locked


class SQLiteStore:
    """The SQLite implementation of :class:`~sphaera_crdt.store.base.Store`.

    Args:
        directory: Where the database lives (created if missing).
        durability: ``"full"`` (survives power loss) or ``"normal"`` (survives a crash).

    Raises:
        StoreError: The file cannot be opened as this project's database.
    """

    def __init__(self, directory: str | os.PathLike[str], *, durability: Durability = "full"):
        if durability not in ("full", "normal"):
            raise StoreError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.durability = durability
        self._closed = True
        self._initialised = False
        self._mutex = threading.RLock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._lock = _lock(self.path)
        try:
            self._check_wal()
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except (OSError, sqlite3.Error) as exc:
            self._lock.close()
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        except StoreError:
            self._lock.close()
            raise
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._release()
            raise StoreError(f"{self.path} is not a usable database: {exc}") from exc
        except StoreError:
            self._release()
            raise
        self._closed = False

    def _check_wal(self) -> None:
        wal = self.path.with_name(DB_NAME + "-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            return
        # SQLite would take a log without its database for a new, empty one (and an empty
        # file for a database without tables): the replica would silently start empty.
        if not self.path.exists() or self.path.stat().st_size == 0:
            raise StoreError(
                f"{wal} exists without its database {self.path}: refusing to start with a "
                "write-ahead log whose database is missing (restore the database or remove "
                "the log)"
            )

    def _release(self) -> None:
        self._db.close()
        self._lock.close()

    @property
    def location(self) -> str:
        return str(self.path)

    def _setup(self) -> None:
        db = self._db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id not in (0, APPLICATION_ID) or (application_id == 0 and tables):
            raise StoreError(f"{self.path} is not a sphaera_crdt database")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this version of sphaera_crdt "
                f"knows up to {SCHEMA_VERSION}"
            )
        if not tables:
            # Compaction frees the log's pages: give them back to the file system at once
            # rather than keep the file at its largest size forever.
            db.execute("PRAGMA auto_vacuum=FULL")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot use the WAL journal (got {mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        for number, (name, script) in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            try:
                db.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={number}")
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: migration {name} failed: {exc}") from exc
        self._page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        row = db.execute("SELECT length(data) FROM snapshot WHERE id = 1").fetchone()
        self._bound_wal(int(row[0]) if row else 0)

    def _bound_wal(self, stored_bytes: int) -> None:
        """Keep the write-ahead log below a quarter of the stored snapshot (or a minimum).

        SQLite checkpoints the log every ``wal_autocheckpoint`` pages and, with
        ``journal_size_limit``, truncates it when it starts over; its default of 1000
        pages (4 MB) would be many times the state of a small replica.
        """
        pages = max(MIN_WAL_PAGES, stored_bytes // 4 // self._page_size)
        self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
        self._db.execute(f"PRAGMA journal_size_limit={pages * self._page_size}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path} is closed")

    @_serialised
    def load(self, replica_id: str) -> Saved | None:
        self._check_open()
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                return None
            owner = meta.get("replica_id")
            if owner != replica_id:
                raise StoreError(
                    f"{self.path} belongs to replica {owner!r}, not {replica_id!r}: a database "
                    "copied to another node id would make two replicas write as one"
                )
            snapshot = self._db.execute(
                "SELECT data, crc, codec, size FROM snapshot WHERE id = 1"
            ).fetchone()
            if snapshot is None:
                raise StoreError(f"{self.path} is incomplete: it has no snapshot")
            updates = [self._decode("the snapshot", *snapshot)]
            for seq, *row in self._db.execute(
                "SELECT seq, data, crc, codec, size FROM log ORDER BY seq"
            ):
                updates.append(self._decode(f"log entry {seq}", *row))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be read: {exc}") from exc
        return Saved(replica_id=replica_id, updates=updates)

    def _decode(self, what: str, data: object, crc: object, codec: object, size: object) -> bytes:
        """An update from its stored row, checked against its checksum and size.

        Rows written before migration 0002 have no checksum, and before 0003 no codec.
        """
        if type(data) is not bytes or (crc is not None and zlib.crc32(data) != crc):
            raise StoreError(f"{self.path} is corrupt: {what} does not match its checksum")
        if codec not in CODECS or not (size is None or type(size) is int):
            raise StoreError(f"{self.path} is corrupt: {what} has codec {codec!r}, size {size!r}")
        update = data
        if codec == "zlib":
            try:
                update = zlib.decompress(data)
            except zlib.error as exc:
                raise StoreError(
                    f"{self.path} is corrupt: {what} cannot be decompressed: {exc}"
                ) from exc
        if size is not None and len(update) != size:
            raise StoreError(
                f"{self.path} is corrupt: {what} holds {len(update)} bytes, not {size}"
            )
        return update

    @_serialised
    def initialise(self, replica_id: str, snapshot: bytes) -> None:
        self._check_open()
        row = _row(snapshot)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT count(*) FROM meta").fetchone()[0]:
                self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path} is already initialised")
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('replica_id', ?)", (replica_id,)
            )
            self._db.execute(_INSERT_SNAPSHOT, row)
            self._db.execute("COMMIT")
            self._initialised = True
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot initialise: {exc}") from exc

    def _check_initialised(self, doing: str) -> None:
        if not self._initialised:
            try:
                found = self._db.execute("SELECT count(*) FROM meta").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path} cannot be read: {exc}") from exc
            if not found:
                raise StoreError(f"{self.path}: {doing} a store that was never initialised")
            self._initialised = True

    @_serialised
    def append(self, updates: list[bytes]) -> None:
        self._check_open()
        self._check_initialised("append to")
        if not updates:
            return
        rows = [_row(update) for update in updates]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO log (data, crc, codec, size) VALUES (?, ?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot append: {exc}") from exc

    @_serialised
    def compact(self, snapshot: bytes) -> None:
        self._check_open()
        self._check_initialised("compact")
        row = _row(snapshot)
        try:
            # Delete first: the new snapshot then reuses the pages of the old one and of
            # the log (an UPDATE would write it beside the old one, doubling the file).
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM log")
            self._db.execute("DELETE FROM snapshot")
            self._db.execute(_INSERT_SNAPSHOT, row)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot compact: {exc}") from exc
        try:
            # Empty the write-ahead log, which holds the whole snapshot now.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._bound_wal(len(row[0]))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot reclaim space after compacting: {exc}") from exc

    @_serialised
    def stats(self) -> StoreStats:
        self._check_open()
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(coalesce(size, length(data))), 0) FROM log"
        ).fetchone()
        row = self._db.execute(
            "SELECT coalesce(size, length(data)) FROM snapshot WHERE id = 1"
        ).fetchone()
        return StoreStats(
            log_count=int(count),
            log_bytes=int(size),
            snapshot_bytes=int(row[0]) if row else 0,
            file_bytes=footprint(self.path),
        )

    @_serialised
    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` when sound)."""
        self._check_open()
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    @_serialised
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


_INSERT_SNAPSHOT: Final = "INSERT INTO snapshot (id, data, crc, codec, size) VALUES (1, ?, ?, ?, ?)"


def _row(update: bytes) -> tuple[bytes, int, str | None, int | None]:
    """An update's stored form: ``(data, crc, codec, size)``.

    Updates of :data:`COMPRESS_FROM` bytes or more (snapshots, rotations, merges of a
    peer's state) are compressed unless that does not make them smaller. Compressing a
    large state takes a while: callers do it before their transaction begins.
    """
    if len(update) >= COMPRESS_FROM:
        packed = zlib.compress(update, ZLIB_LEVEL)
        if len(packed) < len(update):
            return packed, zlib.crc32(packed), "zlib", len(update)
    return update, zlib.crc32(update), None, None


def recorded_replica_id(directory: str | os.PathLike[str]) -> str | None:
    """The replica id the database in ``directory`` was claimed for, ``None`` if there is
    no database there yet (or it was never claimed).

    Read-only, without the store's lock: a node may be running on it meanwhile.

    Raises:
        StoreError: The file is there but cannot be read as this project's database.
    """
    path = Path(directory) / DB_NAME
    if not path.exists():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if application_id == 0 and not tables:
                return None  # made, never set up (a start that failed at once)
            if application_id != APPLICATION_ID:
                raise StoreError(f"{path} is not a sphaera_crdt database")
            row = db.execute("SELECT value FROM meta WHERE key = 'replica_id'").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} cannot be read: {exc}") from exc
    return None if row is None else str(row[0])


def footprint(path: Path) -> int:
    """Bytes on disk of a database: the file, its write-ahead log and its shared memory."""
    total = 0
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        try:
            total += path.with_name(name).stat().st_size
        except FileNotFoundError:
            pass
    return total


def _lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``<database>.lock`` until the returned file is closed.

    Two processes serving one database would each compact away the other's appends.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "ab")  # closed by the store
    except OSError as exc:
        raise StoreError(f"cannot open {lock_path}: {exc}") from exc
    if sys.platform != "win32":
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise StoreError(
                f"{path} is in use by another process (it holds {lock_path}): two nodes "
                "must never share a data directory"
            ) from exc
    return handle
