"""The constraint language: JSON data that says when an entity exists.

::

    C := true | false
       | {"exists": ID}
       | {"all": [C, ...]} | {"any": [C, ...]} | {"not": C}
       | {"at_least": K, "of": [C, ...]}
       | {"observed": ID, "within": SECONDS, "by": "*" | "self" | [REPLICA_ID, ...],
          "quorum": K, "ok": true}
       | {"attr": [ID, "dotted.path"], "op": OP, "value": V}
       | {"call": NAME, "args": {...}}

The builders below produce exactly this data, and :func:`check_constraint` accepts the
same data from anywhere (a file, an HTTP body, another replica). Validation points at the
bad part with a path such as ``requires.all[1].observed``. A builder's result is a copy:
lists and dicts handed to it may be mutated afterwards without changing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import InvalidConstraint, InvalidValue
from . import codec, names

__all__ = [
    "ATTR_OPS",
    "MAX_CONSTRAINT_NODES",
    "all_of",
    "any_of",
    "at_least",
    "attr",
    "call",
    "check_constraint",
    "exists",
    "not_",
    "observed",
]

#: Operators of ``attr`` clauses.
ATTR_OPS: Final = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "present"})
#: A constraint with more clauses than this is refused (it is replicated and evaluated often).
MAX_CONSTRAINT_NODES: Final = 10_000
MAX_CONSTRAINT_DEPTH: Final = 64

Constraint = bool | dict[str, Any]


def exists(entity_id: str) -> dict[str, Any]:
    """Holds while ``entity_id`` exists on this replica."""
    return _built({"exists": entity_id}, "exists()")


def all_of(*clauses: Constraint) -> dict[str, Any]:
    """Holds while every clause holds (``true`` for no clauses)."""
    return _built({"all": list(clauses)}, "all_of()")


def any_of(*clauses: Constraint) -> dict[str, Any]:
    """Holds while some clause holds (``false`` for no clauses)."""
    return _built({"any": list(clauses)}, "any_of()")


def not_(clause: Constraint) -> dict[str, Any]:
    """Holds while the clause does not."""
    return _built({"not": clause}, "not_()")


def at_least(k: int, *clauses: Constraint) -> dict[str, Any]:
    """Holds while at least ``k`` of the clauses hold."""
    data = {"at_least": k, "of": list(clauses)}
    return _built(data, "at_least()")


def observed(
    entity_id: str,
    within: float,
    *,
    by: str | list[str] = "*",
    quorum: int = 1,
    ok: bool = True,
) -> dict[str, Any]:
    """Holds while at least ``quorum`` distinct observers (of ``by``) have a fresh observation
    of ``entity_id`` that says ``ok``: made at most ``within`` seconds ago and within its ttl.
    ``by`` is ``"*"`` (anyone), ``"self"`` (this replica) or a list of replica ids.
    """
    data = {"observed": entity_id, "within": within, "by": by, "quorum": quorum, "ok": ok}
    return _built(data, "observed()")


def attr(entity_id: str, path: str, op: str, value: Any = None) -> dict[str, Any]:
    """Compares the attribute at dotted ``path`` of ``entity_id`` with ``value`` using ``op``
    (``eq ne lt le gt ge in contains present``). A missing attribute satisfies no operator.
    """
    data: dict[str, Any] = {"attr": [entity_id, path], "op": op}
    if op != "present":
        data["value"] = value
    return _built(data, "attr()")


def call(name: str, **args: Any) -> dict[str, Any]:
    """Calls the predicate registered on the replica as ``name`` with ``args``."""
    return _built({"call": name, "args": args}, "call()")


def _built(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A builder's checked result, copied (see the module's docstring)."""
    check_constraint(data, where)
    return codec.copy(data)  # type: ignore[no-any-return]


def check_constraint(data: Any, where: str = "requires") -> Constraint:
    """Return ``data`` if it is a valid constraint, else raise :class:`InvalidConstraint`.

    The message names the offending part, e.g. ``requires.all[1]: unknown clause 'exist'``.
    """
    budget = [MAX_CONSTRAINT_NODES]
    _check(data, where, 0, budget)
    return data  # type: ignore[no-any-return]


#: Where a clause sits, built cheaply as nested pairs and rendered only for an error:
#: a str (the root), or (parent, ".key") or (parent, index).
Where = Any


def _render(where: Where) -> str:
    parts: list[str] = []
    while type(where) is tuple:
        where, segment = where
        parts.append(f"[{segment}]" if type(segment) is int else segment)
    parts.append(where)
    return "".join(reversed(parts))


def _fail(where: Where, message: str) -> InvalidConstraint:
    return InvalidConstraint(f"{_render(where)}: {message}")


