"""Seeded identities for simulated replicas: Yrs client ids and container nonces.

A replica's Yrs client id is written into every update it makes (as a varuint: a 53-bit
id takes 7 or 8 bytes depending on its value) and decides concurrent map conflicts, so
random ids would make byte counts and outcomes differ between two runs of one seed. An
:class:`IdentitySource` is the :class:`~sphaera_crdt.core.ydoc.Identities` every simulated
replica is built and restored with (``Replica(..., identities=...)``,
``Replica.restore(..., identities=...)``): its document's client id, its root writer's
and its container nonce all come from one seeded generator.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["IdentitySource"]

#: Yrs client ids are 53-bit (JavaScript-safe) integers.
CLIENT_ID_BITS: Final = 53


class IdentitySource:
    """Unique client ids and nonces drawn from one seeded generator.

    Args:
        rng: The generator; two sources seeded alike hand out the same identities.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[int] = set()

    def client_id(self) -> int:
        """A 53-bit client id no replica of this simulation has had."""
        while True:
            candidate = self._rng.getrandbits(CLIENT_ID_BITS)
            if candidate and candidate not in self._used:
                self._used.add(candidate)
                return candidate

    def nonce(self, epoch: int) -> str:
        """A container nonce for a replica whose stamps count from ``epoch``."""
        return f"{self._rng.randbytes(6).hex()}.{epoch:x}"
