"""Compiled constraints and their three-valued evaluation.

A constraint (JSON data, see :mod:`.constraints`) is compiled once per record change into
a tree of tuples ``(OP, ...)``, except that an ``exists`` atom, the most common node by
far, is the entity id itself (a ``str``); evaluation dispatches on ``OP`` through a table.
Truth values are Kleene's: ``TRUE = 2``, ``UNKNOWN = 1``, ``FALSE = 0``, so that ``and``
is ``min``, ``or`` is ``max`` and ``not`` is ``2 - x``.

Two evaluations exist. :meth:`Evaluator.kleene` gives the value of a formula when every
entity it mentions already has a status (entities outside a cycle). :meth:`Evaluator.bound`
gives a lower or upper bound of a formula whose ``exists`` atoms may point back into the
strongly connected component being solved; the existence engine iterates it to the
well-founded model. Atoms other than ``exists`` never depend on the component, so both
evaluations read them the same way.

Evaluation also reports the earliest *deadline*: the instant after which an observation it
relied on stops being fresh, so a replica knows when to re-evaluate with time alone.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from ..errors import InvalidConstraint, InvalidIdentifier, InvalidValue
from . import codec, names
from .constraints import ATTR_OPS, MAX_CONSTRAINT_DEPTH, MAX_CONSTRAINT_NODES, check_constraint
from .names import MAX_ID_LEN
from .records import ABSENT_ATTR, MergedView

__all__ = [
    "FALSE",
    "TRUE",
    "UNKNOWN",
    "Compiled",
    "Evaluator",
    "Node",
    "Tree",
    "compile_constraint",
    "stale_from",
]

FALSE: Final = 0
UNKNOWN: Final = 1
TRUE: Final = 2
INF: Final = math.inf

#: A compiled clause other than an ``exists`` atom: ``(OP, ...)``.
Tree = tuple[Any, ...]
#: A compiled formula: an entity id (its ``exists`` atom) or a :data:`Tree`.
Node = Tree | str


def stale_from(at: float, limit: float) -> float:
    """The first float ``t`` at which ``t - at <= limit`` no longer holds.

    Computed on floats exactly as freshness is tested (``t - at`` is monotonic in ``t``),
    so re-evaluating at the returned instant sees the observation stale and one float
    earlier sees it fresh: no timer can spin on it and none is late.
    """

    def stale(t: float) -> bool:
        return t - at > limit

    guess = at + limit
    if math.isinf(guess):
        return guess if stale(guess) else INF
    # Bracket the boundary: ``low`` fresh, ``high`` stale, widening by doubling steps.
    step = math.ulp(guess) or math.ulp(limit) or 5e-324
    low, high = guess, guess
    if stale(guess):
        low = guess - step
        while stale(low):
            step *= 2
            low = guess - step
    else:
        high = guess + step
        while not stale(high):
            step *= 2
            high = guess + step
            if math.isinf(high):
                return high
    # Bisect down to adjacent floats.
    while math.nextafter(low, INF) < high:
        middle = low + (high - low) / 2
        if middle <= low or middle >= high:
            middle = math.nextafter(low, INF)
        if stale(middle):
            high = middle
        else:
            low = middle
    return high


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
#: Entries kept by an evaluator's memo of stale instants before it starts over.
_STALE_MEMO: Final = 4096
_FLOAT_MAX: Final = sys.float_info.max


class _Unsure(Exception):
    """The fast compiler met something it does not vouch for; the checker decides."""


#: What a compilation collects besides the tree and the ``exists`` atoms: first the number
#: of clauses still allowed (MAX_CONSTRAINT_NODES, the root counted), then the rarer facts
#: as pairs: ("observed", ID), ("attr", ID), ("call", NAME), ("self", ""), ("not", "").
_Found = list[Any]


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
            except _Unsure:
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
    except _Unsure:
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
    """Check and compile in one walk, or raise :class:`_Unsure`.

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
                    raise _Unsure
                op = "all" if key == "all" else "any"  # the interned literal
                if not value:
                    return (op, ())
                found[0] -= len(value)
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise _Unsure
                return (op, _fast_list(value, depth + 1, exists, found))
            if key == "not":
                found[0] -= 1
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise _Unsure
                found.append(("not", ""))
                return ("not", _fast(value, depth + 1, exists, found))
        if "observed" in data:
            return _fast_observed(data, found)
        if "attr" in data:
            return _fast_attr(data, found)
        if "at_least" in data and len(data) == 2 and "of" in data:
            need, items = data["at_least"], data["of"]
            if type(need) is not int or need < 0 or type(items) is not list:
                raise _Unsure
            if items:
                found[0] -= len(items)
                if found[0] < 0 or depth >= MAX_CONSTRAINT_DEPTH:
                    raise _Unsure
            return ("at_least", need, _fast_list(items, depth + 1, exists, found))
        if "call" in data:
            try:
                check_constraint(data)
            except InvalidConstraint:
                raise _Unsure from None
            return _compile(data, exists, found)
        raise _Unsure
    if data is True:
        return _CONST_TRUE
    if data is False:
        return _CONST_FALSE
    raise _Unsure


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
    """Raise :class:`_Unsure` unless ``value`` is a valid entity id.

    (Printable ASCII of a valid length, tested inline by the callers, is one for sure.)
    """
    try:
        names.check_entity_id(value)
    except InvalidIdentifier:
        raise _Unsure from None


