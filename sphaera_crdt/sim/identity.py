"""Seeded identities for simulated replicas: Yrs client ids and container nonces.

A replica's Yrs client id is written into every update it makes (as a varuint: a 53-bit
id takes 7 or 8 bytes depending on its value) and decides concurrent map conflicts, so
random ids would make byte counts and outcomes differ between two runs of one seed.
:class:`Replica` takes ``client_id`` and ``nonce`` for its main document, but two pieces
of the core draw their own randomness: the document adapter's root-writer document
(``pycrdt.Doc()`` with no client id) and :meth:`Replica.restore`, which takes neither a
client id nor a nonce. :func:`IdentitySource.documents` therefore swaps, for the duration
of a ``with`` block, the ``Doc`` and ``secrets`` names that
:mod:`sphaera_crdt.core.ydoc` uses for a seeded factory and a seeded token source. The
simulator builds and restores every replica inside that block and nowhere else.

This is a seam the simulator should not need: a ``random.Random`` (or an id factory)
accepted by ``Replica`` and ``Replica.restore`` would remove it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any, Final
from unittest import mock

import pycrdt

from ..core import ydoc

__all__ = ["IdentitySource"]

#: Yrs client ids are 53-bit (JavaScript-safe) integers.
CLIENT_ID_BITS: Final = 53


class _SeededTokens:
    """Stands in for :mod:`secrets` inside :mod:`sphaera_crdt.core.ydoc`."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def token_hex(self, nbytes: int = 32) -> str:
        return self._rng.randbytes(nbytes).hex()


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

    @contextlib.contextmanager
    def documents(self) -> Iterator[None]:
        """Within the block, documents the core creates get seeded client ids and nonces.

        Raises:
            RuntimeError: The core no longer creates documents the way this relies on.
        """
        if not hasattr(ydoc, "Doc") or not hasattr(ydoc, "secrets"):
            raise RuntimeError("sphaera_crdt.core.ydoc no longer names Doc and secrets")
        original = pycrdt.Doc

        def seeded_doc(*args: Any, client_id: int | None = None, **kwargs: Any) -> Any:
            if client_id is None:
                client_id = self.client_id()
            return original(*args, client_id=client_id, **kwargs)

        with (
            mock.patch.object(ydoc, "Doc", seeded_doc),
            mock.patch.object(ydoc, "secrets", _SeededTokens(self._rng)),
        ):
            yield
