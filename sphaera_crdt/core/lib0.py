"""The few lib0 encodings the core reads itself: varuints and state vectors.

Yrs decodes updates natively, but a state vector handed to ``get_update`` is not
bounds-checked well (a random one can take half a second), so state vectors are parsed and
checked here before they reach Yrs.
"""

from __future__ import annotations

from typing import Final

from ..errors import InvalidUpdate

__all__ = ["decode_state_vector", "encode_state_vector", "read_varuint", "write_varuint"]

#: Yrs client ids are 53-bit (JavaScript-safe) integers; clocks are 32-bit.
MAX_CLIENT: Final = 2**53 - 1
MAX_CLOCK: Final = 2**32 - 1


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """Read one lib0 varuint at *pos*; return ``(value, next position)``."""
    if pos + 1 < len(data):  # one or two bytes (most counts and clocks) without the loop
        first = data[pos]
        if first < 0x80:
            return first, pos + 1
        second = data[pos + 1]
        if second < 0x80:
            return (first & 0x7F) | second << 7, pos + 2
    elif pos < len(data) and data[pos] < 0x80:
        return data[pos], pos + 1
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise InvalidUpdate("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidUpdate("varuint longer than 64 bits")


def write_varuint(value: int) -> bytes:
    """Encode a non-negative int as a lib0 varuint."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Parse a Yrs v1 state vector into ``{client: clock}``.

    Raises:
        InvalidUpdate: The bytes are not exactly one well-formed state vector.
    """
    if type(data) is not bytes:
        raise InvalidUpdate(f"state vector must be bytes, not {type(data).__name__}")
    count, pos = read_varuint(data, 0)
    if count * 2 > len(data) - pos:
        raise InvalidUpdate(f"state vector claims {count} clients in {len(data)} bytes")
    clocks: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_varuint(data, pos)
        clock, pos = read_varuint(data, pos)
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise InvalidUpdate(f"state vector entry {client}:{clock} is out of range")
        clocks[client] = clock
    if pos != len(data):
        raise InvalidUpdate(f"{len(data) - pos} trailing bytes after the state vector")
    return clocks


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    """Encode ``{client: clock}`` as a Yrs v1 state vector."""
    parts = [write_varuint(len(clocks))]
    for client, clock in sorted(clocks.items()):
        parts.append(write_varuint(client))
        parts.append(write_varuint(clock))
    return b"".join(parts)
