"""The merged view: last-writer-wins records built from every writer's entries.

Entry keys (inside a writer's container, parts joined by the unit separator ``\\x1f``)::

    e <entity> k            kind
    e <entity> q            requires (constraint data)
    e <entity> o            owner (the declaring replica)
    e <entity> x            retracted (bool); present once the entity was declared
    e <entity> p            probe (an object or null; written only by a record that has
                            or had one, see :mod:`.probes`)
    e <entity> a <attr>     one top-level attribute
    s <subject>             this writer's observation of <subject>: [ok, value, at, ttl]

Entry text is ``<stamp><payload>``. The stamp is the entry's hybrid logical clock as an
offset from the epoch in the writer's nonce (which keeps it short), written in base 64 with
the digits :data:`DIGITS`, most significant first, after a ``~`` if negative. No digit can
begin a payload, so no separator is needed. The payload is one of::

    !           a removed attribute
    t f n       true, false, null
    '<text>     a string, verbatim
    <json>      any other value, as compact JSON text

For every logical key the entry with the greatest ``(stamp, replica id, nonce)`` wins;
stamps are hybrid logical clocks, so a write made after another was seen always wins, and
concurrent writes resolve the same way everywhere.

Texts of the first layout, ``<offset in hex>:<json>`` and ``<offset in hex>!``, are read as
well: they begin with a hex digit or ``-``, which no stamp of this layout does.

Everything here tolerates garbage, and none of it is read as absent. An entry whose stamp
cannot be read cannot be ordered: it is counted and ignored. An entry whose stamp reads but
whose payload does not (undecodable, empty, nested deeper than the value limit, a number
beyond the value limits, or a field of the wrong type) is *unreadable*: it is counted and
takes part in last-writer-wins like any other, so a newer unreadable version replaces an
older readable one, and readers see an :class:`Unreadable` value that names the problem
(an unreadable ``requires`` makes its entity undetermined, see :mod:`.compiler`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Final

from ..errors import InvalidValue
from . import codec
from .views import Observation

__all__ = [
    "ABSENT_ATTR",
    "EntityRecord",
    "Entry",
    "MergedView",
    "Order",
    "Unreadable",
    "attr_payload",
    "decode_payload",
    "encode_payload",
    "in_this_layout",
    "make_entry",
    "nonce_epoch",
    "observation_payload",
    "removed_entry",
    "restamp",
    "stamp_text",
]

SEP: Final = "\x1f"
#: Sort key of an entry: (stamp, replica id, nonce).
Order = tuple[int, str, str]
#: What an applied entry changed: (entity, None, field) for a record, where field is
#: ``k q o x`` or ``a`` for any attribute; (subject, observer, "") for an observation.
Changed = tuple[str, str | None, str]
#: The decoded value of a removed attribute.
ABSENT_ATTR: Final = object()


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The value of an entry whose payload could not be read, with the reason."""

    reason: str


FIELDS: Final = frozenset({"k", "q", "o", "x", "p"})
#: What each field is called in reasons and explanations.
FIELD_NAMES: Final = {"k": "kind", "q": "requires", "o": "owner", "x": "retracted", "p": "probe"}
_ANY: Final = frozenset({type(None), bool, int, float, str, list, dict})
#: The types each field may have (``requires`` is checked when its rule is compiled).
_FIELD_TYPES: Final = {
    "k": frozenset({str, type(None)}),
    "q": _ANY,
    "o": frozenset({str, type(None)}),
    "x": frozenset({bool}),
    "p": frozenset({dict, type(None)}),
}
_FIELD_EXPECTS: Final = {
    "k": "a string or null",
    "o": "a string or null",
    "x": "true or false",
    "p": "an object or null",
}

