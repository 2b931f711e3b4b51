"""The door of signed mode: which items of an update may enter the document.

Yrs items name no author that anyone can check: any holder of the bytes can write any
client id, and a map item may overwrite any key. So in signed mode every update is read
item by item (:func:`.updates.shape` lists the items) before Yrs sees it, and refused whole
(:class:`~sphaera_crdt.errors.UnverifiedUpdate`) unless every item is one of:

- a root entry (``w`` / *writer key*) of a writer in the trust list, holding a container
  (only that container's root writer may replace it) or the retired marker (anyone may
  retire a container: forgetting does; it removes evidence, it never makes any);
- an entry of a container, written by the client id that the container's seals name,
  at a clock a seal covers, with the digest the seal gives for that clock; the seal
  verifies under the trust list's key for the container's writer (:mod:`.seals`);
- deleted content (an overwritten entry) at clocks its writer's seal covers;
- a garbage range (the items of a replaced container, which carry nothing): fresh nodes
  need them for replicas long gone, so they are let in whatever client they name.

Where an item goes is either written in it (a parent and a key) or inherited from its
origin, the item it overwrote. The door keeps, for every container it let in, which
client writes it and the key of each current item, so an overwrite's key is known; an
item whose origin it does not know is refused. It also keeps the verified seals of each
live container until the container is replaced or retired.

What the door cannot tell locally (docs/signed-mode.md lists it all): the delete set of an
update names deleted items but not who deleted them. In this layout every deletion follows
from an insert (an overwrite, a replaced container), so in signed mode the delete set is
not applied at all (:meth:`Door.admit` returns the update without it).

The same checks, applied to the whole document (:meth:`Door.audit`), give the entries
that do not verify under the current trust list (a changed list, a store written before
signed mode); readers ignore them.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from ..errors import UnverifiedUpdate
from .seals import SEAL, Seal, digest, parse_seal
from .trust import Trust
from .updates import DELETED, GARBAGE, MAP, STRING, Struct, UpdateShape, shape

__all__ = ["Admission", "Door"]

ROOT: Final = "w"
RETIRED: Final = ""
SEP: Final = "\x1f"

ItemId = tuple[int, int]


def _writer_id(key: str) -> str | None:
    replica_id, sep, nonce = key.rpartition(SEP)
    return replica_id if sep and replica_id and nonce else None


class _Seals:
    """Verified seals, found by the clock they cover."""

    __slots__ = ("firsts", "seals")

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.seals: list[Seal] = []

    def __bool__(self) -> bool:
        return bool(self.seals)

    def seal_at(self, clock: int) -> Seal | None:
        index = bisect.bisect_right(self.firsts, clock) - 1
        if index >= 0:
            seal = self.seals[index]
            if seal.covers(clock):
                return seal
        return None

    def add(self, seal: Seal) -> None:
        index = bisect.bisect_right(self.firsts, seal.first)
        self.firsts.insert(index, seal.first)
        self.seals.insert(index, seal)


@dataclass(slots=True)
class _Container:
    """What the door knows of one live container (one Yrs map under a writer key)."""

    key: str
    root_client: int
    #: the client id that writes its entries (from its first verified seal)
    client: int | None = None
    seals: _Seals = field(default_factory=_Seals)
    #: every client with an item indexed here (see ``Door._items``)
    writers: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Admission:
    """What :meth:`Door.admit` found: the update to apply, and what to remember once it is."""

    update: bytes
    roots: dict[ItemId, str]
    containers: dict[ItemId, _Container]
    #: (container map id, client, item's last clock, key, origin clock or None) of the
    #: entry items
    entries: list[tuple[ItemId, int, int, str, int | None]]
    seals: list[tuple[ItemId, Seal]]
    #: writer keys whose container was retired
    retired: list[str]
    #: (container, key) of entries that do not verify (audit only)
    failed: list[tuple[str, str]] = field(default_factory=list)


class Door:
    """Checks updates against a trust list, and remembers what it let in.

    Args:
        trust: The trust list.
    """

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        #: root item id -> writer key, of every root item let in
        self._roots: dict[ItemId, str] = {}
        #: container map item id -> what is known of it
        self._containers: dict[ItemId, _Container] = {}
        #: writer key -> the id of its current container map
        self._current: dict[str, ItemId] = {}
        #: client -> {last clock of an item -> (container map id, key)}: where an
        #: overwrite's origin points, for the current items of every container
        self._items: dict[int, dict[int, tuple[ItemId, str]]] = {}
        #: the client ids this replica writes with: nobody else writes new items as them
        self.own_clients: frozenset[int] = frozenset()

    # -- checking ----------------------------------------------------------------------

    def admit(self, update: bytes, needs: UpdateShape, known: dict[int, int]) -> Admission:
        """Check an update of shape ``needs`` against a document whose state vector is
        ``known``: the items it holds already are not looked at (Yrs skips them). The
        items are those the shape lists, or, if it lists none, those of a walk here.

        Returns the update without its delete set, and what to :meth:`commit` once it is
        applied.

        Raises:
            UnverifiedUpdate: Some item is not allowed; nothing is remembered.
        """
        if needs.items is None:
            needs = shape(update, items=True)
        assert needs.items is not None
        deletes_at = needs.deletes_at
        fresh = [s for s in needs.items if s.clock + s.length > known.get(s.client, 0)]
        own = self.own_clients
        for item in fresh:
            if item.client in own:
                raise self._refuse(f"new items under this replica's own client id {item.client}")
        admission = self._check(fresh, audit=False)
        if deletes_at < len(update) and update[deletes_at:] != b"\x00":
            admission.update = update[:deletes_at] + b"\x00"
        else:
            admission.update = update
        return admission

    def audit(self, state: bytes) -> Admission:
        """Check a whole document's state, forgetting what was known before: the entries
        that do not verify are listed in ``failed`` instead of refusing the state, and
        items that cannot be placed are left out. Call :meth:`commit` with the result."""
        self._roots.clear()
        self._containers.clear()
        self._current.clear()
        self._items.clear()
        found = shape(state, items=True).items
        assert found is not None
        admission = self._check(found, audit=True)
        admission.update = state
        return admission

    def _refuse(self, message: str) -> UnverifiedUpdate:
        return UnverifiedUpdate(f"signed mode: {message}")

    def _check(self, found: list[Struct], *, audit: bool) -> Admission:
        roots: dict[ItemId, str] = {}
        containers: dict[ItemId, _Container] = {}
        entries: list[tuple[ItemId, int, int, str, int | None]] = []
        seals: list[tuple[ItemId, Seal]] = []
        retired: list[str] = []
        failed: list[tuple[str, str]] = []
        #: client -> {last clock -> (container map id, key)} of this update's entry items
        pending: dict[int, dict[int, tuple[ItemId, str]]] = {}
        # entry items to check once the seals are read: (struct, map id, key)
        texts: list[tuple[Struct, ItemId, str]] = []
        sealing: list[tuple[Struct, ItemId, str]] = []
        deleted: list[tuple[Struct, ItemId]] = []
        # Each item goes where its parent or origin is; one that points at an item later
        # in the update waits for it (each item is placed at most twice: linear in the
        # update, whatever order an adversary gives its items).
        waiting: dict[ItemId, list[Struct]] = {}
        queue = deque(s for s in found if s.kind != GARBAGE)
        known = self._containers
        while queue:
            item = queue.popleft()
            parent = item.parent
            if (
                type(parent) is tuple
                and item.key is not None
                and (parent in known or parent in containers)
            ):
                map_id, key = parent, item.key  # the common case, as _place finds it
            else:
                try:
                    placed, named, wait = self._place(item, roots, containers, pending)
                    if wait is not None:
                        waiting.setdefault(wait, []).append(item)
                        continue
                    assert named is not None
                    if placed is None:
                        self._root_item(item, named, roots, containers, retired, audit=audit)
                        last = (item.client, item.clock + item.length - 1)
                        queue.extend(waiting.pop(last, ()))
                        queue.extend(waiting.pop((item.client, item.clock), ()))
                        continue
                except UnverifiedUpdate:
                    if audit:
                        continue
                    raise
                map_id, key = placed, named
            kind = item.kind
            if kind != STRING and kind != DELETED:
                if audit:
                    continue
                container = containers.get(map_id) or known[map_id]
                raise self._refuse(f"a container of {container.key!r} holds a nested type")
            last_clock = item.clock + item.length - 1
            origin = item.origin[1] if item.origin is not None else None
            by_clock = pending.get(item.client)
            if by_clock is None:
                by_clock = pending[item.client] = {}
            by_clock[last_clock] = (map_id, key)
            entries.append((map_id, item.client, last_clock, key, origin))
            if waiting:
                queue.extend(waiting.pop((item.client, last_clock), ()))
            if kind == DELETED:
                deleted.append((item, map_id))
            elif key[:2] == SEAL:
                sealing.append((item, map_id, key))
            else:
                texts.append((item, map_id, key))
        if waiting and not audit:
            item = next(iter(waiting.values()))[0]
            raise self._refuse(f"item {item.client}:{item.clock} goes where no container let in is")
        # The seals first: entries are checked against them.
        fresh: dict[ItemId, _Seals] = {}
        for item, map_id, key in sealing:
            container = containers.get(map_id) or known[map_id]
            seal = parse_seal(item.text or "")
            problem = self._seal_problem(seal, item, container)
            if problem is not None:
                if not audit:
                    raise self._refuse(problem)
                failed.append((container.key, key))
                continue
            assert seal is not None
            seals.append((map_id, seal))
            verified = fresh.get(map_id)
            if verified is None:
                verified = fresh[map_id] = _Seals()
            verified.add(seal)
        for item, map_id, key in texts:
            container = containers.get(map_id) or known[map_id]
            problem = self._entry_problem(item, key, container, fresh.get(map_id))
            if problem is not None:
                if not audit:
                    raise self._refuse(problem)
                failed.append((container.key, key))
        if not audit:
            # Deleted content says nothing, but its clocks are its writer's: only items the
            # writer sealed may come in deleted (an overwritten entry), lest anyone take
            # the clocks of the writer's next entries.
            for item, map_id in deleted:
                container = containers.get(map_id) or self._containers[map_id]
                sealed = fresh.get(map_id)
                for clock in range(item.clock, item.clock + item.length):
                    seal = container.seals.seal_at(clock)
                    if seal is None and sealed is not None:
                        seal = sealed.seal_at(clock)
                    if seal is None or seal.client != item.client:
                        raise self._refuse(
                            f"deleted item {item.client}:{clock} in the container of "
                            f"{container.key!r} is not sealed by its writer"
                        )
        return Admission(b"", roots, containers, entries, seals, retired, failed)

    def _place(
        self,
        item: Struct,
        roots: dict[ItemId, str],
        containers: dict[ItemId, _Container],
        pending: dict[int, dict[int, tuple[ItemId, str]]],
    ) -> tuple[ItemId | None, str | None, ItemId | None]:
        """(container map id or ``None`` for the root, key, ``None``) where ``item`` goes,
        or (``None``, ``None``, the id of the item it waits for) while that one is not
        placed yet."""
        parent = item.parent
        if parent is not None:
            if isinstance(parent, str):
                if parent != ROOT or item.key is None:
                    raise self._refuse(f"an item outside the document's layout ({parent!r})")
                return None, item.key, None
            if parent in containers or parent in self._containers:
                if item.key is None:
                    raise self._refuse("a container item without a key")
                return parent, item.key, None
            return None, None, parent
        origin = item.origin if item.origin is not None else item.right
        assert origin is not None  # an item without origins names its parent
        named = roots.get(origin) or self._roots.get(origin)
        if named is not None:
            return None, named, None
        client, clock = origin
        found = pending.get(client, {}).get(clock) or self._items.get(client, {}).get(clock)
        if found is None or (found[0] not in containers and found[0] not in self._containers):
            return None, None, origin  # not placed yet, or in a container that is gone
        if client != item.client:
            # An overwrite of another client's entry: single-writer containers have none.
            raise self._refuse(
                f"item {item.client}:{item.clock} overwrites an entry of client {client}"
            )
        return found[0], found[1], None

    def _root_item(
        self,
        item: Struct,
        key: str,
        roots: dict[ItemId, str],
        containers: dict[ItemId, _Container],
        retired: list[str],
        *,
        audit: bool,
    ) -> None:
        roots[(item.client, item.clock + item.length - 1)] = key
        if item.kind == MAP:
            writer = _writer_id(key)
            if not audit and (writer is None or writer not in self.trust):
                # In an audit the container is let in, and its seals fail to verify.
                raise self._refuse(f"a container of {writer or key!r}, not in the trust list")
            current = self._current.get(key)
            known = None if current is None else self._containers.get(current)
            if known is not None and known.root_client != item.client:
                raise self._refuse(f"client {item.client} replaces the container of {key!r}")
            containers[(item.client, item.clock)] = _Container(key, item.client)
        elif item.kind == STRING:
            if item.text != RETIRED:
                raise self._refuse(f"a root entry {key!r} that is neither container nor retired")
            retired.append(key)
        elif item.kind != DELETED:
            raise self._refuse(f"a root entry {key!r} of another type")

    def _seal_problem(self, seal: Seal | None, item: Struct, container: _Container) -> str | None:
        key = container.key
        if seal is None:
            return f"an unreadable seal in the container of {key!r}"
        if seal.client != item.client or seal.first + seal.count != item.clock:
            return f"a seal of {key!r} that is not where it was made"
        if seal.root_client != container.root_client:
            return f"a seal of {key!r} made for another container"
        writer = _writer_id(key)
        verifier = None if writer is None else self.trust.verifier(writer)
        if verifier is None or not seal.verify(key, verifier):
            return f"a seal of {key!r} that does not verify under the trust list"
        return None

    def _entry_problem(
        self, item: Struct, key: str, container: _Container, fresh: _Seals | None
    ) -> str | None:
        clock = item.clock
        seal = container.seals.seal_at(clock)
        if seal is None and fresh is not None:
            seal = fresh.seal_at(clock)
        if seal is None or seal.client != item.client:
            return f"entry {key!r} of {container.key!r} is not sealed by its writer"
        if seal.digest_at(clock) != digest(key, item.text or ""):
            return f"entry {key!r} of {container.key!r} does not match its seal"
        return None

    # -- remembering -------------------------------------------------------------------

    def commit(self, admission: Admission) -> None:
        """Remember what an admitted (or audited) update let in."""
        for key in admission.retired:
            self._drop(key)
        for item_id, key in admission.roots.items():
            self._roots[item_id] = key
        for map_id, container in admission.containers.items():
            self._drop(container.key)
            self._containers[map_id] = container
            self._current[container.key] = map_id
        items = self._items
        for map_id, client, last, key, origin in admission.entries:
            holder = self._containers.get(map_id)
            if holder is None:
                continue  # its container was replaced in the same update
            holder.writers.add(client)
            by_clock = items.get(client)
            if by_clock is None:
                by_clock = items[client] = {}
            if origin is not None:
                by_clock.pop(origin, None)
            by_clock[last] = (map_id, key)
        for map_id, seal in admission.seals:
            sealed = self._containers.get(map_id)
            if sealed is not None:
                sealed.seals.add(seal)
                if sealed.client is None:
                    sealed.client = seal.client

    def _drop(self, key: str) -> None:
        """Forget the current container of ``key`` (replaced or retired)."""
        map_id = self._current.pop(key, None)
        if map_id is None:
            return
        container = self._containers.pop(map_id, None)
        if container is None:
            return
        for client in container.writers:
            by_clock = self._items.get(client)
            if by_clock is not None:
                for clock in [c for c, (m, _) in by_clock.items() if m == map_id]:
                    del by_clock[clock]
                if not by_clock:
                    del self._items[client]

    def sealed(self, key: str) -> bool:
        """Whether the current container of writer key ``key`` holds a verified seal (an
        empty container, which anyone can make under a listed id, is no sign of life)."""
        map_id = self._current.get(key)
        container = None if map_id is None else self._containers.get(map_id)
        return container is not None and bool(container.seals)

    def own_container(self, key: str, map_id: ItemId) -> None:
        """Note this replica's own fresh container (its root item was written here)."""
        self._drop(key)
        self._roots[map_id] = key
        self._containers[map_id] = _Container(key, map_id[0])
        self._current[key] = map_id

    def own_root(self, item_id: ItemId, key: str) -> None:
        """Note a root item this replica wrote (a retired marker)."""
        self._drop(key)
        self._roots[item_id] = key