def _number(value: Any) -> bool:
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _check(data: Any, where: Where, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(where, f"more than {MAX_CONSTRAINT_NODES} clauses")
    if depth > MAX_CONSTRAINT_DEPTH:
        raise _fail(where, f"nested deeper than {MAX_CONSTRAINT_DEPTH} levels")
    if type(data) is bool:
        return
    if type(data) is not dict:
        raise _fail(where, f"a constraint is true, false or an object, not {_show(data)}")
    clauses = [key for key in data if key in _CHECKS]
    if len(clauses) != 1:
        if not clauses:
            keys = ", ".join(repr(key) for key in data) or "none"
            raise _fail(where, f"unknown clause (keys: {keys}); expected one of {_CLAUSE_LIST}")
        raise _fail(where, f"one clause per object, found {clauses}")
    clause = clauses[0]
    allowed = _ALLOWED_KEYS[clause]
    for key in data:
        if key not in allowed:
            raise _fail((where, "." + clause), f"unexpected key {key!r}")
    _CHECKS[clause](data, (where, "." + clause), depth, budget)


def _check_id(value: Any, where: Where) -> None:
    try:
        names.check_entity_id(value)
    except InvalidConstraint:
        raise
    except Exception as exc:
        raise _fail(where, str(exc)) from exc


def _check_exists(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    _check_id(data["exists"], where)


def _check_list(
    data: dict[str, Any], key: str, where: Where, depth: int, budget: list[int]
) -> None:
    items = data[key]
    if type(items) is not list:
        raise _fail(where, f"expects a list of constraints, not {_show(items)}")
    for index, item in enumerate(items):
        _check(item, (where, index), depth + 1, budget)


def _check_all(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    _check_list(data, "all", where, depth, budget)


def _check_any(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    _check_list(data, "any", where, depth, budget)


def _check_not(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    _check(data["not"], where, depth + 1, budget)


def _check_at_least(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    if not _count(data["at_least"]):
        raise _fail(where, f"expects a non-negative int, not {_show(data['at_least'])}")
    if "of" not in data:
        raise _fail(where, "needs 'of': a list of constraints")
    _check_list(data, "of", (where, ".of"), depth, budget)


def _check_observed(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    _check_id(data["observed"], where)
    if "within" not in data:
        raise _fail(where, "needs 'within': the freshness window in seconds")
    if not _number(data["within"]) or data["within"] < 0:
        raise _fail(
            (where, ".within"), f"expects a non-negative number, not {_show(data['within'])}"
        )
    by = data.get("by", "*")
    if by not in ("*", "self"):
        if type(by) is not list or not by:
            raise _fail(
                (where, ".by"), f'expects "*", "self" or a list of replica ids, not {_show(by)}'
            )
        for index, replica_id in enumerate(by):
            try:
                names.check_replica_id(replica_id)
            except Exception as exc:
                raise _fail(((where, ".by"), index), str(exc)) from exc
    quorum = data.get("quorum", 1)
    if not _count(quorum) or quorum < 1:
        raise _fail((where, ".quorum"), f"expects a positive int, not {_show(quorum)}")
    if type(data.get("ok", True)) is not bool:
        raise _fail((where, ".ok"), f"expects true or false, not {_show(data['ok'])}")


def _check_attr(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    target = data["attr"]
    if type(target) is not list or len(target) != 2 or type(target[1]) is not str:
        raise _fail(where, f'expects [ENTITY_ID, "dotted.path"], not {_show(target)}')
    _check_id(target[0], where)
    if not target[1] or any(not part for part in target[1].split(".")):
        raise _fail(where, f"path {target[1]!r} has an empty part")
    op = data.get("op")
    if type(op) is not str or op not in ATTR_OPS:
        raise _fail((where, ".op"), f"expects one of {sorted(ATTR_OPS)}, not {_show(op)}")
    if op == "present":
        if "value" in data:
            raise _fail((where, ".value"), "'present' takes no value")
        return
    if "value" not in data:
        raise _fail(where, f"op {op!r} needs a 'value'")
    value = data["value"]
    try:
        codec.check_value(value, _render((where, ".value")))
    except InvalidValue as exc:
        raise InvalidConstraint(str(exc)) from exc
    if op == "in" and type(value) is not list:
        raise _fail((where, ".value"), f"'in' expects a list, not {_show(value)}")


def _check_call(data: dict[str, Any], where: Where, depth: int, budget: list[int]) -> None:
    name = data["call"]
    if type(name) is not str or not name:
        raise _fail(where, f"expects a predicate name, not {_show(name)}")
    args = data.get("args", {})
    if type(args) is not dict:
        raise _fail((where, ".args"), f"expects an object, not {_show(args)}")
    try:
        codec.check_value(args, _render((where, ".args")))
    except InvalidValue as exc:
        raise InvalidConstraint(str(exc)) from exc


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_CHECKS: Final[Mapping[str, Callable[[dict[str, Any], Where, int, list[int]], None]]] = {
    "exists": _check_exists,
    "all": _check_all,
    "any": _check_any,
    "not": _check_not,
    "at_least": _check_at_least,
    "observed": _check_observed,
    "attr": _check_attr,
    "call": _check_call,
}
_ALLOWED_KEYS: Final = {
    "exists": {"exists"},
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "at_least": {"at_least", "of"},
    "observed": {"observed", "within", "by", "quorum", "ok"},
    "attr": {"attr", "op", "value"},
    "call": {"call", "args"},
}
_CLAUSE_LIST: Final = ", ".join(_CHECKS)
