"""Which received updates a replica may integrate now, and which must wait.

Yrs integrates an update whose causal predecessors are missing by keeping its items
pending inside the document, and a later retry loses map entries; an update whose items
name a parent that is not a shared type fails half-way through integration, after earlier
items went in. :class:`CausalGate` keeps both out of the document:

* an update whose predecessors (the clock ranges it starts from, see
  :func:`.updates.missing`) are not all held is kept aside, and released once they are;
  at most :data:`MAX_HELD_UPDATES` are kept, the oldest dropped first (their senders still
  have them and send them again with what they precede);
* an update whose parents are not known shared types is tried first on a copy of the
  document (:meth:`.DocumentAdapter.trial`), once per parent;
* an update that ends at or below our clocks and deletes nothing is a duplicate: there is
  nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final

import pycrdt

from ..errors import InvalidUpdate
from . import updates
from .lib0 import decode_state_vector
from .ydoc import DocumentAdapter, PanicException

__all__ = ["MAX_HELD_UPDATES", "CausalGate"]

#: Updates held for missing predecessors beyond this many are dropped, oldest first.
MAX_HELD_UPDATES: Final = 10_000


class CausalGate:
    """The updates held for missing predecessors, and the parents known to be types.

    Args:
        doc: The document updates are integrated into.
        log: Where dropped held updates are reported.
    """

    def __init__(self, doc: DocumentAdapter, log: logging.Logger) -> None:
        self._doc = doc
        self._log = log
        self._held: dict[bytes, updates.UpdateShape] = {}
        #: ids of items known to be shared types (valid parents)
        self._types: set[tuple[int, int]] = set()

    @property
    def held(self) -> int:
        """Updates received whose predecessors have not arrived yet."""
        return len(self._held)

    def duplicate(self, update: bytes) -> bool:
        """Whether ``update`` deletes nothing and ends within our clocks (nothing to do)."""
        if not update.endswith(b"\x00"):
            return False  # it carries deletions
        try:
            ends = decode_state_vector(pycrdt.get_state(update))
        except (ValueError, RuntimeError, InvalidUpdate, PanicException):
            return False  # not for this fast path to judge: the full check will refuse it
        clocks = self._doc.clocks()
        return bool(ends) and all(clocks.get(client, 0) >= end for client, end in ends.items())

    def admit(self, update: bytes) -> updates.UpdateShape | None:
        """The shape of ``update`` if it may be integrated now; ``None`` if it was held.

        Raises:
            InvalidUpdate: The bytes are not a valid update, or Yrs would fail half-way
                through integrating them. Nothing is held then.
        """
        needs = updates.shape(update)
        if updates.missing(needs, self._doc.clocks()):
            held = self._held
            if update not in held:
                held[update] = needs
                while len(held) > MAX_HELD_UPDATES:
                    del held[next(iter(held))]
            return None
        self._check_parents(update, needs)
        return needs

    def integrated(self, needs: updates.UpdateShape) -> None:
        """An update of shape ``needs`` went in: the types it created are valid parents."""
        self._types |= needs.types

    def released(self) -> Iterator[tuple[bytes, updates.UpdateShape]]:
        """The held updates whose predecessors have arrived, one at a time; integrate each
        before asking for the next (it may release others). An update that would fail
        half-way through integration is dropped with a warning."""
        held = self._held
        progress = bool(held)
        while progress:
            progress = False
            clocks = self._doc.clocks()
            for waiting, waiting_needs in list(held.items()):
                if not updates.missing(waiting_needs, clocks):
                    del held[waiting]
                    try:
                        self._check_parents(waiting, waiting_needs)
                    except InvalidUpdate as exc:
                        self._log.warning("dropped a held update: %s", exc)
                    else:
                        yield waiting, waiting_needs
                    progress = True
                    break

    def _check_parents(self, update: bytes, needs: updates.UpdateShape) -> None:
        """Refuse an update that would fail half-way through Yrs' integration.

        Yrs checks that an item's parent is a shared type only while integrating, after
        earlier items of the same update went in, so such an update would leave the
        document half-changed. Parents created by the update itself are fine; any other is
        checked once, by applying the update to a copy of the document, and remembered.
        """
        unknown = needs.parents - needs.types - self._types
        if not unknown:
            return
        self._doc.trial(update)
        self._types |= unknown
