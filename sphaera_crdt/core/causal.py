"""Which received updates a replica may integrate now, and which must wait.

Yrs integrates an update whose causal predecessors are missing by keeping its items
pending inside the document, and a later retry loses map entries; an update whose items
name a parent that is not a shared type fails half-way through integration, after earlier
items went in. :class:`CausalGate` keeps both out of the document:

* every update is read whole first (:func:`.updates.shape`, which bounds every count by
  the bytes that hold it), so nothing malformed is held or reaches Yrs;
* an update whose predecessors (the clock ranges it starts from, see
  :func:`.updates.missing`) are not all held is kept aside, and released once they are;
  at most ``max_count`` updates and ``max_bytes`` bytes are kept, the oldest dropped first
  (their senders still have them and send them again with what they precede);
* an update whose parents are not known shared types is refused unless a small probe
  with one item under each such parent integrates into a copy of the document
  (:meth:`.DocumentAdapter.trial`); a parent that passes is remembered;
* an update that ends at or below our clocks and deletes nothing is a duplicate: there is
  nothing to do.

A released update that Yrs still refuses is dropped (:meth:`CausalGate.refused`), counted
and logged: the request that released it brought something valid and is not failed for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from ..errors import InvalidUpdate
from . import updates
from .lib0 import MAX_CLIENT, write_varuint
from .ydoc import DocumentAdapter

__all__ = ["MAX_HELD_BYTES", "MAX_HELD_UPDATES", "CausalGate", "HeldStats"]

#: Updates held for missing predecessors beyond this many are dropped, oldest first.
MAX_HELD_UPDATES: Final = 10_000
#: Held updates beyond this many bytes in all are dropped, oldest first (4x a node's
#: default largest request body).
MAX_HELD_BYTES: Final = 32 * 1024 * 1024
#: Why held updates were dropped: the count or the byte limit was reached, or Yrs refused
#: the update once its predecessors had arrived.
DROP_REASONS: Final = ("count", "bytes", "invalid")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldStats:
    """The updates a replica holds for missing predecessors, and those it dropped."""

    count: int
    bytes: int
    #: reason (one of :data:`DROP_REASONS`) -> updates dropped since the replica started
    dropped: Mapping[str, int]


class CausalGate:
    """The updates held for missing predecessors, and the parents known to be types.

    Args:
        doc: The document updates are integrated into.
        log: Where dropped held updates are reported.
        max_count: Updates held at most.
        max_bytes: Bytes of updates held at most.
    """

    def __init__(
        self,
        doc: DocumentAdapter,
        log: logging.Logger,
        *,
        max_count: int = MAX_HELD_UPDATES,
        max_bytes: int = MAX_HELD_BYTES,
    ) -> None:
        self._doc = doc
        self._log = log
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._held: dict[bytes, updates.UpdateShape] = {}
        self._held_bytes = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        #: ids of items known to be shared types (valid parents)
        self._types: set[tuple[int, int]] = set()
        #: whether the shapes it reads list every item (for signed mode's door, which
        #: then walks no update again)
        self.items = False

    @property
    def held(self) -> int:
        """Updates received whose predecessors have not arrived yet."""
        return len(self._held)

    def stats(self) -> HeldStats:
        """What is held now and what was dropped so far."""
        return HeldStats(
            count=len(self._held),
            bytes=self._held_bytes,
            dropped=MappingProxyType(dict(self._dropped)),
        )

    def admit(
        self, update: bytes, needs: updates.UpdateShape | None = None
    ) -> updates.UpdateShape | None:
        """The shape of ``update`` if it may be integrated now; ``None`` if it was held or
        is a duplicate (it deletes nothing and ends within our clocks).

        ``needs`` is the update's shape when the caller has already parsed it (a received
        update is parsed once).

        Raises:
            InvalidUpdate: The bytes are not a valid update, or Yrs would fail half-way
                through integrating them. Nothing is held then.
        """
        if needs is None:
            needs = updates.shape(update, items=self.items)
        clocks = self._doc.clocks()
        if (
            not needs.deletes
            and needs.ranges
            and all(clocks.get(client, 0) >= end for client, (_, end) in needs.ranges.items())
        ):
            return None
        if updates.missing(needs, clocks):
            self._hold(update, needs)
            return None
        self._check_parents(update, needs)
        return needs

    def _hold(self, update: bytes, needs: updates.UpdateShape) -> None:
        held = self._held
        if update in held:
            return
        if len(update) > self._max_bytes:
            self._drop("bytes", len(update))
            return
        if needs.items is not None:
            # held within a bound on bytes: the items, several times their bytes in
            # memory, are listed again when the update is released
            needs = replace(needs, items=None)
        held[update] = needs
        self._held_bytes += len(update)
        while len(held) > self._max_count or self._held_bytes > self._max_bytes:
            reason = "count" if len(held) > self._max_count else "bytes"
            oldest = next(iter(held))
            del held[oldest]
            self._held_bytes -= len(oldest)
            self._drop(reason, len(oldest))

    def _drop(self, reason: str, size: int) -> None:
        self._dropped[reason] += 1
        self._log.warning(
            "dropped a held update of %d bytes: the %s limit of held updates was reached",
            size,
            reason,
        )

    def integrated(self, needs: updates.UpdateShape) -> None:
        """An update of shape ``needs`` went in: the types it created are valid parents."""
        self._types |= needs.types

    def refused(self, update: bytes, exc: InvalidUpdate) -> None:
        """A released update could not be integrated after all: it is dropped."""
        self._dropped["invalid"] += 1
        self._log.warning("dropped a held update of %d bytes: %s", len(update), exc)

    def released(self) -> Iterator[tuple[bytes, updates.UpdateShape]]:
        """The held updates whose predecessors have arrived, one at a time; integrate each
        before asking for the next (it may release others), and report one that fails with
        :meth:`refused`. An update that would fail half-way through integration is dropped
        here."""
        held = self._held
        progress = bool(held)
        while progress:
            progress = False
            clocks = self._doc.clocks()
            for waiting, waiting_needs in list(held.items()):
                if not updates.missing(waiting_needs, clocks):
                    del held[waiting]
                    self._held_bytes -= len(waiting)
                    try:
                        self._check_parents(waiting, waiting_needs)
                    except InvalidUpdate as exc:
                        self.refused(waiting, exc)
                    else:
                        yield waiting, waiting_needs
                    progress = True
                    break

    def _check_parents(self, update: bytes, needs: updates.UpdateShape) -> None:
        """Refuse an update that would fail half-way through Yrs' integration.

        Yrs checks that an item's parent is a shared type only while integrating, after
        earlier items of the same update went in, so such an update would leave the
        document half-changed. Parents created as types by the update itself are fine; a
        parent among the update's own structs that is not a type is refused (Yrs collects
        the items under a collected parent, so its own encoder never writes that). Any
        other parent is checked once and remembered: a probe holding one small item under
        each, :data:`PROBE_PARENTS` parents at a time, is applied to a copy of the
        document (:meth:`.DocumentAdapter.trial`). The probe, not the update, so that
        checking costs Yrs no more than a few bytes per parent whatever the update holds.
        """
        unknown = needs.parents - needs.types - self._types
        if not unknown:
            return
        for client, clock in unknown:
            inside = needs.ranges.get(client)
            if inside is not None and inside[0] <= clock < inside[1]:
                raise InvalidUpdate(f"an item's parent {client}:{clock} is not a shared type")
        clocks = self._doc.clocks()
        prober = MAX_CLIENT
        while prober in clocks:
            prober -= 1
        ordered = sorted(unknown)
        for start in range(0, len(ordered), PROBE_PARENTS):
            self._doc.trial(_probe(ordered[start : start + PROBE_PARENTS], prober))
        self._types |= unknown


#: Parents checked per probe (see :meth:`CausalGate._check_parents`).
PROBE_PARENTS: Final = 256


def _probe(parents: list[tuple[int, int]], client: int) -> bytes:
    """A v1 update by ``client`` (from clock 0) holding a null under key ``p`` in each of
    ``parents``: Yrs integrates it only if every parent is a shared type (or deleted)."""
    items = [
        b"\x28\x00" + write_varuint(parent) + write_varuint(clock) + b"\x01p\x01\x7e"
        for parent, clock in parents
    ]
    head = b"\x01" + write_varuint(len(items)) + write_varuint(client) + b"\x00"
    return head + b"".join(items) + b"\x00"
