"""Reading the structure of a Yrs v1 update: which clock ranges it carries, what it needs.

Yrs holds an update whose causal predecessors are missing and retries it when they arrive,
but that retry is not reliable for map overwrites in the Yrs version pycrdt 0.14 ships
(an update applied before its predecessor can lose entries and leave the state vector
short). So the replica holds such updates itself and gives Yrs only updates whose
predecessors it already has. This module finds out, from the bytes, what an update needs:
for every client the clock at which its structs start, and every item it points at (origin,
right origin, parent).

The walk follows the lib0/Yjs v1 encoding and is also the gate that untrusted bytes pass
before Yrs decodes them: Yrs reserves memory for a count before it reads the items (six
bytes claiming 2**28 clients made it reserve 512 MB), and it refuses some content only
after decoding everything before it. So every count and length is checked against the
bytes left, every string is checked as UTF-8, shared types and embedded JSON as Yrs reads
them, and the delete set and the end of the update too; any inconsistency raises
:class:`~sphaera_crdt.errors.InvalidUpdate`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final, NamedTuple

from ..errors import InvalidUpdate
from .lib0 import MAX_CLIENT, MAX_CLOCK, read_varuint

__all__ = [
    "DELETED",
    "GARBAGE",
    "MAP",
    "OTHER",
    "STRING",
    "Struct",
    "UpdateShape",
    "missing",
    "shape",
]

_GC: Final = 0
_SKIP: Final = 10
_MAP_TYPE: Final = 1

#: What a :class:`Struct` holds.
GARBAGE: Final = 0
DELETED: Final = 1
STRING: Final = 2
MAP: Final = 3
OTHER: Final = 4

ItemId = tuple[int, int]


class Struct(NamedTuple):
    """One struct of an update, as the checks of signed mode (:mod:`.door`) read it."""

    client: int
    clock: int
    length: int
    #: left origin, right origin (``None`` when absent)
    origin: ItemId | None
    right: ItemId | None
    #: the root type's name (a string) or the parent item's id; ``None`` when inherited
    parent: str | ItemId | None
    #: the map key (``None`` when inherited, or for sequence items)
    key: str | None
    #: :data:`GARBAGE`, :data:`DELETED`, :data:`STRING`, :data:`MAP` or :data:`OTHER`
    kind: int
    #: the string a :data:`STRING` item holds
    text: str | None


@dataclass(frozen=True, slots=True)
class UpdateShape:
    """Clock ranges an update carries and the item ids it refers to."""

    #: client -> (first clock, clock after the last struct)
    ranges: dict[int, tuple[int, int]]
    #: (client, clock) ids of items the update's items point at
    refs: frozenset[tuple[int, int]]
    #: ids of the items named as parents (they must be shared types)
    parents: frozenset[tuple[int, int]] = frozenset()
    #: ids of the shared types (maps, arrays, ...) the update creates
    types: frozenset[tuple[int, int]] = frozenset()
    #: whether the update's delete set names any range
    deletes: bool = False
    #: every struct, in the order of the update (only when asked for: ``shape(items=True)``)
    items: list[Struct] | None = None
    #: where the delete set starts
    deletes_at: int = 0


def _bomb(what: str, count: int, left: int) -> InvalidUpdate:
    return InvalidUpdate(f"update claims {count} {what} in the {left} bytes left")


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def uint(self) -> int:
        value, self.pos = read_varuint(self.data, self.pos)
        return value

    def count(self, what: str, size: int = 1) -> int:
        """A count of items that take at least ``size`` bytes each, checked against the
        bytes left (Yrs reserves room for a count before it reads the items)."""
        value = self.uint()
        if value * size > self.end - self.pos:
            raise _bomb(what, value, self.end - self.pos)
        return value

    def skip(self, count: int) -> None:
        if count > self.end - self.pos:
            raise InvalidUpdate("update field runs past the end")
        self.pos += count

    def bytes(self) -> bytes:
        length = self.uint()
        start = self.pos
        self.skip(length)
        return self.data[start : self.pos]

    def string(self) -> str:
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidUpdate("invalid UTF-8 in update string") from exc

    def json(self) -> None:
        text = self.string()
        try:
            value = json.loads(
                text, parse_constant=_no_constant, parse_float=_finite, parse_int=_finite
            )
        except (ValueError, RecursionError) as exc:
            raise InvalidUpdate("invalid JSON in update content") from exc
        _check_json(value)

    def any(self, depth: int = 0) -> None:
        if depth > 256:
            raise InvalidUpdate("update value nested too deeply")
        if self.pos >= self.end:
            raise InvalidUpdate("truncated update value")
        kind = self.data[self.pos]
        self.pos += 1
        if kind in (127, 126, 121, 120):
            return
        if kind == 125:  # signed varint: at most 64 bits
            for _ in range(10):
                if self.pos >= self.end:
                    raise InvalidUpdate("truncated varint in update value")
                byte = self.data[self.pos]
                self.pos += 1
                if byte < 0x80:
                    return
            raise InvalidUpdate("varint longer than 64 bits in update value")
        elif kind == 124:
            self.skip(4)
        elif kind in (123, 122):
            self.skip(8)
        elif kind == 119:
            self.string()
        elif kind == 116:
            self.bytes()
        elif kind == 118:  # a map: key and value, two bytes at least
            for _ in range(self.count("map entries", 2)):
                self.string()
                self.any(depth + 1)
        elif kind == 117:
            for _ in range(self.count("array items")):
                self.any(depth + 1)
        else:
            raise InvalidUpdate(f"unknown value type {kind} in update")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # serde_json, which Yrs parses embedded JSON with, refuses numbers beyond a float's range
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


#: serde_json refuses JSON nested 128 levels deep and more.
_JSON_DEPTH: Final = 100


def _check_json(value: object) -> None:
    """What Yrs' JSON parser refuses and Python's accepts: deep nesting, lone surrogates."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _JSON_DEPTH:
            raise InvalidUpdate("JSON in update content nested too deeply")
        if type(item) is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidUpdate("lone surrogate in update JSON") from None
        elif type(item) is list:
            stack.extend((element, depth + 1) for element in item)
        elif type(item) is dict:
            stack.extend((key, depth + 1) for key in item)
            stack.extend((element, depth + 1) for element in item.values())


