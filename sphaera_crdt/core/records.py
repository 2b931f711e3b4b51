"""The merged view: last-writer-wins records built from every writer's entries.

Entry keys (inside a writer's container, parts joined by the unit separator ``\\x1f``)::

    e <entity> k            kind
    e <entity> q            requires (constraint data)
    e <entity> o            owner (the declaring replica)
    e <entity> x            retracted (bool); present once the entity was declared
    e <entity> a <attr>     one top-level attribute
    s <subject>             this writer's observation of <subject>: [ok, value, at, ttl]

Entry text is ``<stamp offset in hex><marker><payload>``, the offset counted from the
epoch in the writer's nonce (which keeps stamps short); marker ``:`` for a JSON payload,
``!`` for a removed attribute (no payload). For every logical key the entry with the greatest
``(stamp, replica id, nonce)`` wins; stamps are hybrid logical clocks, so a write made after
another was seen always wins, and concurrent writes resolve the same way everywhere.

Everything here tolerates garbage: entries that arrive malformed from a peer are counted
and ignored, never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Final

from . import codec
from .views import Observation

__all__ = [
    "ABSENT_ATTR",
    "EntityRecord",
    "Entry",
    "MergedView",
    "Order",
    "make_entry",
    "nonce_epoch",
    "removed_entry",
    "restamp",
]

SEP: Final = "\x1f"
#: Sort key of an entry: (stamp, replica id, nonce).
Order = tuple[int, str, str]
#: What an applied entry changed: (entity, None, field) for a record, where field is
#: ``k q o x`` or ``a`` for any attribute; (subject, observer, "") for an observation.
Changed = tuple[str, str | None, str]
#: The decoded value of a removed attribute.
ABSENT_ATTR: Final = object()

FIELDS: Final = frozenset({"k", "q", "o", "x"})
_ENTRY_HEAD: Final = re.compile(r"(-?[0-9a-f]{1,16})([:!])")


#: A local write, encoded and decoded at once: (key, text, stamp, value, payload).
Entry = tuple[str, str, int, Any, str]


def make_entry(
    key: str, stamp: int, epoch: int, value: Any, where: str, *, checked: bool = False
) -> Entry:
    """Encode one entry; raises :class:`~sphaera_crdt.errors.InvalidValue` for bad values."""
    payload = (codec.dumps_checked if checked else codec.dumps)(value, where)
    return key, f"{stamp - epoch:x}:{payload}", stamp, value, payload


def removed_entry(key: str, stamp: int, epoch: int) -> Entry:
    """An entry that removes an attribute."""
    return key, f"{stamp - epoch:x}!", stamp, ABSENT_ATTR, ""


def nonce_epoch(nonce: str) -> int | None:
    """The stamp epoch a writer's nonce carries (``<random>.<epoch in hex>``)."""
    _, sep, epoch = nonce.rpartition(".")
    if not sep:
        return 0
    try:
        return int(epoch, 16) if epoch and len(epoch) <= 16 else None
    except ValueError:
        return None


def parse_entry(text: str, epoch: int = 0) -> tuple[int, Any, str] | None:
    """Return ``(stamp, value, payload)`` or ``None`` if the text is malformed."""
    head = _ENTRY_HEAD.match(text)
    if head is None:
        return None
    stamp = epoch + int(head.group(1), 16)
    marker = head.group(2)
    payload = text[head.end() :]
    if marker == "!":
        return (stamp, ABSENT_ATTR, "") if not payload else None
    try:
        return stamp, codec.loads(payload), payload
    except (ValueError, RecursionError):
        return None


def restamp(text: str, epoch: int, new_epoch: int) -> tuple[int, str] | None:
    """``(stamp, text)`` of an entry re-encoded against another epoch (``None`` if malformed)."""
    head = _ENTRY_HEAD.match(text)
    if head is None:
        return None
    stamp = epoch + int(head.group(1), 16)
    return stamp, f"{stamp - new_epoch:x}{text[head.end(1) :]}"


def fresh_copy(value: Any, payload: str) -> Any:
    """A copy of a decoded value that callers may mutate freely."""
    if type(value) in (dict, list):
        return codec.loads(payload)
    return value


@dataclass(slots=True)
class Winner:
    order: Order
    value: Any
    payload: str

    def copy_value(self) -> Any:
        return fresh_copy(self.value, self.payload)