#: The 64 digits of a stamp, in order of value: none is a hex digit, ``-`` or ``~``, and
#: none can begin a payload.
DIGITS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZghijklmopqrsuvwxyz#$%&()*+,./;<=>?@^_|"
#: Marks a negative stamp offset (an entry older than its writer's epoch).
NEGATIVE: Final = "~"
REMOVED: Final = "!"
STRING: Final = "'"
_LITERALS: Final[dict[str, Any]] = {"t": True, "f": False, "n": None}
_DIGIT_VALUE: Final = {digit: value for value, digit in enumerate(DIGITS)}
#: The most digits a stamp has (more would exceed any stamp offset written).
_MAX_DIGITS: Final = 11
#: The first layout's head: an offset in hex, then ``:`` (JSON follows) or ``!``.
_HEX_HEAD: Final = re.compile(r"(-?[0-9a-f]{1,16})([:!])")


#: A local write, encoded and decoded at once: (key, text, stamp, value, payload).
Entry = tuple[str, str, int, Any, str]


#: Every offset below 4096 in the fewest digits, and in exactly two.
_SHORT: Final = [DIGITS[value] for value in range(64)] + [
    DIGITS[high] + DIGITS[low] for high in range(1, 64) for low in range(64)
]
_PAIR: Final = [high + low for high in DIGITS for low in DIGITS]


def stamp_text(offset: int) -> str:
    """A stamp offset in this layout's digits, most significant first, no leading zero."""
    if offset < 0:
        return NEGATIVE + stamp_text(-offset)
    if offset < 4096:
        return _SHORT[offset]
    if offset < 1 << 24:
        return _SHORT[offset >> 12] + _PAIR[offset & 4095]
    if offset < 1 << 36:  # about two years of milliseconds
        return _SHORT[offset >> 24] + _PAIR[offset >> 12 & 4095] + _PAIR[offset & 4095]
    text = _PAIR[offset & 4095]
    offset >>= 12
    while offset >= 4096:
        text = _PAIR[offset & 4095] + text
        offset >>= 12
    return _SHORT[offset] + text


def encode_payload(value: object, where: str = "value") -> str:
    """The payload of a value (see the module's docstring).

    Raises:
        InvalidValue: The value would not round-trip with its exact type.
    """
    kind = type(value)
    if kind is str:
        assert isinstance(value, str)
        if not value.isascii():
            codec.check_text(value, where)
        return STRING + value
    if kind is bool:
        return "t" if value else "f"
    if value is None:
        return "n"
    if kind is int:
        assert isinstance(value, int)
        return codec.int_text(value, where)
    if kind is float:
        assert isinstance(value, float)
        return codec.float_text(value, where)
    return codec.dumps(value, where)


def attr_payload(key: str, value: object) -> str:
    """:func:`encode_payload` of attribute ``key``'s value; an error names the attribute
    (the name is only built when there is one)."""
    try:
        return encode_payload(value)
    except InvalidValue:
        encode_payload(value, f"attrs.{key}")  # raises again, naming the attribute
        raise


def decode_payload(payload: str) -> Any:
    """The value of a payload; raises ``ValueError`` if it is malformed."""
    if payload[:1] == STRING:
        return payload[1:]
    literal = _LITERALS.get(payload, payload)
    if literal is not payload:
        return literal
    return codec.loads(payload)


def observation_payload(ok: bool, value: Any, at: float, ttl: float | None) -> str:
    """The payload of an observation: JSON text ``[ok, value, at, ttl]``.

    ``ok``, ``at`` and ``ttl`` are those of a valid :class:`Observation` (a bool and finite
    numbers of bounded size, whose ``repr`` is their JSON text).

    Raises:
        InvalidValue: ``value`` would not round-trip with its exact type.
    """
    return (
        f"[{'true' if ok else 'false'},{codec.json_text(value)},{at!r},"
        f"{'null' if ttl is None else repr(ttl)}]"
    )


def make_entry(key: str, stamp: int, epoch: int, value: Any, where: str) -> Entry:
    """Encode one entry; raises :class:`~sphaera_crdt.errors.InvalidValue` for bad values.

    The entry holds a copy of a list or dict ``value``, never the caller's object.
    """
    payload = encode_payload(value, where)
    return key, stamp_text(stamp - epoch) + payload, stamp, fresh_copy(value, payload), payload


