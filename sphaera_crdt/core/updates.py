"""Reading the structure of a Yrs v1 update: which clock ranges it carries, what it needs.

Yrs holds an update whose causal predecessors are missing and retries it when they arrive,
but that retry is not reliable for map overwrites in the Yrs version pycrdt 0.14 ships
(an update applied before its predecessor can lose entries and leave the state vector
short). So the replica holds such updates itself and gives Yrs only updates whose
predecessors it already has. This module finds out, from the bytes, what an update needs:
for every client the clock at which its structs start, and every item it points at (origin,
right origin, parent).

The walk follows the lib0/Yjs v1 encoding; any inconsistency raises
:class:`~sphaera_crdt.errors.InvalidUpdate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import InvalidUpdate
from .lib0 import MAX_CLIENT, MAX_CLOCK, read_varuint

__all__ = ["UpdateShape", "missing", "shape"]

_GC: Final = 0
_SKIP: Final = 10


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


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def uint(self) -> int:
        value, self.pos = read_varuint(self.data, self.pos)
        return value

    def skip(self, count: int) -> None:
        if count > self.end - self.pos:
            raise InvalidUpdate("update field runs past the end")
        self.pos += count

    def string(self) -> bytes:
        length = self.uint()
        start = self.pos
        self.skip(length)
        return self.data[start : self.pos]

    def any(self, depth: int = 0) -> None:
        if depth > 256:
            raise InvalidUpdate("update value nested too deeply")
        if self.pos >= self.end:
            raise InvalidUpdate("truncated update value")
        kind = self.data[self.pos]
        self.pos += 1
        if kind in (127, 126, 121, 120):
            return
        if kind == 125:  # signed varint
            while True:
                if self.pos >= self.end:
                    raise InvalidUpdate("truncated varint in update value")
                byte = self.data[self.pos]
                self.pos += 1
                if byte < 0x80:
                    return
        elif kind == 124:
            self.skip(4)
        elif kind in (123, 122):
            self.skip(8)
        elif kind in (119, 116):
            self.string()
        elif kind == 118:
            for _ in range(self.uint()):
                self.string()
                self.any(depth + 1)
        elif kind == 117:
            for _ in range(self.uint()):
                self.any(depth + 1)
        else:
            raise InvalidUpdate(f"unknown value type {kind} in update")


def _content_length(reader: _Reader, ref: int) -> int:
    """Skip an item's content; return how many clock ticks it spans."""
    if ref == 1:  # deleted
        return reader.uint()
    if ref == 2:  # JSON
        count = reader.uint()
        for _ in range(count):
            reader.string()
        return count
    if ref == 3:  # binary
        reader.string()
        return 1
    if ref == 4:  # string: its length in UTF-16 code units
        text = reader.string()
        try:
            return len(text.decode("utf-8").encode("utf-16-le")) // 2
        except UnicodeDecodeError as exc:
            raise InvalidUpdate("invalid UTF-8 in update string") from exc
    if ref == 5:  # embed
        reader.string()
        return 1
    if ref == 6:  # format
        reader.string()
        reader.string()
        return 1
    if ref == 7:  # type
        type_ref = reader.uint()
        if type_ref in (3, 5):  # XmlElement, XmlHook carry a name
            reader.string()
        return 1
    if ref == 8:  # any
        count = reader.uint()
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


def shape(update: bytes) -> UpdateShape:
    """Read the structure of a v1 update (not its delete set).

    Raises:
        InvalidUpdate: The bytes are not a well-formed v1 update.
    """
    # The walk reads varuints inline when they take one byte (most do): a call per
    # varuint would cost more than the rest of a merge.
    reader = _Reader(update)
    data = update
    ranges: dict[int, tuple[int, int]] = {}
    refs: set[tuple[int, int]] = set()
    parents: set[tuple[int, int]] = set()
    types: set[tuple[int, int]] = set()
    try:
        clients, pos = read_varuint(data, 0)
        for _ in range(clients):
            count, pos = read_varuint(data, pos)
            client, pos = read_varuint(data, pos)
            start, pos = read_varuint(data, pos)
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
                    clock += length
                    continue
                for flag in (0x80, 0x40):  # origin, right origin
                    if info & flag:
                        item_client, pos = read_varuint(data, pos)
                        item_clock, pos = read_varuint(data, pos)
                        refs.add((item_client, item_clock))
                if not info & 0xC0:
                    reader.pos = pos
                    if reader.uint() == 1:
                        reader.string()
                    else:
                        parent = _id(reader)
                        refs.add(parent)
                        parents.add(parent)
                    if info & 0x20:
                        reader.string()
                    pos = reader.pos
                if ref == 7:
                    types.add((client, clock))
                if ref == 8 and data[pos] == 1 and data[pos + 1] == 119:
                    # the common case: one string value (every entry of this layout)
                    length = data[pos + 2]
                    if length < 0x80:
                        pos += 3 + length
                    else:
                        length, pos = read_varuint(data, pos + 2)
                        pos += length
                    clock += 1
                    continue
                reader.pos = pos
                clock += _content_length(reader, ref)
                pos = reader.pos
            if client > MAX_CLIENT or clock > MAX_CLOCK:
                raise InvalidUpdate(f"update struct {client}:{clock} is out of range")
            if count:
                first, last = ranges.get(client, (start, clock))
                ranges[client] = (min(first, start), max(last, clock))
    except IndexError:
        raise InvalidUpdate("truncated update") from None
    if pos > len(data):
        raise InvalidUpdate("update field runs past the end")
    for client, clock in refs:
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise InvalidUpdate(f"update refers to item {client}:{clock}, out of range")
    return UpdateShape(
        ranges=ranges, refs=frozenset(refs), parents=frozenset(parents), types=frozenset(types)
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
