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
replica writes it, so local writes pay nothing for observation. The observers append to
plain lists and never refer to the adapter: the Rust document holds them where Python's
collector cannot see, so an observer that pointed back at the adapter would keep the
adapter, its document and its replica alive for ever.

Identities: the document's Yrs client id, the root writer's and the container nonce are
random by default; an :class:`Identities` source (a seeded one in the simulator) draws
them instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

from pycrdt import Doc, Map, Subscription

from ..errors import InvalidUpdate
from .lib0 import decode_state_vector, encode_state_vector
from .seals import DIGEST_SIZE, SEAL, digest, make_seal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "MIN_ROTATE",
    "SEP",
    "DocumentAdapter",
    "EntryChange",
    "Identities",
    "PanicException",
    "new_nonce",
]

SEP: Final = "\x1f"
ROOT: Final = "w"
#: The value that replaces a retired container.
RETIRED: Final = ""
#: A container is rotated once it holds more overwritten entries than this and than
#: :data:`ROTATE_FACTOR` times its live ones: a rotation rewrites every live entry, so the
#: factor trades write cost (one extra insert per write at 1) against tombstones kept.
MIN_ROTATE: Final = 32
#: In signed mode, a seal is written once this many entries wait for one.
SEAL_BATCH: Final = 512
ROTATE_FACTOR: Final = 2
#: The document is rebuilt once more items than this (and than the live entries it holds)
#: were collected since the last rebuild.
MIN_RELOAD: Final = 4096
#: Entries removed per transaction when a container is retired (see :meth:`drop_containers`).
DROP_BATCH: Final = 1000

#: (writer key, entry key, entry text) seen on a merge.
EntryChange = tuple[str, str, str]

try:  # pycrdt raises Rust panics as pyo3_runtime.PanicException, a BaseException.
    from pyo3_runtime import PanicException  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - pyo3 registers the module once pycrdt loads
    PanicException = BaseException


class Identities(Protocol):
    """Where a document's random identities come from (the default is the OS's randomness)."""

    def client_id(self) -> int:
        """A fresh Yrs client id: a positive integer below 2**53, never handed out before."""

    def nonce(self, epoch: int) -> str:
        """A fresh container nonce ending with ``.<epoch in hex>``."""


def writer_key(replica_id: str, nonce: str) -> str:
    return f"{replica_id}{SEP}{nonce}"