@dataclass(slots=True)
class ObservationWinner:
    order: Order
    observation: Observation
    payload: str

    def copy(self) -> Observation:
        """The observation with a value callers may mutate freely."""
        value = self.observation.value
        if type(value) not in (dict, list):
            return self.observation
        return replace(self.observation, value=codec.loads(self.payload)[1])


@dataclass(slots=True)
class EntityRecord:
    """The merged record of one entity; fields and attrs hold the winning entries."""

    id: str
    fields: dict[str, Winner]
    attrs: dict[str, Winner]

    @property
    def declared(self) -> bool:
        return "x" in self.fields

    @property
    def retracted(self) -> bool:
        winner = self.fields.get("x")
        return winner is None or winner.value is not False

    def field(self, name: str) -> Any:
        winner = self.fields.get(name)
        return None if winner is None else winner.value

    @property
    def kind(self) -> str | None:
        kind = self.field("k")
        return kind if type(kind) is str else None

    @property
    def owner(self) -> str | None:
        owner = self.field("o")
        return owner if type(owner) is str else None

    def attrs_copy(self) -> dict[str, Any]:
        return {
            name: winner.copy_value()
            for name, winner in self.attrs.items()
            if winner.value is not ABSENT_ATTR
        }

    def requires_copy(self) -> Any:
        winner = self.fields.get("q")
        return None if winner is None else winner.copy_value()


class MergedView:
    """Entity records and observations merged from every writer, last writer wins."""

    def __init__(self) -> None:
        self.records: dict[str, EntityRecord] = {}
        #: subject -> observer replica id -> winning observation
        self.observations: dict[str, dict[str, ObservationWinner]] = {}
        self.max_stamp = 0
        self.malformed = 0
        #: logical keys held (entity fields, attributes, observations): the live data size
        self.size = 0

    def apply(self, replica_id: str, nonce: str, epoch: int, key: str, text: str) -> Changed | None:
        """Merge one entry written by ``replica_id``.

        Returns what changed (see :data:`Changed`), or ``None`` when nothing did.
        """
        parsed = parse_entry(text, epoch)
        if parsed is None:
            self.malformed += 1
            return None
        return self.apply_parsed(replica_id, nonce, key, *parsed)

    def apply_parsed(
        self,
        replica_id: str,
        nonce: str,
        key: str,
        stamp: int,
        value: Any,
        payload: str,
    ) -> Changed | None:
        """:meth:`apply` for an entry already decoded (this replica's own writes)."""
        if stamp > self.max_stamp:
            self.max_stamp = stamp
        order = (stamp, replica_id, nonce)
        kind, _, rest = key.partition(SEP)
        if kind == "s":
            return self._apply_observation(replica_id, rest, order, value, payload)
        if kind == "e":
            entity, _, name = rest.partition(SEP)
            if entity:
                return self._apply_field(entity, name, Winner(order, value, payload))
        self.malformed += 1
        return None

    def _apply_field(self, entity: str, name: str, winner: Winner) -> Changed | None:
        if name in FIELDS:
            table_name = "fields"
        elif name.startswith("a" + SEP) and len(name) > 2:
            table_name = "attrs"
            name = name[2:]
        else:
            self.malformed += 1
            return None
        if winner.value is ABSENT_ATTR and table_name == "fields":
            self.malformed += 1
            return None
        record = self.records.get(entity)
        if record is None:
            record = self.records[entity] = EntityRecord(entity, {}, {})
        table = record.fields if table_name == "fields" else record.attrs
        current = table.get(name)
        if current is None:
            self.size += 1
        elif current.order >= winner.order:
            return None
        table[name] = winner
        return entity, None, "a" if table_name == "attrs" else name

    def _apply_observation(
        self, observer: str, subject: str, order: Order, value: Any, payload: str
    ) -> Changed | None:
        if type(value) is Observation:  # a local write hands over the checked observation
            observation = value
        else:
            try:
                ok, data, at, ttl = value
                observation = Observation(
                    observer=observer, subject=subject, ok=ok, value=data, at=at, ttl=ttl
                )
            except (TypeError, ValueError):
                self.malformed += 1
                return None
        by_observer = self.observations.setdefault(subject, {})
        current = by_observer.get(observer)
        if current is None:
            self.size += 1
        elif current.order >= order:
            return None
        by_observer[observer] = ObservationWinner(order, observation, payload)
        return subject, observer, ""