def removed_entry(key: str, stamp: int, epoch: int) -> Entry:
    """An entry that removes an attribute."""
    return key, stamp_text(stamp - epoch) + REMOVED, stamp, ABSENT_ATTR, ""


def nonce_epoch(nonce: str) -> int | None:
    """The stamp epoch a writer's nonce carries (``<random>.<epoch in hex>``)."""
    _, sep, epoch = nonce.rpartition(".")
    if not sep:
        return 0
    try:
        return int(epoch, 16) if epoch and len(epoch) <= 16 else None
    except ValueError:
        return None


def in_this_layout(text: str) -> bool:
    """Whether an entry's text begins with a stamp of this layout (not the first one's)."""
    head = text[:1]
    return head in _DIGIT_VALUE or head == NEGATIVE


def split_entry(text: str, epoch: int = 0) -> tuple[int, str] | None:
    """``(stamp, payload)`` of an entry in either layout; ``None`` if it has no stamp.

    A removed attribute's payload is ``"!"``.
    """
    # Read digit by digit rather than by regular expression: this runs once per entry
    # merged or restored, and the digits of a stamp are few.
    value = _DIGIT_VALUE
    negative = text[:1] == NEGATIVE
    start = 1 if negative else 0
    offset = 0
    end = start
    limit = min(len(text), start + _MAX_DIGITS)
    while end < limit:
        digit = value.get(text[end])
        if digit is None:
            break
        offset = offset * 64 + digit
        end += 1
    if end > start:
        return epoch + (-offset if negative else offset), text[end:]
    head = _HEX_HEAD.match(text)
    if head is None:
        return None
    stamp = epoch + int(head.group(1), 16)
    if head.group(2) == REMOVED:
        return stamp, REMOVED + text[head.end() :]
    return stamp, text[head.end() :]


def parse_entry(
    text: str, epoch: int = 0, max_depth: int = codec.MAX_DEPTH
) -> tuple[int, Any, str] | None:
    """Return ``(stamp, value, payload)``, or ``None`` if the text has no stamp.

    A payload that cannot be read (empty, undecodable, nested deeper than ``max_depth``,
    beyond the value limits) gives an :class:`Unreadable` value.
    """
    split = split_entry(text, epoch)
    if split is None:
        return None
    stamp, payload = split
    return stamp, *decode_entry_payload(payload, max_depth)


def decode_entry_payload(payload: str, max_depth: int = codec.MAX_DEPTH) -> tuple[Any, str]:
    """``(value, payload)`` of an entry's payload, as :func:`parse_entry` reads it (a removed
    attribute's ``"!"`` gives :data:`ABSENT_ATTR` and an empty payload)."""
    if payload == REMOVED:
        return ABSENT_ATTR, ""
    if not payload:
        return Unreadable("empty payload"), payload
    try:
        if payload[:1] == STRING:
            return payload[1:], payload
        literal = _LITERALS.get(payload, payload)
        if literal is not payload:
            return literal, payload
        return codec.loads(payload, max_depth), payload
    except RecursionError:
        return Unreadable(f"nested deeper than {max_depth} levels"), payload
    except codec.BeyondLimits as exc:
        return Unreadable(str(exc)), payload
    except ValueError as exc:
        return Unreadable(_short(f"undecodable payload: {exc}")), payload