def new_nonce(epoch: int, identities: Identities | None = None) -> str:
    """A fresh container nonce: 48 random bits (8 characters), ``.``, the epoch in hex.

    The nonce is part of the container's key, which the document carries for as long as
    the container lives and a forgotten one's retired key for ever: it is kept short.
    """
    if identities is not None:
        return identities.nonce(epoch)
    return f"{secrets.token_urlsafe(6)}.{epoch:x}"


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
        identities: Draws the nonce, the client id and the root writer's client id when
            they are not given (random by default).
    """

    def __init__(
        self,
        replica_id: str,
        *,
        nonce: str | None = None,
        epoch: int = 0,
        client_id: int | None = None,
        live_hint: Callable[[], int] | None = None,
        identities: Identities | None = None,
    ):
        if not nonce:
            nonce = new_nonce(epoch, identities)
        self.nonce = nonce
        self._live_hint = live_hint or (lambda: len(self.own_entries))
        #: items turned into GC ranges since the document was last rebuilt
        self._gc_debt = 0
        self.reloads = 0
        self._update_callbacks: dict[int, tuple[Callable[[bytes], None], Subscription]] = {}
        self.key = writer_key(replica_id, self.nonce)
        if client_id is None and identities is not None:
            client_id = identities.client_id()
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._root: Map[Any] = self.doc.get(ROOT, type=Map)
        self._own: Map[str] | None = None
        #: live entries of this replica's container, by entry key
        self.own_entries: dict[str, str] = {}
        self._dead = 0
        self.rotations = 0
        #: chooses the live entries a rotation leaves behind (see :mod:`.pruning`)
        self.prune: Callable[[dict[str, str]], list[str]] | None = None
        #: entry keys left behind by rotations, until the owner takes them
        self.pruned: list[str] = []
        #: (writer key, entry keys of its fresh container) of every foreign container
        #: that the last :meth:`apply` saw replaced by a rotation
        self.rotated: list[tuple[str, set[str]]] = []
        self._root_changes: list[str] = []
        self._entry_changes: list[EntryChange] = []
        self._subs: dict[str, tuple[Map[Any], Subscription]] = {}
        self._root_sub = self._root.integrated.observe(_root_observer(self._root_changes))
        self._clocks: dict[int, int] | None = None
        self._canonical: tuple[dict[int, int], bytes] | None = None
        self._dirty_sv = False
        self._rotator: Doc[Any] = Doc(
            client_id=None if identities is None else identities.client_id()
        )
        self._rotator_root: Map[Any] = self._rotator.get(ROOT, type=Map)
        #: seals every write with this key (signed mode, see :mod:`.seals`)
        self.signing_key: Ed25519PrivateKey | None = None
        #: told of every root item this adapter writes: (item id, writer key, is container)
        self.on_root_item: Callable[[tuple[int, int], str, bool], None] | None = None
        #: whether the last :meth:`apply` retired this replica's own container
        self.own_replaced = False
        #: whether the last :meth:`apply` retired another writer's container
        self.retired_seen = False
        #: the clock of this document's client (tracked while sealing; None: read it)
        self._own_clock: int | None = None
        self._seals = 0
        #: digests of the entries written since the last seal, from clock _pending_first
        self._pending: list[bytes] = []
        self._pending_first = 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, entries: Iterable[tuple[str, str]]) -> None:
        """Write ``(key, text)`` entries into this replica's container in one transaction."""
        own = self._own
        if own is None:
            own = self._new_container()
        live = self.own_entries
        self._clocks = None
        if self.signing_key is not None:
            self._write_sealed(own, list(entries))
        else:
            self._insert(own, entries, None)
        if self._dead > MIN_ROTATE and self._dead > ROTATE_FACTOR * len(live):
            self.rotate()

    def _insert(
        self, own: Map[str], entries: Iterable[tuple[str, str]], digests: list[bytes] | None
    ) -> None:
        """Insert entries into ``own`` in one transaction, keeping :attr:`own_entries`
        and the count of overwritten entries; with ``digests``, append each entry's."""
        # The integrated document's own transaction and the integrated map's insert skip
        # pycrdt's per-call bookkeeping, which otherwise costs more than the write itself.
        # The document has one owner and no transaction is ever open here, so nothing
        # can be joined by mistake.
        live = self.own_entries
        handle = self.doc._doc.create_transaction()
        try:
            insert = own.integrated.insert
            for key, text in entries:
                if key in live:
                    self._dead += 1
                live[key] = text
                insert(handle, key, text)
                if digests is not None:
                    digests.append(digest(key, text))
        finally:
            handle.commit()
            handle.drop()

    def write_one(self, key: str, text: str) -> None:
        """:meth:`write` of a single entry."""
        own = self._own
        if own is None:
            own = self._new_container()
        live = self.own_entries
        self._clocks = None
        if self.signing_key is not None:
            self._write_sealed(own, [(key, text)])
        else:
            if key in live:
                self._dead += 1
            live[key] = text
            handle = self.doc._doc.create_transaction()
            try:
                own.integrated.insert(handle, key, text)
            finally:
                handle.commit()
                handle.drop()
        if self._dead > MIN_ROTATE and self._dead > ROTATE_FACTOR * len(live):
            self.rotate()

    def _write_sealed(self, own: Map[str], entries: list[tuple[str, str]]) -> None:
        """Write entries in one transaction and note their digests for the next seal.

        The entries take the document client's next clocks, one each, in order. The seal
        (see :mod:`.seals`) that covers them is written by :meth:`seal`: before any state
        leaves the replica (:meth:`delta`), before this client writes anything else, and
        once :data:`SEAL_BATCH` entries wait; one signature thus covers every write
        between two exchanges. A seal counts as an overwritten entry from the start: it
        goes with the next rotation, which seals the live entries anew.
        """
        if not entries:
            return
        first = self._own_clock
        if first is None:
            first = self._read_own_clock()
        if self._pending and first != self._pending_first + len(self._pending):
            # Another client wrote as this one: the waiting entries no longer end where
            # the next one starts, and one seal covers consecutive clocks only. They are
            # sealed anew by the next rotation.
            self._pending.clear()
        if not self._pending:
            self._pending_first = first
        pending = self._pending
        self._insert(own, entries, pending)
        self._own_clock = first + len(entries)
        if len(pending) >= SEAL_BATCH:
            self.seal()

    def seal(self) -> None:
        """Write the seal of the entries written since the last one, if any (signed mode)."""
        pending = self._pending
        key_ = self.signing_key
        own = self._own
        if not pending or key_ is None or own is None:
            pending.clear()
            return
        first = self._pending_first
        clock = self._own_clock if self._own_clock is not None else self._read_own_clock()
        if clock != first + len(pending):
            pending.clear()  # see _write_sealed: these cannot be sealed where they are
            self._own_clock = clock
            return
        digests = b"".join(pending)
        pending.clear()
        seal = make_seal(
            self.key, int(self.doc.client_id), int(self._rotator.client_id), first, digests, key_
        )
        seal_key = f"{SEAL}{self._seals:x}"
        self._seals += 1
        handle = self.doc._doc.create_transaction()
        try:
            own.integrated.insert(handle, seal_key, seal)
        finally:
            handle.commit()
            handle.drop()
        self._dead += 1
        self._own_clock = first + len(digests) // DIGEST_SIZE + 1
        self._clocks = None

    def _read_own_clock(self) -> int:
        return decode_state_vector(self.doc.get_state()).get(int(self.doc.client_id), 0)

    def rotate(self) -> None:
        """Replace this replica's container by a fresh one holding only the live entries."""
        if self.prune is not None:
            live = self.own_entries
            dropped = self.prune(live)
            for key in dropped:
                del live[key]
            self.pruned.extend(dropped)
        fresh = self._new_container()
        self._clocks = None
        if self.signing_key is not None:
            self._pending.clear()  # the old container's entries are rewritten, sealed anew
            self._write_sealed(fresh, list(self.own_entries.items()))
            self.seal()
        else:
            with self.doc.transaction() as txn:
                insert = fresh.integrated.insert
                handle = txn._txn
                for key, text in self.own_entries.items():
                    insert(handle, key, text)
        self._own = fresh
        self._gc_debt += self._dead
        self._dead = 0
        self.rotations += 1
        if self._gc_debt > max(MIN_RELOAD, self._live_hint()):
            self.reload()

    def _new_container(self) -> Map[str]:
        """Put an empty container under this replica's key, written by the root writer.

        The root writer is a second, tiny document with a client id of its own that only
        ever writes this key. Its successive containers thus have consecutive clocks, each
        pointing at the previous one, and Yrs squashes the replaced ones into a single
        tombstone: rotating forever leaves no trail at the root.
        """
        before = self._rotator.get_state()
        with self._rotator.transaction():
            self._rotator_root[self.key] = Map()
        self._clocks = None
        self.doc.apply_update(self._rotator.get_update(before))
        container = self._root.get(self.key)
        assert isinstance(container, Map)
        self._own = container
        self._seals = 0
        if self.on_root_item is not None:
            client = int(self._rotator.client_id)
            clock = decode_state_vector(before).get(client, 0)
            self.on_root_item((client, clock), self.key, True)
        return container

    def drop_containers(self, keys: Iterable[str]) -> None:
        """Retire containers of this replica's earlier incarnations.

        A retired key is overwritten with an empty string rather than deleted: the
        overwrite deletes the container wherever it is integrated, so the deletion travels
        with deltas that carry no delete set (see :meth:`delta`).

        The entries are removed first, :data:`DROP_BATCH` per transaction: Yrs deletes a
        container's entries in hash order, and keeps a transaction's deletions in a sorted
        vector, so deleting a large container in one go takes time quadratic in its size
        (10 s for 600,000 entries). The result is the same. Each batch is a transaction:
        call this before anything subscribes to the document's updates (restoring does).
        """
        keys = [key for key in keys if key != self.key and key in self._root]
        if not keys:
            return
        self._clocks = None
        for key in keys:
            self._unwatch(key)
            container = self._root.get(key)
            if isinstance(container, Map):
                entries = list(container.keys())
                remove = container.integrated.remove
                for start in range(0, len(entries), DROP_BATCH):
                    handle = self.doc._doc.create_transaction()
                    try:
                        for entry in entries[start : start + DROP_BATCH]:
                            remove(handle, entry)
                    finally:
                        handle.commit()
                        handle.drop()
        self._write_retired(keys)

    def containers(self) -> list[str]:
        """The keys of every live container in the document, this replica's included."""
        keys = [key for key in self._root.keys() if isinstance(self._root.get(key), Map)]
        if self._own is not None and self.key not in keys:
            keys.append(self.key)
        return keys

    def entry(self, writer: str, key: str) -> str | None:
        """The text of entry ``key`` in container ``writer``; ``None`` if it holds none."""
        container = self._root.get(writer)
        if not isinstance(container, Map):
            return None
        text = container.get(key)
        if text is None:
            return None
        return text if type(text) is str else ""

    def retire(self, keys: Iterable[str]) -> None:
        """Retire other writers' containers (forgotten ones) in one transaction.

        As in :meth:`drop_containers`, each key is overwritten, which deletes the container
        wherever the overwrite is integrated; the entries go with it.
        """
        keys = [key for key in keys if key != self.key and isinstance(self._root.get(key), Map)]
        if not keys:
            return
        self._clocks = None
        for key in keys:
            self._unwatch(key)
        self._write_retired(keys)

    def _unwatch(self, key: str) -> None:
        """Stop observing the container at ``key`` (if this adapter observes it)."""
        old = self._subs.pop(key, None)
        if old is not None:
            old[1].drop()

    def renew(self, nonce: str) -> None:
        """Start writing into a fresh, empty container named by ``nonce``.

        For a replica that learns it was forgotten: its current container no longer
        counts anywhere, so it starts afresh, and retires the old one.
        """
        old = self.key
        replica_id, _, _ = old.rpartition(SEP)
        self.seal()
        self.nonce = nonce
        self.key = writer_key(replica_id, nonce)
        self._own = None
        self.own_entries = {}
        self._dead = 0
        self._clocks = None
        if isinstance(self._root.get(old), Map):
            self._write_retired([old])

    def _write_retired(self, keys: list[str]) -> None:
        """Overwrite root keys with the retired marker, in one transaction."""
        self.seal()  # a seal covers consecutive clocks: the waiting entries come first
        client = int(self.doc.client_id)
        first = self._read_own_clock()
        with self.doc.transaction():
            for key in keys:
                self._root[key] = RETIRED
        self._clocks = None
        # each marker takes one clock of this document's client
        self._own_clock = first + len(keys)
        if self.on_root_item is not None:
            for offset, key in enumerate(keys):
                self.on_root_item((client, first + offset), key, False)

    def reload(self) -> None:
        """Rebuild the document from its own encoding, with the same client id.

        Yrs squashes adjacent GC ranges when it decodes a document but not when items are
        collected in place, so after many rotations the writer's own encoding carries one
        GC range per overwrite ever made (receivers squash them). Rebuilding gives the
        writer the compact form. The state and the client id are unchanged: this is the
        same replica, not a second one writing as it.
        """
        state = self.doc.get_update()
        doc: Doc[Any] = Doc(client_id=self.doc.client_id)
        doc.apply_update(state)
        for _, subscription in self._subs.values():
            subscription.drop()
        self._root_sub.drop()
        for token, (callback, subscription) in list(self._update_callbacks.items()):
            self.doc.unobserve(subscription)
            self._update_callbacks[token] = (callback, self._observe_updates(doc, callback))
        self.doc = doc
        self._root = doc.get(ROOT, type=Map)
        self._root_sub = self._root.integrated.observe(_root_observer(self._root_changes))
        own = self._root.get(self.key)
        self._own = own if isinstance(own, Map) else None
        self._subs = {}
        for key in list(self._root.keys()):
            container = self._root.get(key)
            if key != self.key and isinstance(container, Map):
                subscription = container.integrated.observe(self._entry_observer(key))
                self._subs[key] = (container, subscription)
        self._clocks = None
        self._gc_debt = 0
        self.reloads += 1

    # -- reading and merging ---------------------------------------------------------------

    def apply(
        self, update: bytes, ranges: dict[int, tuple[int, int]] | None = None
    ) -> list[EntryChange]:
        """Apply a peer's update; return the entries it changed in other writers' containers.

        ``ranges`` are the clock ranges the update carries, known to follow on what the
        document holds (no gap): the cached state vector then advances without a decode.

        Raises:
            InvalidUpdate: The bytes cannot be decoded or applied; the document is unchanged.
        """
        self._root_changes.clear()
        self._entry_changes.clear()
        clocks = self._clocks
        self._clocks = None
        # The integrated document's own transaction, as in write: pycrdt's costs as much
        # as applying a small update.
        handle = self.doc._doc.create_transaction()
        try:
            try:
                self.doc._doc.apply_update(handle, update)
            finally:
                handle.commit()
                handle.drop()
        except (ValueError, RuntimeError, PanicException) as exc:
            self._root_changes.clear()
            self._entry_changes.clear()
            raise InvalidUpdate(f"cannot apply update: {exc}") from exc
        if clocks is not None and ranges is not None:
            for client, (_, end) in ranges.items():
                if end > clocks.get(client, 0):
                    clocks[client] = end
            self._clocks = clocks
            self._dirty_sv = True
        own_range = None if ranges is None else ranges.get(int(self.doc.client_id))
        if ranges is None or (
            own_range is not None and (self._own_clock is None or own_range[1] > self._own_clock)
        ):
            # Someone wrote with this client id (an update that only carries this
            # replica's own items back is no news): read the clock again.
            self._own_clock = None
        changes = list(self._entry_changes)
        rotated = self.rotated
        rotated.clear()
        # Only this replica writes its own key: another's write there retired it.
        self.own_replaced = (
            self._own is not None
            and self.key in self._root_changes
            and not isinstance(self._root.get(self.key), Map)
        )
        self.retired_seen = False
        for key in self._root_changes:
            replaced = key in self._subs
            fresh = list(self._resubscribe(key))
            if replaced and key in self._subs:
                # The writer replaced its container: what the fresh one lacks, it left behind.
                rotated.append((key, {entry for _, entry, _ in fresh}))
            elif replaced:
                self.retired_seen = True
            changes.extend(fresh)
        return changes

    def load(self, updates: Iterable[bytes]) -> list[EntryChange]:
        """Apply saved updates to a fresh document.

        Returns every entry of every container, so that the caller can rebuild its view
        in one pass. Containers of this replica's earlier incarnations come back as any
        other writer's; the caller adopts their entries and drops them.

        Raises:
            InvalidUpdate: A saved update cannot be applied.
        """
        self._clocks = None
        for update in updates:
            try:
                self.doc.apply_update(update)
            except (ValueError, RuntimeError, PanicException) as exc:
                raise InvalidUpdate(f"cannot apply saved update: {exc}") from exc
        self._root_changes.clear()
        self._entry_changes.clear()
        return self.scan()

    def on_update(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``callback(update)`` with the Yrs update of every committed transaction
        (local writes, rotations and merges alike); returns an unsubscribe function."""
        token = id(callback) ^ len(self._update_callbacks) << 48
        while token in self._update_callbacks:
            token += 1
        self._update_callbacks[token] = (callback, self._observe_updates(self.doc, callback))

        def unsubscribe() -> None:
            entry = self._update_callbacks.pop(token, None)
            if entry is not None:
                self.doc.unobserve(entry[1])

        return unsubscribe

    @staticmethod
    def _observe_updates(doc: Doc[Any], callback: Callable[[bytes], None]) -> Subscription:
        return doc.observe(lambda event: callback(event.update))

    def trial(self, update: bytes) -> None:
        """Apply an update to a copy of the document, to see whether Yrs accepts it.

        Raises:
            InvalidUpdate: Yrs refuses it.
        """
        copy: Doc[Any] = Doc()
        try:
            copy.apply_update(self.doc.get_update())
            copy.apply_update(update)
        except (ValueError, RuntimeError, PanicException) as exc:
            raise InvalidUpdate(f"cannot apply update: {exc}") from exc

    def scan(self) -> list[EntryChange]:
        """Subscribe to every foreign container and return all their entries."""
        changes: list[EntryChange] = []
        for key in list(self._root.keys()):
            changes.extend(self._resubscribe(key))
        return changes

    def _resubscribe(self, key: str) -> Iterator[EntryChange]:
        if key == self.key:
            return
        self._unwatch(key)
        container = self._root.get(key)
        if not isinstance(container, Map):
            return
        self._subs[key] = (container, container.integrated.observe(self._entry_observer(key)))
        # Read in one transaction: pycrdt's items() opens one per entry, three times slower.
        with self.doc.transaction() as txn:
            handle = txn._txn
            get = container.integrated.get
            entries = [
                (entry_key, get(handle, entry_key))
                for entry_key in container.integrated.keys(handle)
            ]
        for entry_key, text in entries:
            # A value that is no string (a raw client's) has no stamp: the reader counts it.
            yield key, entry_key, text if type(text) is str else ""

    def _entry_observer(self, writer: str) -> Callable[[Any], None]:
        append = self._entry_changes.append  # the list, never the adapter (see above)

        def on_change(event: Any) -> None:
            for entry_key, change in event.keys.items():
                if change.get("action") == "delete":
                    continue
                value = change.get("newValue")
                # A value that is no string (a raw client's) has no stamp: the reader counts it.
                append((writer, entry_key, value if type(value) is str else ""))

        return on_change

    @property
    def writer_clients(self) -> tuple[int, int]:
        """The Yrs client ids this adapter writes with: its document's and the root writer's."""
        return int(self.doc.client_id), int(self._rotator.client_id)

    # -- sync ------------------------------------------------------------------------------

    def clocks(self) -> dict[int, int]:
        """The state vector as ``{client: clock}`` (cached until the document changes)."""
        if self._clocks is None:
            self._clocks = decode_state_vector(self.doc.get_state())
        return self._clocks

    def canonical_state(self) -> bytes:
        """The state vector encoded with clients in order (cached with :meth:`clocks`)."""
        clocks = self.clocks()
        if self._canonical is None or self._canonical[0] is not clocks or self._dirty_sv:
            self._canonical = (clocks, encode_state_vector(clocks))
            self._dirty_sv = False
        return self._canonical[1]

    def delta(self, since: bytes | None) -> bytes:
        """What a peer at ``since`` lacks, without the delete set.

        Yrs puts the document's whole delete set into every diff. In this layout every
        deletion is implied by an insert (an overwritten entry, a replaced container),
        and integrating the insert deletes its predecessor on the receiving side too, so
        the delete set is redundant: it is cut off, which keeps a one-change delta small.

        In signed mode the entries waiting for a seal are sealed first: nothing leaves
        unsealed.
        """
        self.seal()
        try:
            update = self.doc.get_update(since)
            deletions = self.doc.get_update(self.doc.get_state())[1:]
        except (ValueError, RuntimeError, PanicException) as exc:
            raise InvalidUpdate(f"cannot read state vector: {exc}") from exc
        if len(deletions) > 1 and update.endswith(deletions):
            return update[: -len(deletions)] + b"\x00"
        return update


def _root_observer(changes: list[str]) -> Callable[[Any], None]:
    """Collects the root keys a transaction set into ``changes`` (the list, not the adapter)."""
    append = changes.append

    def on_root(event: Any) -> None:
        for key, change in event.keys.items():
            if change.get("action") != "delete":
                append(key)

    return on_root
