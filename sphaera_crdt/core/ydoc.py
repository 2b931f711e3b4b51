"""The CRDT document under a replica: single-writer containers that never grow with history.

Theory of operation
-------------------
The document has one root map, ``"w"`` (writers). Each replica writes only into its own
container, a nested map stored under ``"<replica id>\\x1f<nonce>"`` (the nonce keeps a
replica that restarted without its data from colliding with its earlier self). Every
entry is a string ``"<stamp><sep><payload>"``; readers pick, for each logical key, the
entry with the highest ``(stamp, replica id, nonce)`` across all containers, which makes
the merged view a last-writer-wins map that every replica computes alike.

Why single-writer containers: Yrs keeps one tombstone item for every overwritten map
entry unless consecutive writes hit the same key, so heartbeats refreshed forever would
grow the state without bound. A container with only one writer can be *rotated*: when
its overwritten entries outnumber its live ones, the writer replaces it by a fresh
container holding only the live entries, in one transaction. Deleting the old container
turns all its items into GC ranges, which Yrs squashes to a few bytes. Growth is thus
bounded by the live data (plus a small constant per rotation), not by history.

Change detection: pycrdt's high-level events build every field eagerly and cost several
times a write, so the adapter subscribes with the integrated (low-level) map observers
and only reads ``event.keys``. The replica's own container is never observed: only this
replica writes it, so local writes pay nothing for observation.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from pycrdt import Doc, Map, Subscription

from ..errors import InvalidUpdate

__all__ = ["MIN_ROTATE", "SEP", "DocumentAdapter", "EntryChange"]

SEP: Final = "\x1f"
ROOT: Final = "w"
#: A container is rotated once it holds more overwritten entries than this and than live ones.
MIN_ROTATE: Final = 1024

#: (writer key, entry key, entry text) seen on a merge.
EntryChange = tuple[str, str, str]

try:  # pycrdt raises Rust panics as pyo3_runtime.PanicException, a BaseException.
    from pyo3_runtime import PanicException  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - pyo3 registers the module once pycrdt loads
    PanicException = BaseException


def writer_key(replica_id: str, nonce: str) -> str:
    return f"{replica_id}{SEP}{nonce}"


def split_writer_key(key: str) -> tuple[str, str] | None:
    replica_id, sep, nonce = key.rpartition(SEP)
    if not sep or not replica_id or not nonce:
        return None
    return replica_id, nonce


class DocumentAdapter:
    """Owns the pycrdt ``Doc``: writes into this replica's container, applies peers' updates.

    Args:
        replica_id: The id of the replica that owns this document.
        nonce: Identifies this replica's container; a fresh one by default, made of random
            digits and ``epoch``, the stamp from which entry stamps are counted.
        epoch: See ``nonce``.
        client_id: Yrs client id; random by default. Never reuse one with restored state.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        nonce: str | None = None,
        epoch: int = 0,
        client_id: int | None = None,
    ):
        self.nonce = nonce or f"{secrets.token_hex(6)}.{epoch:x}"
        self.key = writer_key(replica_id, self.nonce)
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._root: Map[Any] = self.doc.get(ROOT, type=Map)
        self._own: Map[str] | None = None
        #: live entries of this replica's container, by entry key
        self.own_entries: dict[str, str] = {}
        self._dead = 0
        self.rotations = 0
        self._root_changes: list[str] = []
        self._entry_changes: list[EntryChange] = []
        self._subs: dict[str, tuple[Map[Any], Subscription]] = {}
        self._root_sub = self._root.integrated.observe(self._on_root)

    # -- writing ---------------------------------------------------------------------------

    def write(self, entries: Iterable[tuple[str, str]]) -> None:
        """Write ``(key, text)`` entries into this replica's container in one transaction."""
        own = self._own
        live = self.own_entries
        with self.doc.transaction() as txn:
            if own is None:
                own = self._own = Map()
                self._root[self.key] = own
            # The integrated map's insert skips pycrdt's per-item transaction bookkeeping,
            # which otherwise costs more than the write itself.
            insert = own.integrated.insert
            handle = txn._txn
            for key, text in entries:
                if key in live:
                    self._dead += 1
                live[key] = text
                insert(handle, key, text)
        if self._dead > MIN_ROTATE and self._dead > len(live):
            self.rotate()

    def rotate(self) -> None:
        """Replace this replica's container by a fresh one holding only the live entries."""
        with self.doc.transaction() as txn:
            fresh: Map[str] = Map()
            self._root[self.key] = fresh
            insert = fresh.integrated.insert
            handle = txn._txn
            for key, text in self.own_entries.items():
                insert(handle, key, text)
        self._own = fresh
        self._dead = 0
        self.rotations += 1

    # -- reading and merging ---------------------------------------------------------------

    def apply(self, update: bytes) -> list[EntryChange]:
        """Apply a peer's update; return the entries it changed in other writers' containers.

        Raises:
            InvalidUpdate: The bytes cannot be decoded or applied; the document is unchanged.
        """
        self._root_changes.clear()
        self._entry_changes.clear()
        try:
            self.doc.apply_update(update)
        except (ValueError, RuntimeError, PanicException) as exc:
            self._root_changes.clear()
            self._entry_changes.clear()
            raise InvalidUpdate(f"cannot apply update: {exc}") from exc
        changes = list(self._entry_changes)
        for key in self._root_changes:
            changes.extend(self._resubscribe(key))
        return changes

    def load(self, updates: Iterable[bytes]) -> list[EntryChange]:
        """Apply saved updates to a fresh document and adopt this replica's container.

        Returns every entry of every container, this replica's own included, so that the
        caller can rebuild its view in one pass.

        Raises:
            InvalidUpdate: A saved update cannot be applied.
        """
        for update in updates:
            try:
                self.doc.apply_update(update)
            except (ValueError, RuntimeError, PanicException) as exc:
                raise InvalidUpdate(f"cannot apply saved update: {exc}") from exc
        self._root_changes.clear()
        self._entry_changes.clear()
        own = self._root.get(self.key)
        if isinstance(own, Map):
            self._own = own
            self.own_entries = {key: text for key, text in own.items() if type(text) is str}
        entries = self.scan()
        entries.extend((self.key, key, text) for key, text in self.own_entries.items())
        return entries

    def on_update(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``callback(update)`` with the Yrs update of every committed transaction
        (local writes, rotations and merges alike); returns an unsubscribe function."""
        subscription = self.doc.observe(lambda event: callback(event.update))

        def unsubscribe() -> None:
            self.doc.unobserve(subscription)

        return unsubscribe

    def scan(self) -> list[EntryChange]:
        """Subscribe to every foreign container and return all their entries."""
        changes: list[EntryChange] = []
        for key in list(self._root.keys()):
            changes.extend(self._resubscribe(key))
        return changes

    def _resubscribe(self, key: str) -> Iterator[EntryChange]:
        if key == self.key:
            return
        old = self._subs.pop(key, None)
        if old is not None:
            old[1].drop()
        container = self._root.get(key)
        if not isinstance(container, Map):
            return
        self._subs[key] = (container, container.integrated.observe(self._entry_observer(key)))
        for entry_key, text in container.items():
            if type(text) is str:
                yield key, entry_key, text

    def _entry_observer(self, writer: str) -> Callable[[Any], None]:
        append = self._entry_changes.append

        def on_change(event: Any) -> None:
            for entry_key, change in event.keys.items():
                value = change.get("newValue")
                if type(value) is str:
                    append((writer, entry_key, value))

        return on_change

    def _on_root(self, event: Any) -> None:
        for key, change in event.keys.items():
            if change.get("action") != "delete":
                self._root_changes.append(key)

    def containers(self) -> list[str]:
        """Writer keys of every container in the document."""
        return list(self._root.keys())

    def container_size(self) -> tuple[int, int]:
        """(live entries, overwritten entries) of this replica's own container."""
        return len(self.own_entries), self._dead

    # -- sync ------------------------------------------------------------------------------

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def delta(self, since: bytes | None) -> bytes:
        """What a peer at ``since`` lacks, without the delete set.

        Yrs puts the document's whole delete set into every diff. In this layout every
        deletion is implied by an insert (an overwritten entry, a replaced container),
        and integrating the insert deletes its predecessor on the receiving side too, so
        the delete set is redundant: it is cut off, which keeps a one-change delta small.
        """
        try:
            update = self.doc.get_update(since)
            deletions = self.doc.get_update(self.doc.get_state())[1:]
        except (ValueError, RuntimeError, PanicException) as exc:
            raise InvalidUpdate(f"cannot read state vector: {exc}") from exc
        if len(deletions) > 1 and update.endswith(deletions):
            return update[: -len(deletions)] + b"\x00"
        return update