#: Type refs Yrs decodes: array, map, text, XML element, fragment, hook and text, subdocument
#: and undefined. XML elements and hooks carry a name.
_TYPE_REFS: Final = frozenset({0, 1, 2, 3, 4, 5, 6, 9, 15})
_NAMED_TYPES: Final = frozenset({3, 5})


def _content_length(reader: _Reader, ref: int) -> int:
    """Skip an item's content; return how many clock ticks it spans."""
    if ref == 1:  # deleted
        return reader.uint()
    if ref == 2:
        # Legacy JSON content: Yrs reads one string more than the count it writes, so no
        # two implementations agree on where it ends. Nothing writes it any more.
        raise InvalidUpdate("legacy JSON content in update")
    if ref == 3:  # binary
        reader.bytes()
        return 1
    if ref == 4:  # string: its length in UTF-16 code units
        text = reader.string()
        return len(text.encode("utf-16-le")) // 2
    if ref == 5:  # embed
        reader.json()
        return 1
    if ref == 6:  # format
        reader.string()
        reader.json()
        return 1
    if ref == 7:  # type
        type_ref = reader.uint()
        if type_ref not in _TYPE_REFS:
            raise InvalidUpdate(f"unknown shared type {type_ref} in update")
        if type_ref in _NAMED_TYPES:
            reader.string()
        return 1
    if ref == 8:  # any
        count = reader.count("values")
        for _ in range(count):
            reader.any()
        return count
    if ref == 9:  # subdocument
        reader.string()
        reader.any()
        return 1
    raise InvalidUpdate(f"unknown content type {ref} in update")


def _id(reader: _Reader) -> tuple[int, int]:
    client = reader.uint()
    clock = reader.uint()
    if client > MAX_CLIENT or clock > MAX_CLOCK:
        raise InvalidUpdate(f"update refers to item {client}:{clock}, out of range")
    return client, clock


def _delete_set(reader: _Reader) -> bool:
    """Walk the delete set that ends an update; whether it names any range."""
    deletes = False
    # a client takes two bytes at least (its id and its count of ranges)
    for _ in range(reader.count("delete set clients", 2)):
        client = reader.uint()
        ranges = reader.count("deleted ranges", 2)
        for _ in range(ranges):
            clock = reader.uint()
            length = reader.uint()
            if client > MAX_CLIENT or clock + length > MAX_CLOCK + 1:
                raise InvalidUpdate(f"update deletes {client}:{clock}+{length}, out of range")
        deletes = deletes or ranges > 0
    return deletes