_OBSERVATION_DEPTH: Final = codec.MAX_DEPTH + 1
_JSON_TYPES: Final[dict[type, str]] = {
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _describe(value: Any) -> str:
    """A short description of a value a peer wrote, for a reason."""
    if value is None or type(value) is bool:
        return "null" if value is None else "true" if value else "false"
    return f"{_JSON_TYPES.get(type(value), 'unreadable')} {_short(repr(value))}"


def _short(text: str) -> str:
    """``text`` cut to a length fit for a reason (a peer chooses what it holds)."""
    return text if len(text) <= 200 else text[:197] + "..."


def restamp(text: str, epoch: int, new_epoch: int) -> tuple[int, str] | None:
    """``(stamp, text)`` of an entry re-encoded against another epoch (``None`` if malformed)."""
    split = split_entry(text, epoch)
    if split is None:
        return None
    stamp, payload = split
    return stamp, stamp_text(stamp - new_epoch) + payload


def fresh_copy(value: Any, payload: str) -> Any:
    """A copy of ``value`` (whose payload is ``payload``) that nobody else holds."""
    if type(value) in (dict, list):
        return codec.loads(payload)
    return value


@dataclass(slots=True)
class Winner:
    order: Order
    value: Any
    payload: str
    #: a ``requires`` field's compiled rule, set by the first engine that needs it (see
    #: :func:`.compiler.compile_rule`): a rule is compiled once per record version
    rule: Any = None

    def copy_value(self) -> Any:
        return fresh_copy(self.value, self.payload)


@dataclass(slots=True)
class ObservationWinner:
    order: Order
    #: ``None`` when the entry could not be read (``unreadable`` says why)
    observation: Observation | None
    payload: str
    unreadable: str = ""

    def copy(self) -> Observation | None:
        """The observation with a value callers may mutate freely."""
        observation = self.observation
        if observation is None or type(observation.value) not in (dict, list):
            return observation
        return replace(observation, value=codec.loads(self.payload, codec.MAX_DEPTH + 1)[1])


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
        """Undeclared or retracted (an unreadable flag is neither: see :attr:`live`)."""
        winner = self.fields.get("x")
        return winner is None or winner.value is True

    @property
    def live(self) -> bool:
        """Declared and not retracted."""
        winner = self.fields.get("x")
        return winner is not None and winner.value is False

    def unreadable(self) -> dict[str, str]:
        """The fields and attributes whose winning entry could not be read, with why."""
        found = {
            FIELD_NAMES[name]: winner.value.reason
            for name, winner in self.fields.items()
            if type(winner.value) is Unreadable
        }
        for name, winner in self.attrs.items():
            if type(winner.value) is Unreadable:
                found[f"attrs.{name}"] = winner.value.reason
        return found

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
            if winner.value is not ABSENT_ATTR and type(winner.value) is not Unreadable
        }

    def probe_copy(self) -> dict[str, Any] | None:
        """The probe object as written (``None`` if none or unreadable; see :mod:`.probes`)."""
        winner = self.fields.get("p")
        if winner is None or type(winner.value) is not dict:
            return None
        value: dict[str, Any] = winner.copy_value()
        return value

    def requires_copy(self) -> Any:
        winner = self.fields.get("q")
        if winner is None or type(winner.value) is Unreadable:
            return None
        return winner.copy_value()


