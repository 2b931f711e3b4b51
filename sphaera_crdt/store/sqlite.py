"""A replica's durable state in one embedded SQLite database (WAL journal).

Layout (schema version 1)::

    meta(key, value)      replica_id
    snapshot(id = 1, data) the compacted state: one Yrs update
    log(seq, data)        updates committed since the snapshot, in order

``PRAGMA application_id`` marks the file as this project's and ``PRAGMA user_version``
counts the named migrations applied. Opening refuses, with a message naming the file, a
database of another replica, of a newer schema, of another application, a corrupt file, or
a write-ahead log whose database is missing: each would otherwise give a silently empty or
diverging replica.

``durability="full"`` is SQLite ``synchronous=FULL``: a committed append survives power
loss. ``"normal"`` is ``synchronous=NORMAL``: it survives a crash of the process, and a
power loss may drop the last appends (peers send them again).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final, Literal

from .base import Saved, StoreError, StoreStats

__all__ = ["APPLICATION_ID", "DB_NAME", "MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

DB_NAME: Final = "replica.sqlite3"
#: "SPHR"
APPLICATION_ID: Final = 0x53504852
Durability = Literal["full", "normal"]

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
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


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
        wal = self.path.with_name(DB_NAME + "-wal")
        if not self.path.exists() and wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"{wal} exists without its database {self.path}: refusing to start with a "
                "write-ahead log whose database is missing (restore the database or remove "
                "the log)"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a usable database: {exc}") from exc
        except StoreError:
            self._db.close()
            raise
        self._closed = False

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
                db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: migration {name} failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path} is closed")

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
            snapshot = self._db.execute("SELECT data FROM snapshot WHERE id = 1").fetchone()
            if snapshot is None:
                raise StoreError(f"{self.path} is incomplete: it has no snapshot")
            updates = [snapshot[0]]
            updates.extend(row[0] for row in self._db.execute("SELECT data FROM log ORDER BY seq"))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be read: {exc}") from exc
        return Saved(replica_id=replica_id, updates=updates)

    def initialise(self, replica_id: str, snapshot: bytes) -> None:
        self._check_open()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT count(*) FROM meta").fetchone()[0]:
                self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path} is already initialised")
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('replica_id', ?)", (replica_id,)
            )
            self._db.execute("INSERT INTO snapshot (id, data) VALUES (1, ?)", (snapshot,))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot initialise: {exc}") from exc

    def append(self, updates: list[bytes]) -> None:
        self._check_open()
        if not updates:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO log (data) VALUES (?)", [(u,) for u in updates])
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot append: {exc}") from exc

    def compact(self, snapshot: bytes) -> None:
        self._check_open()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE snapshot SET data = ? WHERE id = 1", (snapshot,))
            self._db.execute("DELETE FROM log")
            self._db.execute("COMMIT")
            # Give the WAL's pages back so the files stay bounded under churn.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot compact: {exc}") from exc

    def stats(self) -> StoreStats:
        self._check_open()
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM log"
        ).fetchone()
        row = self._db.execute("SELECT length(data) FROM snapshot WHERE id = 1").fetchone()
        files = sum(
            path.stat().st_size
            for path in (self.path, self.path.with_name(DB_NAME + "-wal"))
            if path.exists()
        )
        return StoreStats(
            log_count=int(count),
            log_bytes=int(size),
            snapshot_bytes=int(row[0]) if row else 0,
            file_bytes=files,
        )

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` when sound)."""
        self._check_open()
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._db.close()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
