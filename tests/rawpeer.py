"""A raw pycrdt client writing entries straight into a replica's document.

Nothing checks what it writes: this is how a peer that does not run this library (or a
hostile one) can put undecodable, too deep or mistyped entries into the shared state.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Map

from sphaera_crdt import Replica
from sphaera_crdt.core.records import stamp_text

SEP = "\x1f"
#: The raw writer's container: its nonce ends with epoch 0, so stamps are absolute.
WRITER = f"mallory{SEP}raw.0"


def entry(stamp: int, payload: str) -> str:
    """The text of an entry stamped ``stamp`` (milliseconds) by the raw writer."""
    return stamp_text(stamp) + payload


def field(entity: str, name: str) -> str:
    """The key of a record field: ``k q o x``, or ``a<SEP><attr>``."""
    return f"e{SEP}{entity}{SEP}{name}"


def raw_write(replica: Replica, entries: dict[str, Any], writer: str = WRITER) -> None:
    """Write ``entries`` into ``writer``'s container of ``replica``'s document, as a raw
    pycrdt client would; ``replica`` itself does not look, its peers merge them from
    ``replica.delta()``."""
    doc = replica._doc.doc
    root = doc.get("w", type=Map)
    with doc.transaction():
        container = root.get(writer)
        if not isinstance(container, Map):
            root[writer] = Map(entries)
            return
        for key, value in entries.items():
            container[key] = value
