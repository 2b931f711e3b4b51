"""Checking and compiling constraints into formula trees, in one walk.

A constraint (JSON data, see :mod:`.constraints`) is compiled once per record change into
a tree of tuples ``(OP, ...)``, except that an ``exists`` atom, the most common node by
far, is the entity id itself (a ``str``). :func:`compile_constraint` checks and compiles
the usual shapes in one walk; whatever it does not vouch for goes through
:func:`~.constraints.check_constraint`, which refuses (naming the bad part) or accepts
exactly as for a declaration, and then through a plain compiler. :func:`compile_rule`
keeps the result on the record's winning entry, so each version of a rule is compiled once
by whichever engine needs it first. The first derivation after a restore compiles every
rule, so the walk is written for speed: the top-level list is walked inline, exists atoms
are checked inline, and a compiled rule is a named tuple.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..errors import InvalidConstraint, InvalidIdentifier, InvalidValue, UnsureCompile
from . import codec, names
from .constraints import ATTR_OPS, MAX_CONSTRAINT_DEPTH, MAX_CONSTRAINT_NODES, check_constraint
from .formulas import FALSE, TRUE, Node
from .names import MAX_ID_LEN
from .records import Unreadable

if TYPE_CHECKING:
    from .records import EntityRecord, Winner

__all__ = [
    "Compiled",
    "Malformed",
    "Rule",
    "compile_constraint",
    "compile_rule",
    "rule_of",
]


class Malformed(str):
    """The message of a ``requires`` that did not compile or could not be read (or of a
    retracted flag that could not be read); its entity is undetermined."""

    __slots__ = ()


class Compiled(NamedTuple):
    """A checked constraint ready to evaluate, with what it depends on.

    A named tuple rather than a dataclass: a full derivation builds one per entity.
    """

    node: Node
    #: the entities its exists atoms name, each once, in order of appearance
    exists: tuple[str, ...]
    observed: frozenset[str]
    attrs: frozenset[str]
    calls: bool
    uses_self: bool
    #: the constraint data it was compiled from (its identity tells a rule unchanged)
    data: Any
    #: whether a ``not`` appears in it
    negates: bool


_EMPTY: Final[frozenset[str]] = frozenset()
_CONST_TRUE: Final = ("const", TRUE)
_CONST_FALSE: Final = ("const", FALSE)
_OBSERVED_KEYS: Final = frozenset({"observed", "within", "by", "quorum", "ok"})
_ATTR_KEYS: Final = frozenset({"attr", "op", "value"})
_SCALARS: Final = frozenset({type(None), bool, int, str})
_new_compiled: Final = tuple.__new__
_FLOAT_MAX: Final = sys.float_info.max


#: What a compilation collects besides the tree and the ``exists`` atoms: first the number
#: of clauses still allowed (MAX_CONSTRAINT_NODES, the root counted), then the rarer facts
#: as pairs: ("observed", ID), ("attr", ID), ("call", NAME), ("self", ""), ("not", "").
_Found = list[Any]


#: An entity's rule: compiled, malformed, or ``None`` (nothing to evaluate: no
#: requirements, or an entity that is undeclared or retracted).
Rule = Compiled | Malformed | None


def rule_of(record: EntityRecord | None) -> Rule:
    """The rule an entity's record states.

    An undeclared or retracted entity has none: it is absent whatever its ``requires``
    says, and its old rule must not count as an edge of the dependency graph (a retracted
    member of a cycle leaves the cycle). A retracted flag that cannot be read leaves the
    entity undetermined.
    """
    if record is None:
        return None
    flag = record.fields.get("x")
    if flag is None or flag.value is True:
        return None
    if flag.value is not False:
        reason = flag.value.reason if type(flag.value) is Unreadable else "not a bool"
        return Malformed(f"unreadable retracted flag: {reason}")
    winner = record.fields.get("q")
    if winner is None or winner.value is None:
        return None
    return compile_rule(winner)


def compile_rule(winner: Winner) -> Compiled | Malformed:
    """The rule of a ``requires`` field's winning entry, compiled once per record version.

    The compiled rule (or the message of a malformed or unreadable one) is kept on the
    winner, so every engine over the view, a full derivation included, compiles each
    version of a rule once; a new winner (the record changed) starts without one.
    """
    rule: Compiled | Malformed | None = winner.rule
    if rule is None:
        value = winner.value
        if type(value) is Unreadable:
            rule = Malformed(f"unreadable requires: {value.reason}")
        else:
            try:
                rule = compile_constraint(value)
            except InvalidConstraint as exc:
                rule = Malformed(f"malformed requires: {exc}")
        winner.rule = rule
    return rule


def compile_constraint(data: Any) -> Compiled:
    """Check and compile constraint data.

    One walk checks and compiles the usual shapes; anything it does not vouch for (every
    malformed constraint among it) goes through :func:`check_constraint`, which accepts or
    refuses exactly as it does for a declaration and names the bad part, then through the
    plain compiler.

    Raises:
        InvalidConstraint: The data is not a constraint.
    """
    if type(data) is dict:
        # The usual rules first, inline: an exists atom, or an all, any or at_least whose
        # items are mostly exists atoms (the rest go through _fast).
        need: Any = 0
        if len(data) == 1:
            ((key, value),) = data.items()
        elif len(data) == 2 and "at_least" in data and "of" in data:
            key, value, need = "at_least", data["of"], data["at_least"]
        else:
            key = value = None
        if key == "exists":
            if (
                type(value) is str
                and value.isascii()
                and value.isprintable()
                and 0 < len(value) <= MAX_ID_LEN
            ):
                single: Compiled = _new_compiled(
                    Compiled, (value, (value,), _EMPTY, _EMPTY, False, False, data, False)
                )
                return single
        elif (
            (key == "all" or key == "any" or key == "at_least")
            and type(value) is list
            and type(need) is int
            and need >= 0
            and len(value) < MAX_CONSTRAINT_NODES
        ):
            targets: list[str] = []
            items: list[Node] | None = None  # set once an item is not an exists atom
            found: _Found | None = None
            try:
                for item in value:
                    if type(item) is dict and len(item) == 1:
                        target = item.get("exists")
                        if (
                            type(target) is str
                            and target.isascii()
                            and target.isprintable()
                            and 0 < len(target) <= MAX_ID_LEN
                        ):
                            targets.append(target)
                            if items is not None:
                                items.append(target)
                            continue
                    if items is None:
                        items = list(targets)
                        found = [MAX_CONSTRAINT_NODES - 1 - len(value)]
                    items.append(_fast(item, 1, targets, found))  # type: ignore[arg-type]
            except UnsureCompile:
                pass
            else:
                if items is not None:
                    children = tuple(items)
                    node: Node = (
                        ("all", children)
                        if key == "all"
                        else ("any", children)
                        if key == "any"
                        else ("at_least", need, children)
                    )
                    return _finish(node, targets, found, data)  # type: ignore[arg-type]
                atoms = tuple(targets)
                count = len(atoms)
                flat: Compiled = _new_compiled(
                    Compiled,
                    (
                        ("all", atoms)
                        if key == "all"
                        else ("any", atoms)
                        if key == "any"
                        else ("at_least", need, atoms),
                        atoms
                        if count < 2 or (count == 2 and atoms[0] != atoms[1])
                        else _distinct(atoms),
                        _EMPTY,
                        _EMPTY,
                        False,
                        False,
                        data,
                        False,
                    ),
                )
                return flat
    exists: list[str] = []
    found = [MAX_CONSTRAINT_NODES - 1]
    try:
        tree = _fast(data, 0, exists, found)
    except UnsureCompile:
        check_constraint(data)
        exists = []
        found = [MAX_CONSTRAINT_NODES - 1]
        tree = _compile(data, exists, found)
    return _finish(tree, exists, found, data)


def _finish(node: Node, exists: list[str], found: _Found, data: Any) -> Compiled:
    """The :class:`Compiled` of a walk that collected ``exists`` and ``found``."""
    observed: list[str] = []
    attrs: list[str] = []
    calls = uses_self = negates = False
    for index in range(1, len(found)):
        kind, name = found[index]
        if kind == "observed":
            observed.append(name)
        elif kind == "attr":
            attrs.append(name)
        elif kind == "call":
            calls = True
        elif kind == "self":
            uses_self = True
        else:
            negates = True
    compiled: Compiled = _new_compiled(
        Compiled,
        (
            node,
            _distinct(tuple(exists)),
            frozenset(observed) if observed else _EMPTY,
            frozenset(attrs) if attrs else _EMPTY,
            calls,
            uses_self,
            data,
            negates,
        ),
    )
    return compiled


def _fast(data: Any, depth: int, exists: list[str], found: _Found) -> Node:
    """Check and compile in one walk, or raise :class:`UnsureCompile`.

    It passes only what :func:`check_constraint` passes (with the same depth and size
    limits), so a constraint it compiles is one the checker accepts.
    """
    if type(data) is dict:
        if len(data) == 1:
            ((key, value),) = data.items()
            if key == "exists":
                if not (
                    type(value) is str
                    and value.isascii()
                    and value.isprintable()
                    and 0 < len(value) <= MAX_ID_LEN
                ):
                    _entity_id(value)
                target: str = value
                exists.append(target)
                return target
            if key == "all" or key == "any":
                if type(value) is not list:
                    raise UnsureCompile
                op = "all" if key == "all" else "any"  # the interned literal
                if not value:
                    return (op, ())
                found[0] -= len(value)
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise UnsureCompile
                return (op, _fast_list(value, depth + 1, exists, found))
            if key == "not":
                found[0] -= 1
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise UnsureCompile
                found.append(("not", ""))
                return ("not", _fast(value, depth + 1, exists, found))
        if "observed" in data:
            return _fast_observed(data, found)
        if "attr" in data:
            return _fast_attr(data, found)
        if "at_least" in data and len(data) == 2 and "of" in data:
            need, items = data["at_least"], data["of"]
            if type(need) is not int or need < 0 or type(items) is not list:
                raise UnsureCompile
            if items:
                found[0] -= len(items)
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise UnsureCompile
            return ("at_least", need, _fast_list(items, depth + 1, exists, found))
        if "call" in data:
            try:
                check_constraint(data)
            except InvalidConstraint:
                raise UnsureCompile from None
            return _compile(data, exists, found)
        raise UnsureCompile
    if data is True:
        return _CONST_TRUE
    if data is False:
        return _CONST_FALSE
    raise UnsureCompile


def _fast_list(items: list[Any], depth: int, exists: list[str], found: _Found) -> tuple[Node, ...]:
    """:func:`_fast` over the items of a list, with ``exists`` atoms (the usual items) inline."""
    nodes: list[Node] = []
    for item in items:
        if type(item) is dict and len(item) == 1 and "exists" in item:
            target = item["exists"]
            if not (
                type(target) is str
                and target.isascii()
                and target.isprintable()
                and 0 < len(target) <= MAX_ID_LEN
            ):
                _entity_id(target)
            exists.append(target)
            nodes.append(target)
        else:
            nodes.append(_fast(item, depth, exists, found))
    return tuple(nodes)


def _distinct(targets: tuple[str, ...]) -> tuple[str, ...]:
    """``targets`` without repeats (a rule usually names an entity once)."""
    count = len(targets)
    if count < 2 or (count == 2 and targets[0] != targets[1]) or len(set(targets)) == count:
        return targets
    return tuple(dict.fromkeys(targets))


def _entity_id(value: Any) -> None:
    """Raise :class:`UnsureCompile` unless ``value`` is a valid entity id.

    (Printable ASCII of a valid length, tested inline by the callers, is one for sure.)
    """
    try:
        names.check_entity_id(value)
    except InvalidIdentifier:
        raise UnsureCompile from None


def _fast_observed(data: dict[str, Any], found: _Found) -> Node:
    if not data.keys() <= _OBSERVED_KEYS:
        raise UnsureCompile
    subject = data["observed"]
    within: Any = data.get("within")
    by = data.get("by", "*")
    quorum = data.get("quorum", 1)
    ok = data.get("ok", True)
    if (
        type(within) not in (int, float)
        or not 0 <= within <= _FLOAT_MAX
        or (by != "*" and by != "self")
        or type(quorum) is not int
        or quorum < 1
        or type(ok) is not bool
    ):
        raise UnsureCompile
    if not (
        type(subject) is str
        and subject.isascii()
        and subject.isprintable()
        and 0 < len(subject) <= MAX_ID_LEN
    ):
        _entity_id(subject)
    found.append(("observed", subject))
    if by == "self":
        found.append(("self", ""))
    return ("observed", subject, float(within), by, quorum, ok)


def _fast_attr(data: dict[str, Any], found: _Found) -> Node:
    if not data.keys() <= _ATTR_KEYS:
        raise UnsureCompile
    target = data["attr"]
    op = data.get("op")
    if type(target) is not list or len(target) != 2 or type(op) is not str or op not in ATTR_OPS:
        raise UnsureCompile
    entity, path = target
    if type(path) is not str or not path or "" in (parts := path.split(".")):
        raise UnsureCompile
    value = data.get("value")
    if op == "present":
        if "value" in data:
            raise UnsureCompile
    elif "value" not in data or (op == "in" and type(value) is not list):
        raise UnsureCompile
    elif type(value) not in _SCALARS:
        try:
            codec.check_value(value)
        except InvalidValue:
            raise UnsureCompile from None
    _entity_id(entity)
    found.append(("attr", entity))
    return ("attr", entity, tuple(parts), op, value)


def _compile(data: Any, exists: list[str], found: _Found) -> Node:
    """Compile data that :func:`check_constraint` accepted."""
    if data is True or data is False:
        return _CONST_TRUE if data else _CONST_FALSE
    if "exists" in data:
        entity: str = data["exists"]
        exists.append(entity)
        return entity
    if "all" in data:
        return ("all", tuple(_compile(item, exists, found) for item in data["all"]))
    if "any" in data:
        return ("any", tuple(_compile(item, exists, found) for item in data["any"]))
    if "not" in data:
        found.append(("not", ""))
        return ("not", _compile(data["not"], exists, found))
    if "at_least" in data:
        children = tuple(_compile(item, exists, found) for item in data["of"])
        return ("at_least", data["at_least"], children)
    if "observed" in data:
        found.append(("observed", data["observed"]))
        by = data.get("by", "*")
        if by == "self":
            found.append(("self", ""))
        by_set = by if by in ("*", "self") else frozenset(by)
        return (
            "observed",
            data["observed"],
            float(data["within"]),
            by_set,
            data.get("quorum", 1),
            data.get("ok", True),
        )
    if "attr" in data:
        entity, path = data["attr"]
        found.append(("attr", entity))
        return ("attr", entity, tuple(path.split(".")), data["op"], data.get("value"))
    if "call" in data:
        found.append(("call", data["call"]))
        return ("call", data["call"], data.get("args", {}))
    raise InvalidConstraint(f"cannot compile {data!r}")  # unreachable after check_constraint
