"""Hostile update and sync bytes shared by the tests of held updates and decode bounds.

* :func:`deep_json` and :func:`broken_delete_set`: updates that depend on a missing
  predecessor but that Yrs would refuse to decode, which must be refused before they are
  held; with the valid update that would release them.
* :func:`non_type_parent`: an update that depends on a missing predecessor and that Yrs
  can only refuse once that predecessor is there (its parent is the predecessor's string
  entry), with the predecessor.
* :data:`UPDATE_BOMBS` / :data:`SYNC_BOMBS`: small bodies whose counts and lengths claim far
  more than they hold, the kind that made Yrs reserve hundreds of megabytes.
"""

from __future__ import annotations

from typing import Any, Final

from pycrdt import Doc, Map

from sphaera_crdt import Replica
from sphaera_crdt.core.lib0 import write_varuint

#: A client id no replica of the tests draws.
STRANGER: Final = 424242


def _sync(kind: int, payload: bytes, *, claimed: int | None = None) -> bytes:
    length = len(payload) if claimed is None else claimed
    return bytes((0, kind)) + write_varuint(length) + payload


def five_strings(client: int) -> bytes:
    """An update by ``client`` of five map entries (clocks 0-4) in root ``m``."""
    doc: Doc[Any] = Doc(client_id=client)
    root = doc.get("m", type=Map)
    for index in range(5):
        with doc.transaction():
            root[f"k{index}"] = "v"
    return doc.get_update()


def deep_json(client: int = STRANGER) -> tuple[bytes, bytes]:
    """``(predecessor, held)``: ``held`` continues ``client``'s clock after
    ``predecessor`` with an embedded JSON value nested deeper than Yrs' JSON parser
    allows (Yrs refuses it only when it decodes it)."""
    deep = ("[" * 200 + "]" * 200).encode()
    # one client, one struct, at clock 5: an embed (ref 5) in root "m" under key "x"
    held = (
        b"\x01\x01"
        + write_varuint(client)
        + b"\x05\x25\x01\x01m\x01x"
        + write_varuint(len(deep))
        + deep
        + b"\x00"
    )
    return five_strings(client), held


def non_type_parent(client: int = STRANGER) -> tuple[bytes, bytes]:
    """``(predecessor, held)``: ``held`` continues ``client``'s clock after
    ``predecessor`` with an item whose parent is one of ``predecessor``'s string entries,
    not a shared type (Yrs refuses it only while integrating)."""
    held = (
        b"\x01\x01"
        + write_varuint(client)
        + b"\x05\x28\x00"
        + write_varuint(client)
        + b"\x00\x01x\x01\x7e\x00"
    )
    return five_strings(client), held


def broken_delete_set() -> tuple[bytes, bytes, Replica]:
    """``(predecessor, held, source)``: ``held`` follows ``predecessor`` but its delete set
    claims five ranges it does not hold."""
    source = Replica("src", clock=lambda: 1000.0)
    predecessor = source.delta()
    state = source.state_vector()
    source.declare("db", attrs={"v": 1})
    held = source.delta(state)
    assert held.endswith(b"\x00")
    return predecessor, held[:-1] + b"\x01" + write_varuint(source.client_id) + b"\x05", source


#: (name, body of ``POST /v1/updates``)
UPDATE_BOMBS: Final = [
    ("2**28 clients in 6 bytes", bytes.fromhex("808080800100")),
    ("2**35 structs", b"\x01" + b"\xff\xff\xff\xff\x7f" + b"\x07\x00" + b"\x00"),
    ("2**28 delete set clients", b"\x00" + b"\x80\x80\x80\x80\x01"),
    ("2**28 deleted ranges", b"\x00\x01\x07" + b"\x80\x80\x80\x80\x01"),
    (
        "2**28 values in one item",
        b"\x01\x01\x07\x00\x28\x01\x01m\x01x" + b"\x80\x80\x80\x80\x01" + b"\x00",
    ),
    (
        "2**28 array items in a value",
        b"\x01\x01\x07\x00\x28\x01\x01m\x01x\x01\x75" + b"\x80\x80\x80\x80\x01" + b"\x00",
    ),
    ("a string of 2**60 bytes", b"\x01\x01\x07\x00\x28\x01" + b"\x80" * 8 + b"\x10m"),
]

#: (name, body of ``POST /v1/sync``)
SYNC_BOMBS: Final = [
    *[(f"UPDATE: {name}", _sync(2, body)) for name, body in UPDATE_BOMBS],
    *[(f"STEP2: {name}", _sync(1, body)) for name, body in UPDATE_BOMBS[:3]],
    (
        "STEP1 claiming 2**32 clients",
        _sync(0, b"\x80\x80\x80\x80\x10" + b"\x01\x01"),
    ),
    ("UPDATE of 2**62 bytes", _sync(2, b"\x00\x00", claimed=2**62)),
    ("STEP1 of 2**62 bytes", _sync(0, b"\x00", claimed=2**62)),
    (
        "STEP1, then an UPDATE bomb",
        _sync(0, b"\x00") + _sync(2, bytes.fromhex("808080800100")),
    ),
    (
        "two UPDATE bombs (combined before merging)",
        _sync(2, bytes.fromhex("808080800100")) + _sync(2, b"\x00" + b"\x80\x80\x80\x80\x01"),
    ),
]