class MergedView:
    """Entity records and observations merged from every writer, last writer wins."""

    def __init__(self) -> None:
        self.records: dict[str, EntityRecord] = {}
        #: subject -> observer replica id -> winning observation
        self.observations: dict[str, dict[str, ObservationWinner]] = {}
        #: observer replica id -> the subjects it has a winning observation of
        self.observed_by: dict[str, set[str]] = {}
        self.max_stamp = 0
        #: entries ignored because they cannot be ordered (no stamp, a foreign key)
        self.malformed = 0
        #: entries merged whose payload could not be read (see :class:`Unreadable`)
        self.unreadable = 0
        #: logical keys held (entity fields, attributes, observations): the live data size
        self.size = 0

    def apply(self, replica_id: str, nonce: str, epoch: int, key: str, text: str) -> Changed | None:
        """Merge one entry written by ``replica_id``.

        Returns what changed (see :data:`Changed`), or ``None`` when nothing did.
        """
        split = split_entry(text, epoch)
        if split is None:
            self.malformed += 1
            return None
        stamp, payload = split
        if payload[:1] == STRING:  # the commonest payload, read without a call
            return self.apply_parsed(replica_id, nonce, key, stamp, payload[1:], payload)
        return self.apply_split(replica_id, nonce, key, stamp, payload)

    def apply_split(
        self, replica_id: str, nonce: str, key: str, stamp: int, payload: str
    ) -> Changed | None:
        """:meth:`apply` for an entry already split into its stamp and payload."""
        # An observation's payload wraps its value in a list: one level more.
        value, payload = decode_entry_payload(
            payload, _OBSERVATION_DEPTH if key[:1] == "s" else codec.MAX_DEPTH
        )
        return self.apply_parsed(replica_id, nonce, key, stamp, value, payload)

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
            value = winner.value
            if type(value) not in _FIELD_TYPES[name]:
                # Only a peer or a raw client writes these: seen, and never read as absent.
                if value is ABSENT_ATTR:
                    winner.value = Unreadable(f"{FIELD_NAMES[name]} is marked removed")
                elif type(value) is not Unreadable:
                    winner.value = Unreadable(
                        f"{FIELD_NAMES[name]} is {_describe(value)}, not {_FIELD_EXPECTS[name]}"
                    )
                self.unreadable += 1
            record = self.records.get(entity)
            if record is None:
                record = self.records[entity] = EntityRecord(entity, {}, {})
            current = record.fields.get(name)
            if current is None:
                self.size += 1
            elif current.order >= winner.order:
                return None
            record.fields[name] = winner
            return entity, None, name
        if name.startswith("a" + SEP) and len(name) > 2:
            if type(winner.value) is Unreadable:
                self.unreadable += 1
            return (entity, None, "a") if self.apply_attr(entity, name[2:], winner) else None
        self.malformed += 1
        return None

    def apply_attr(self, entity: str, name: str, winner: Winner) -> bool:
        """Merge one attribute entry whose stamp is already counted; whether it won."""
        record = self.records.get(entity)
        if record is None:
            record = self.records[entity] = EntityRecord(entity, {}, {})
        attrs = record.attrs
        current = attrs.get(name)
        if current is None:
            self.size += 1
        elif current.order >= winner.order:
            return False
        attrs[name] = winner
        return True

    def _apply_observation(
        self, observer: str, subject: str, order: Order, value: Any, payload: str
    ) -> Changed | None:
        observation: Observation | None = None
        problem = ""
        if type(value) is Unreadable:
            problem = value.reason
        elif type(value) is not list or len(value) != 4:
            problem = f"an observation is [ok, value, at, ttl], not {_describe(value)}"
        else:
            ok, data, at, ttl = value
            try:
                observation = Observation(
                    observer=observer, subject=subject, ok=ok, value=data, at=at, ttl=ttl
                )
            except ValueError as exc:
                problem = _short(str(exc))
        if observation is None:
            # Counted, and it still replaces its writer's older observation: an unreadable
            # newer one must not leave the older one standing as evidence.
            self.unreadable += 1
        if self.apply_observation(subject, order, observation, payload, problem, observer):
            return subject, observer, ""
        return None

    def apply_observation(
        self,
        subject: str,
        order: Order,
        observation: Observation | None,
        payload: str,
        unreadable: str = "",
        observer: str = "",
    ) -> bool:
        """Merge one observation whose stamp is already counted; whether it won.

        ``observation`` is ``None`` for an unreadable one (then ``unreadable`` says why and
        ``observer`` names its writer).
        """
        by_observer = self.observations.get(subject)
        if by_observer is None:
            by_observer = self.observations[subject] = {}
        if observation is not None:
            observer = observation.observer
        current = by_observer.get(observer)
        if current is None:
            self.size += 1
            subjects = self.observed_by.get(observer)
            if subjects is None:
                subjects = self.observed_by[observer] = set()
            subjects.add(subject)
        elif current.order >= order:
            return False
        by_observer[observer] = ObservationWinner(order, observation, payload, unreadable)
        return True

    def remove_observation(self, subject: str, observer: str) -> bool:
        """Take ``observer``'s observation of ``subject`` out of the view; whether one was.

        For an observation its writer left behind when it rotated its container (see
        :mod:`.pruning`): the writer holds no entry for it any more.
        """
        by_observer = self.observations.get(subject)
        if by_observer is None or by_observer.pop(observer, None) is None:
            return False
        if not by_observer:
            del self.observations[subject]
        subjects = self.observed_by.get(observer)
        if subjects is not None:
            subjects.discard(subject)
            if not subjects:
                del self.observed_by[observer]
        self.size -= 1
        return True