def _fast_observed(data: dict[str, Any], found: _Found) -> Node:
    if not data.keys() <= _OBSERVED_KEYS:
        raise _Unsure
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
        raise _Unsure
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
        raise _Unsure
    target = data["attr"]
    op = data.get("op")
    if type(target) is not list or len(target) != 2 or type(op) is not str or op not in ATTR_OPS:
        raise _Unsure
    entity, path = target
    if type(path) is not str or not path or "" in (parts := path.split(".")):
        raise _Unsure
    value = data.get("value")
    if op == "present":
        if "value" in data:
            raise _Unsure
    elif "value" not in data or (op == "in" and type(value) is not list):
        raise _Unsure
    elif type(value) not in _SCALARS:
        try:
            codec.check_value(value)
        except InvalidValue:
            raise _Unsure from None
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


class Evaluator:
    """Evaluates compiled formulas against a merged view, statuses, a time and predicates.

    Args:
        view: The merged records and observations.
        status: Current statuses as Kleene values (missing means ``FALSE``).
        replica_id: This replica (for ``"by": "self"``).
        predicates: Named predicates for ``call`` clauses.
    """

    def __init__(
        self,
        view: MergedView,
        status: dict[str, int],
        replica_id: str,
        predicates: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.view = view
        self.status = status
        self.replica_id = replica_id
        self.predicates = predicates
        self.now = 0.0
        #: earliest instant at which some evaluated observation is stale
        self.deadline = INF
        #: stale_from(at, limit) of recent observations (many rules watch the same ones)
        self._stale: dict[tuple[float, float], float] = {}
        self._atoms: dict[str, Callable[[Tree], int]] = {
            "const": self._const,
            "observed": self._observed,
            "attr": self._attr,
            "call": self._call,
        }

    # -- Kleene evaluation (no cycle inside) -----------------------------------------------

    def kleene(self, node: Node) -> int:
        """The three-valued value of ``node`` given the current statuses."""
        # ``exists`` atoms are most of what is evaluated: they are read inline.
        if isinstance(node, str):
            return self.status.get(node, FALSE)
        op = node[0]
        if op == "all":
            status = self.status
            value = TRUE
            for child in node[1]:
                child_value = status.get(child, FALSE) if type(child) is str else self.kleene(child)
                if child_value < value:
                    if child_value == FALSE:
                        return FALSE
                    value = child_value
            return value
        if op == "any":
            status = self.status
            value = FALSE
            for child in node[1]:
                child_value = status.get(child, FALSE) if type(child) is str else self.kleene(child)
                if child_value > value:
                    if child_value == TRUE:
                        return TRUE
                    value = child_value
            return value
        if op == "not":
            return TRUE - self.kleene(node[1])
        if op == "at_least":
            need = node[1]
            true = maybe = 0
            for child in node[2]:
                child_value = self.kleene(child)
                if child_value == TRUE:
                    true += 1
                    if true >= need:
                        return TRUE
                elif child_value == UNKNOWN:
                    maybe += 1
            return TRUE if true >= need else UNKNOWN if true + maybe >= need else FALSE
        return self._atoms[op](node)

    # -- bounds (inside a strongly connected component) ------------------------------------

    def bound(self, node: Node, lower: bool, inside: set[str], low: set[str], up: set[str]) -> bool:
        """Whether ``node`` is certainly (``lower``) or possibly (not ``lower``) true.

        ``exists`` atoms naming a member of ``inside`` read ``low`` when evaluated for a
        lower bound and ``up`` for an upper bound; ``not`` swaps the two.
        """
        if isinstance(node, str):
            if node in inside:
                return node in (low if lower else up)
            value = self.status.get(node, FALSE)
            return value == TRUE if lower else value != FALSE
        op = node[0]
        if op == "all":
            for child in node[1]:
                if not self.bound(child, lower, inside, low, up):
                    return False
            return True
        if op == "any":
            for child in node[1]:
                if self.bound(child, lower, inside, low, up):
                    return True
            return False
        if op == "not":
            return not self.bound(node[1], not lower, inside, low, up)
        if op == "at_least":
            need: int = node[1]
            count = 0
            for child in node[2]:
                if self.bound(child, lower, inside, low, up):
                    count += 1
                    if count >= need:
                        return True
            return count >= need
        value = self._atoms[op](node)
        return value == TRUE if lower else value != FALSE

    # -- atoms -----------------------------------------------------------------------------

    @staticmethod
    def _const(node: Tree) -> int:
        return int(node[1])

    def _observed(self, node: Tree) -> int:
        _, subject, within, by, quorum, want_ok = node
        by_observer = self.view.observations.get(subject)
        if not by_observer:
            return FALSE
        now = self.now
        count = 0
        soonest = INF
        if by == "self":
            candidates: Any = ((self.replica_id, by_observer.get(self.replica_id)),)
        elif by == "*":
            candidates = by_observer.items()
        else:
            candidates = ((name, by_observer.get(name)) for name in by)
        for _, winner in candidates:
            if winner is None:
                continue
            observation = winner.observation
            if observation.ok is not want_ok:
                continue
            limit = within
            if observation.ttl is not None and observation.ttl < limit:
                limit = observation.ttl
            if now - observation.at <= limit:
                count += 1
                key = (observation.at, limit)
                stale = self._stale.get(key)
                if stale is None:
                    if len(self._stale) >= _STALE_MEMO:
                        self._stale.clear()
                    stale = self._stale[key] = stale_from(observation.at, limit)
                if stale < soonest:
                    soonest = stale
        if soonest < self.deadline:
            self.deadline = soonest
        return TRUE if count >= quorum else FALSE

    def _attr(self, node: Tree) -> int:
        _, entity, path, op, expected = node
        record = self.view.records.get(entity)
        if record is None or record.retracted:
            return FALSE
        winner = record.attrs.get(path[0])
        if winner is None or winner.value is ABSENT_ATTR:
            return FALSE
        value = winner.value
        for part in path[1:]:
            if type(value) is not dict or part not in value:
                return FALSE
            value = value[part]
        return TRUE if _compare(op, value, expected) else FALSE

    def _call(self, node: Tree) -> int:
        _, name, args = node
        predicate = self.predicates.get(name)
        if predicate is None:
            return UNKNOWN
        try:
            result = predicate(**args)
        except Exception:
            return UNKNOWN
        if result is True:
            return TRUE
        if result is False:
            return FALSE
        return UNKNOWN


def _compare(op: str, value: Any, expected: Any) -> bool:
    try:
        return bool(_OPS[op](value, expected))
    except TypeError:
        return False


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0 holds, but True is not 1.
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return bool(a == b)


def _ordered(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (type(a) in numbers and type(b) in numbers) or (type(a) is str and type(b) is str)


_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": _same,
    "ne": lambda a, b: not _same(a, b),
    "lt": lambda a, b: _ordered(a, b) and a < b,
    "le": lambda a, b: _ordered(a, b) and a <= b,
    "gt": lambda a, b: _ordered(a, b) and a > b,
    "ge": lambda a, b: _ordered(a, b) and a >= b,
    "in": lambda a, b: any(_same(a, item) for item in b),
    "contains": lambda a, b: (
        (type(a) is str and type(b) is str and b in a)
        or (type(a) is list and any(_same(item, b) for item in a))
        or (type(a) is dict and type(b) is str and b in a)
    ),
    "present": lambda a, b: True,
}