def shape(update: bytes, items: bool = False) -> UpdateShape:
    """Read the structure of a v1 update, and check it whole: every count and length
    against the bytes left (so that Yrs, which reserves room for a count before it reads
    the items, is never asked to reserve more than the update could hold), every string's
    UTF-8, every shared type, the delete set, and that nothing follows it.

    With ``items``, the shape also lists every struct (:attr:`UpdateShape.items`): the
    same walk then serves the checks of signed mode.

    Raises:
        InvalidUpdate: The bytes are not a well-formed v1 update.
    """
    # The walk reads varuints inline when they take one byte (most do): a call per
    # varuint would cost more than the rest of a merge.
    reader = _Reader(update)
    data = update
    end = len(data)
    ranges: dict[int, tuple[int, int]] = {}
    refs: set[tuple[int, int]] = set()
    parents: set[tuple[int, int]] = set()
    types: set[tuple[int, int]] = set()
    found: list[Struct] | None = [] if items else None
    # what a listed struct holds besides its id (read only when listing)
    origin: ItemId | None = None
    right: ItemId | None = None
    item_parent: str | ItemId | None = None
    item_key: str | None = None
    try:
        clients, pos = read_varuint(data, 0)
        # a client takes three bytes at least (its count of structs, id and first clock)
        if clients * 3 > end - pos:
            raise _bomb("clients", clients, end - pos)
        # Client ids take eight bytes as varuints and recur in every item that points at
        # another: the bytes of the last one read are compared before decoding again.
        raw, raw_value = b"\x00", 0
        # the last parent named by an id (see below); -1 is no id
        parent_client = parent_clock = -1
        last_parent: ItemId | None = None
        for _ in range(clients):
            count, pos = read_varuint(data, pos)
            begin = pos
            client, pos = read_varuint(data, pos)
            raw, raw_value = data[begin:pos], client
            start, pos = read_varuint(data, pos)
            # a struct takes two bytes at least (its info byte and a length or content)
            if count * 2 > end - pos:
                raise _bomb("structs", count, end - pos)
            clock = start
            for _ in range(count):
                info = data[pos]
                pos += 1
                ref = info & 0x1F
                if ref == _GC or ref == _SKIP:
                    length = data[pos]
                    if length < 0x80:
                        pos += 1
                    else:
                        length, pos = read_varuint(data, pos)
                    if found is not None and ref == _GC:
                        found.append(
                            Struct(client, clock, length, None, None, None, None, GARBAGE, None)
                        )
                    clock += length
                    continue
                if info & 0xC0:
                    for flag in (0x80, 0x40):  # origin, right origin
                        if info & flag:
                            if data.startswith(raw, pos):
                                item_client = raw_value
                                pos += len(raw)
                            else:
                                begin = pos
                                item_client, pos = read_varuint(data, pos)
                                raw, raw_value = data[begin:pos], item_client
                            item_clock, pos = read_varuint(data, pos)
                            refs.add((item_client, item_clock))
                            if found is not None:
                                if flag == 0x80:
                                    origin = (item_client, item_clock)
                                else:
                                    right = (item_client, item_clock)
                else:
                    # The parent: a root type's name (1) or an item's id (0), then the key
                    # of a map entry; read inline, as above (an item of a nested map, every
                    # entry of this layout, comes here).
                    if data[pos] == 0:
                        if data.startswith(raw, pos + 1):
                            item_client = raw_value
                            pos += 1 + len(raw)
                        else:
                            begin = pos + 1
                            item_client, pos = read_varuint(data, begin)
                            raw, raw_value = data[begin:pos], item_client
                        item_clock = data[pos]
                        if item_clock < 0x80:
                            pos += 1
                        else:
                            item_clock, pos = read_varuint(data, pos)
                        if item_clock != parent_clock or item_client != parent_client:
                            # a container's entries name the same parent, one after another
                            if item_client > MAX_CLIENT or item_clock > MAX_CLOCK:
                                raise InvalidUpdate(
                                    f"update refers to item {item_client}:{item_clock}, "
                                    "out of range"
                                )
                            parent_client, parent_clock = item_client, item_clock
                            last_parent = (item_client, item_clock)
                            refs.add(last_parent)
                            parents.add(last_parent)
                        item_parent = last_parent
                        if info & 0x20:
                            length = data[pos]
                            if length < 0x80:
                                pos += 1
                            else:
                                length, pos = read_varuint(data, pos)
                            if length > end - pos:
                                raise InvalidUpdate("update field runs past the end")
                            key = data[pos : pos + length]
                            pos += length
                            if key.isascii():
                                if found is not None:
                                    item_key = key.decode("ascii")
                            else:
                                try:
                                    item_key = key.decode("utf-8")
                                except UnicodeDecodeError:
                                    raise InvalidUpdate("invalid UTF-8 in update string") from None
                    else:
                        reader.pos = pos
                        if reader.uint() == 1:
                            item_parent = reader.string()
                        else:
                            parent = item_parent = _id(reader)
                            refs.add(parent)
                            parents.add(parent)
                        if info & 0x20:
                            item_key = reader.string()
                        pos = reader.pos
                if ref == 7:
                    types.add((client, clock))
                if ref == 8 and data[pos] == 1 and data[pos + 1] == 119:
                    # the common case: one string value (every entry of this layout)
                    length = data[pos + 2]
                    if length < 0x80:
                        pos += 3
                    else:
                        length, pos = read_varuint(data, pos + 2)
                    text = data[pos : pos + length]
                    pos += length
                    if not text.isascii():
                        try:
                            text.decode("utf-8")
                        except UnicodeDecodeError:
                            raise InvalidUpdate("invalid UTF-8 in update string") from None
                    if found is not None:
                        found.append(
                            _listed(
                                client,
                                clock,
                                1,
                                info,
                                origin,
                                right,
                                item_parent,
                                item_key,
                                STRING,
                                text.decode("utf-8"),
                            )
                        )
                        origin = right = None
                    clock += 1
                    continue
                if found is not None:
                    if ref == 7:
                        kind = MAP if data[pos] == _MAP_TYPE else OTHER
                    else:
                        kind = DELETED if ref == 1 else OTHER
                    reader.pos = pos
                    length = _content_length(reader, ref)
                    found.append(
                        _listed(
                            client,
                            clock,
                            length,
                            info,
                            origin,
                            right,
                            item_parent,
                            item_key,
                            kind,
                            None,
                        )
                    )
                    origin = right = None
                    clock += length
                else:
                    reader.pos = pos
                    clock += _content_length(reader, ref)
                pos = reader.pos
            if client > MAX_CLIENT or clock > MAX_CLOCK:
                raise InvalidUpdate(f"update struct {client}:{clock} is out of range")
            if count:
                first, last = ranges.get(client, (start, clock))
                ranges[client] = (min(first, start), max(last, clock))
        if pos > end:
            raise InvalidUpdate("update field runs past the end")
        reader.pos = deletes_at = pos
        deletes = _delete_set(reader)
    except IndexError:
        raise InvalidUpdate("truncated update") from None
    if reader.pos != end:
        raise InvalidUpdate(f"{end - reader.pos} trailing bytes after the update")
    for client, clock in refs:
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise InvalidUpdate(f"update refers to item {client}:{clock}, out of range")
    return UpdateShape(
        ranges=ranges,
        refs=frozenset(refs),
        parents=frozenset(parents),
        types=frozenset(types),
        deletes=deletes,
        items=found,
        deletes_at=deletes_at,
    )


def _listed(
    client: int,
    clock: int,
    length: int,
    info: int,
    origin: ItemId | None,
    right: ItemId | None,
    parent: str | ItemId | None,
    key: str | None,
    kind: int,
    text: str | None,
) -> Struct:
    """A listed struct: an item with an origin inherits its parent and key."""
    if info & 0xC0:
        return Struct(client, clock, length, origin, right, None, None, kind, text)
    return Struct(
        client, clock, length, None, None, parent, key if info & 0x20 else None, kind, text
    )


def missing(update_shape: UpdateShape, state: dict[int, int]) -> bool:
    """Whether an update needs structs that a document at ``state`` does not have."""
    ranges = update_shape.ranges
    for client, (start, _) in ranges.items():
        if start > state.get(client, 0):
            return True
    for client, clock in update_shape.refs:
        if clock < state.get(client, 0):
            continue
        inside = ranges.get(client)
        if inside is None or not inside[0] <= clock < inside[1]:
            return True
    return False
