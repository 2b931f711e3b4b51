"""The items of a Yrs v1 update, one by one, for the checks of signed mode (:mod:`.door`).

:func:`.updates.shape` checks an update whole and keeps only what the causal gate needs;
this walk runs after it, on bytes already known to be well-formed, and keeps for every
struct who wrote it (client and clock), where it goes (its parent and key, or the origin
it inherits them from) and what it holds (a string, a shared type, deleted content).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ..errors import InvalidUpdate
from .lib0 import read_varuint
from .updates import _content_length, _Reader

__all__ = ["DELETED", "GARBAGE", "MAP", "OTHER", "STRING", "Struct", "structs"]

GARBAGE: Final = 0
DELETED: Final = 1
STRING: Final = 2
MAP: Final = 3
OTHER: Final = 4
_MAP_TYPE: Final = 1

ItemId = tuple[int, int]


class Struct(NamedTuple):
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
    kind: int
    #: the string a :data:`STRING` item holds
    text: str | None


def structs(update: bytes) -> tuple[list[Struct], int]:
    """The structs of a well-formed v1 update, and where its delete set starts.

    Raises:
        InvalidUpdate: The bytes are not a well-formed update (callers check with
            :func:`.updates.shape` first).
    """
    reader = _Reader(update)
    data = update
    found: list[Struct] = []
    append = found.append
    try:
        clients, pos = read_varuint(data, 0)
        # as in updates.shape: the last client id read is compared before decoding again
        raw, raw_value = b"\x00", 0
        for _ in range(clients):
            count, pos = read_varuint(data, pos)
            begin = pos
            client, pos = read_varuint(data, pos)
            raw, raw_value = data[begin:pos], client
            clock, pos = read_varuint(data, pos)
            for _ in range(count):
                info = data[pos]
                pos += 1
                ref = info & 0x1F
                if ref == 0 or ref == 10:  # GC, skip
                    length, pos = read_varuint(data, pos)
                    if ref == 0:
                        append(Struct(client, clock, length, None, None, None, None, GARBAGE, None))
                    clock += length
                    continue
                origin = right = None
                if info & 0x80:
                    if data.startswith(raw, pos):
                        c = raw_value
                        pos += len(raw)
                    else:
                        c, pos = read_varuint(data, pos)
                    k = data[pos]
                    if k < 0x80:
                        pos += 1
                    else:
                        k, pos = read_varuint(data, pos)
                    origin = (c, k)
                if info & 0x40:
                    c, pos = read_varuint(data, pos)
                    k, pos = read_varuint(data, pos)
                    right = (c, k)
                parent: str | ItemId | None = None
                key: str | None = None
                if not info & 0xC0:
                    if data[pos] == 1:
                        reader.pos = pos + 1
                        parent = reader.string()
                        pos = reader.pos
                    elif data[pos] != 0:
                        raise InvalidUpdate("an item's parent is neither a name nor an id")
                    else:
                        if data.startswith(raw, pos + 1):
                            c = raw_value
                            pos += 1 + len(raw)
                        else:
                            c, pos = read_varuint(data, pos + 1)
                        k = data[pos]
                        if k < 0x80:
                            pos += 1
                        else:
                            k, pos = read_varuint(data, pos)
                        parent = (c, k)
                    if info & 0x20:
                        # strings read inline (every entry has a key and a text): the
                        # bytes were found well-formed UTF-8 already
                        size = data[pos]
                        if size < 0x80:
                            pos += 1
                        else:
                            size, pos = read_varuint(data, pos)
                        key = data[pos : pos + size].decode("utf-8")
                        pos += size
                if ref == 8 and data[pos] == 1 and data[pos + 1] == 119:
                    size = data[pos + 2]
                    if size < 0x80:
                        pos += 3
                    else:
                        size, pos = read_varuint(data, pos + 2)
                    text = data[pos : pos + size].decode("utf-8")
                    pos += size
                    append(Struct(client, clock, 1, origin, right, parent, key, STRING, text))
                    clock += 1
                    continue
                if ref == 7:
                    type_ref = data[pos]
                    kind = MAP if type_ref == _MAP_TYPE else OTHER
                else:
                    kind = DELETED if ref == 1 else OTHER
                reader.pos = pos
                length = _content_length(reader, ref)
                pos = reader.pos
                append(Struct(client, clock, length, origin, right, parent, key, kind, None))
                clock += length
    except IndexError:
        raise InvalidUpdate("truncated update") from None
    return found, pos
