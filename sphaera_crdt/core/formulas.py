"""Compiled constraints and their three-valued evaluation.

A constraint is compiled (:mod:`.compiler`) into a tree of tuples ``(OP, ...)`` whose
``exists`` atoms are bare entity ids; evaluation dispatches on ``OP`` through a table.
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

An observation dated more than ``max_skew`` seconds after ``now`` is not fresh evidence
(its observer's clock runs ahead, or it was forged): it does not count, and its deadline
is the instant it comes within ``max_skew`` of the reader's clock, when it may start to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from .records import ABSENT_ATTR, MergedView, Unreadable

__all__ = [
    "DEFAULT_MAX_SKEW",
    "FALSE",
    "TRUE",
    "UNKNOWN",
    "Evaluator",
    "Node",
    "Tree",
    "stale_from",
    "usable_from",
]

#: A compiled clause other than an ``exists`` atom: ``(OP, ...)`` (built by :mod:`.compiler`).
Tree = tuple[Any, ...]
#: A compiled formula: an entity id (its ``exists`` atom) or a :data:`Tree`.
Node = Tree | str

FALSE: Final = 0
UNKNOWN: Final = 1
TRUE: Final = 2
INF: Final = math.inf
#: Seconds an observation may be dated ahead of the reader's clock and still count.
DEFAULT_MAX_SKEW: Final = 5.0

#: Entries kept by an evaluator's memo of stale instants before it starts over.
_STALE_MEMO: Final = 4096


def stale_from(at: float, limit: float) -> float:
    """The first float ``t`` at which ``t - at <= limit`` no longer holds.

    Computed on floats exactly as freshness is tested (``t - at`` is monotonic in ``t``),
    so re-evaluating at the returned instant sees the observation stale and one float
    earlier sees it fresh: no timer can spin on it and none is late.
    """
    return _first(lambda t: t - at > limit, at + limit)


def usable_from(at: float, max_skew: float) -> float:
    """The first float ``t`` at which ``at - t > max_skew`` no longer holds: the instant an
    observation dated ``at`` stops being too far in the future (tested as the evaluation
    tests it, like :func:`stale_from`)."""
    return _first(lambda t: at - t <= max_skew, at - max_skew)


def _first(after: Callable[[float], bool], guess: float) -> float:
    """The first float at which the monotonic predicate ``after`` holds, searched near
    ``guess`` (``inf`` if none)."""
    if math.isinf(guess):
        return guess if after(guess) else INF
    # Bracket the boundary: ``low`` before, ``high`` after, widening by doubling steps.
    step = math.ulp(guess) or 5e-324
    low, high = guess, guess
    if after(guess):
        low = guess - step
        while after(low):
            step *= 2
            low = guess - step
    else:
        high = guess + step
        while not after(high):
            step *= 2
            high = guess + step
            if math.isinf(high):
                return high
    # Bisect down to adjacent floats.
    while math.nextafter(low, INF) < high:
        middle = low + (high - low) / 2
        if middle <= low or middle >= high:
            middle = math.nextafter(low, INF)
        if after(middle):
            high = middle
        else:
            low = middle
    return high


class Evaluator:
    """Evaluates compiled formulas against a merged view, statuses, a time and predicates.

    Args:
        view: The merged records and observations.
        status: Current statuses as Kleene values (missing means ``FALSE``).
        replica_id: This replica (for ``"by": "self"``).
        predicates: Named predicates for ``call`` clauses.
        max_skew: Seconds an observation may be dated ahead of ``now`` and still count.
    """

    def __init__(
        self,
        view: MergedView,
        status: dict[str, int],
        replica_id: str,
        predicates: Mapping[str, Callable[..., Any]],
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        self.view = view
        self.status = status
        self.replica_id = replica_id
        self.predicates = predicates
        self.max_skew = max_skew
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
        count = unreadable = 0
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
            if observation is None:  # could not be read: it might have counted
                unreadable += 1
                continue
            if observation.ok is not want_ok:
                continue
            if observation.at - now > self.max_skew:
                # Dated in the future: no evidence yet, but it may become some.
                usable = usable_from(observation.at, self.max_skew)
                if usable < soonest:
                    soonest = usable
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
        if count >= quorum:
            return TRUE
        return UNKNOWN if count + unreadable >= quorum else FALSE

    def _attr(self, node: Tree) -> int:
        _, entity, path, op, expected = node
        record = self.view.records.get(entity)
        if record is None or record.retracted:
            return FALSE
        winner = record.attrs.get(path[0])
        if winner is None or winner.value is ABSENT_ATTR:
            return FALSE
        value = winner.value
        if type(value) is Unreadable or not record.live:
            return UNKNOWN  # an unreadable value, or a retracted flag that cannot be read
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
    """JSON equality at every depth: ``1 == 1.0`` holds, but ``true`` is not ``1``, also
    inside lists and objects (Python's ``==`` says ``[True] == [1]``). Values nest at
    most :data:`~.codec.MAX_DEPTH` deep, so the recursion is bounded."""
    kind = type(a)
    other = type(b)
    if kind is list:
        return other is list and len(a) == len(b) and all(map(_same, a, b))
    if kind is dict:
        return (
            other is dict
            and a.keys() == b.keys()
            and all(_same(value, b[key]) for key, value in a.items())
        )
    if kind is bool or other is bool or other is list or other is dict:
        return kind is other and a == b
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
