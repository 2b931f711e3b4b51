"""Compiling constraints: the one-pass compiler agrees with the checker and a plain compiler.

``compile_constraint`` checks and compiles in one walk and leaves anything unusual to
``check_constraint``. These properties hold it to the checker: the same data is refused
with the same message, and what is accepted compiles to what a plain recursive compiler
(written here, independently) gives.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profiles import examples

from sphaera_crdt import InvalidConstraint, check_constraint
from sphaera_crdt.core.compiler import Compiled, compile_constraint
from sphaera_crdt.core.constraints import MAX_CONSTRAINT_DEPTH, MAX_CONSTRAINT_NODES
from sphaera_crdt.core.formulas import FALSE, TRUE

PROFILE = settings(
    max_examples=examples(400),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

IDS = ("db", "api", "svc-000001", "é-unicode", "x" * 256)
#: Clauses that are wrong, or right but unusual, for the compiler's fast paths to meet.
ODD: tuple[Any, ...] = (
    {"exist": "db"},
    {"exists": ""},
    {"exists": 5},
    {"exists": "a\x01b"},
    {"exists": "x" * 257},
    {"exists": "\ud800"},
    {"exists": "db", "not": True},
    {"all": "db"},
    {"any": None},
    {"not": []},
    {"at_least": -1, "of": []},
    {"at_least": True, "of": []},
    {"at_least": 1.0, "of": []},
    {"at_least": 1},
    {"at_least": 1, "of": "db"},
    {"at_least": 1, "of": [], "x": 1},
    {"observed": "db"},
    {"observed": "db", "within": 10**400},
    {"observed": "db", "within": 10**300},
    {"observed": "db", "within": math.nan},
    {"observed": "db", "within": math.inf},
    {"observed": "db", "within": -1},
    {"observed": "db", "within": True},
    {"observed": "db", "within": 1, "by": []},
    {"observed": "db", "within": 1, "by": ["r1", "r2"]},
    {"observed": "db", "within": 1, "by": ["r1", 3]},
    {"observed": "db", "within": 1, "by": "me"},
    {"observed": "db", "within": 1, "quorum": 0},
    {"observed": "db", "within": 1, "ok": "yes"},
    {"observed": "db", "within": 1, "ttl": 3},
    {"observed": 7, "within": 1},
    {"attr": ["db", "port"], "op": ["eq"], "value": 1},
    {"attr": ["db", "a..b"], "op": "eq", "value": 1},
    {"attr": ["db", ""], "op": "eq", "value": 1},
    {"attr": ["db", 5], "op": "eq", "value": 1},
    {"attr": ["db"], "op": "eq", "value": 1},
    {"attr": ["db", "port"], "op": "present"},
    {"attr": ["db", "port"], "op": "present", "value": 1},
    {"attr": ["db", "port"], "op": "eq"},
    {"attr": ["db", "port"], "op": "in", "value": 1},
    {"attr": ["db", "port"], "op": "in", "value": [1, "a", None]},
    {"attr": ["db", "port"], "op": "eq", "value": {"a": [1, 2.5]}},
    {"attr": ["db", "port"], "op": "eq", "value": {1, 2}},
    {"attr": ["db", "port"], "op": "eq", "value": math.inf},
    {"call": ""},
    {"call": "p"},
    {"call": "p", "args": []},
    {"call": "p", "args": {"x": b"1"}},
    {},
    [],
    None,
    0,
    1,
    "true",
)


def _leaf() -> st.SearchStrategy[Any]:
    ids = st.sampled_from(IDS)
    observed = st.fixed_dictionaries(
        {"observed": ids, "within": st.sampled_from([0, 1, 2.5, 86400.0])},
        optional={
            "by": st.one_of(
                st.sampled_from(["*", "self"]), st.lists(st.sampled_from(["r1", "r2"]), min_size=1)
            ),
            "quorum": st.integers(1, 3),
            "ok": st.booleans(),
        },
    )
    attr = st.builds(
        lambda entity, path, op, value: (
            {"attr": [entity, path], "op": op}
            if op == "present"
            else {"attr": [entity, path], "op": op, "value": [value] if op == "in" else value}
        ),
        ids,
        st.sampled_from(["port", "meta.zone"]),
        st.sampled_from(["eq", "ne", "lt", "in", "contains", "present"]),
        st.one_of(st.integers(), st.text(max_size=3), st.none(), st.booleans()),
    )
    call = st.builds(lambda name: {"call": name, "args": {"n": 1}}, st.sampled_from(["p", "q"]))
    return st.one_of(
        st.booleans(),
        ids.map(lambda entity: {"exists": entity}),
        ids.map(lambda entity: {"exists": entity}),
        observed,
        attr,
        call,
        st.sampled_from(ODD),
    )


def _formula(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return _leaf()
    inner = _formula(depth - 1)
    parts = st.lists(inner, max_size=4)
    return st.one_of(
        _leaf(),
        parts.map(lambda items: {"all": items}),
        parts.map(lambda items: {"any": items}),
        inner.map(lambda item: {"not": item}),
        st.builds(lambda k, items: {"at_least": k, "of": items}, st.integers(0, 3), parts),
    )


def _reference(data: Any, found: dict[str, Any]) -> Any:
    """A plain recursive compiler of checked data (exists atoms compile to the bare id)."""
    if data is True or data is False:
        return ("const", TRUE if data else FALSE)
    if "exists" in data:
        found["exists"].append(data["exists"])
        return data["exists"]
    if "all" in data or "any" in data:
        op = "all" if "all" in data else "any"
        return (op, tuple(_reference(item, found) for item in data[op]))
    if "not" in data:
        found["negates"] = True
        return ("not", _reference(data["not"], found))
    if "at_least" in data:
        return ("at_least", data["at_least"], tuple(_reference(i, found) for i in data["of"]))
    if "observed" in data:
        found["observed"].add(data["observed"])
        by = data.get("by", "*")
        found["self"] = found["self"] or by == "self"
        return (
            "observed",
            data["observed"],
            float(data["within"]),
            by if by in ("*", "self") else frozenset(by),
            data.get("quorum", 1),
            data.get("ok", True),
        )
    if "attr" in data:
        entity, path = data["attr"]
        found["attrs"].add(entity)
        return ("attr", entity, tuple(path.split(".")), data["op"], data.get("value"))
    found["calls"] = True
    return ("call", data["call"], data.get("args", {}))


def _same(a: Any, b: Any) -> bool:
    """Equality that tells ``1``, ``1.0`` and ``True`` apart."""
    if type(a) is not type(b):
        return False
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _assert_agrees_with_checker(data: Any) -> None:
    """The compiler refuses ``data`` with the checker's message, or compiles it to what the
    plain reference compiler gives, with the same facts collected."""
    try:
        check_constraint(data)
    except InvalidConstraint as refused:
        with pytest.raises(InvalidConstraint) as info:
            compile_constraint(data)
        assert str(info.value) == str(refused), data
        return
    compiled = compile_constraint(data)
    assert isinstance(compiled, Compiled)
    assert len(compiled) == len(Compiled._fields)
    found: dict[str, Any] = {
        "exists": [],
        "observed": set(),
        "attrs": set(),
        "calls": False,
        "self": False,
        "negates": False,
    }
    assert _same(compiled.node, _reference(data, found)), data
    assert compiled.exists == tuple(dict.fromkeys(found["exists"])), data
    assert compiled.observed == found["observed"], data
    assert compiled.attrs == found["attrs"], data
    assert (compiled.calls, compiled.uses_self, compiled.negates) == (
        found["calls"],
        found["self"],
        found["negates"],
    ), data
    assert compiled.data is data


@PROFILE
@given(_formula(3))
def test_compiler_refuses_what_the_checker_refuses_and_compiles_the_rest(data: Any) -> None:
    _assert_agrees_with_checker(data)


WRAPPERS: tuple[Any, ...] = (
    lambda c: c,
    lambda c: {"all": [c]},
    lambda c: {"any": [{"exists": "db"}, c]},
    lambda c: {"at_least": 1, "of": [c, {"exists": "api"}]},
    lambda c: {"not": c},
    lambda c: {"all": [{"any": [c]}, {"observed": "db", "within": 1}]},
)


@pytest.mark.parametrize("wrap", range(len(WRAPPERS)))
def test_every_odd_clause_in_every_position(wrap: int) -> None:
    for odd in (*ODD, *({"exists": entity} for entity in IDS)):
        _assert_agrees_with_checker(WRAPPERS[wrap](odd))


def _nested(levels: int, leaf: Any) -> Any:
    data = leaf
    for _ in range(levels):
        data = {"not": data}
    return data


@pytest.mark.parametrize(
    ("data", "accepted"),
    [
        (_nested(MAX_CONSTRAINT_DEPTH, True), True),
        (_nested(MAX_CONSTRAINT_DEPTH + 1, True), False),
        (_nested(MAX_CONSTRAINT_DEPTH, {"exists": "a"}), True),
        (_nested(MAX_CONSTRAINT_DEPTH - 1, {"all": [{"exists": "a"}]}), True),
        (_nested(MAX_CONSTRAINT_DEPTH, {"all": [{"exists": "a"}]}), False),
        (_nested(MAX_CONSTRAINT_DEPTH, {"all": []}), True),
        ({"all": [{"exists": "a"}] * (MAX_CONSTRAINT_NODES - 1)}, True),
        ({"all": [{"exists": "a"}] * MAX_CONSTRAINT_NODES}, False),
        ({"at_least": 1, "of": [{"exists": "a"}] * (MAX_CONSTRAINT_NODES - 1)}, True),
        ({"at_least": 1, "of": [{"exists": "a"}] * MAX_CONSTRAINT_NODES}, False),
        ({"any": [True] * (MAX_CONSTRAINT_NODES - 1)}, True),
        ({"any": [True] * MAX_CONSTRAINT_NODES}, False),
        ({"all": [{"not": True}] * (MAX_CONSTRAINT_NODES // 2)}, False),
        ({"all": [{"not": True}] * (MAX_CONSTRAINT_NODES // 2 - 1)}, True),
    ],
)
def test_depth_and_size_limits_hold_on_every_path(data: Any, accepted: bool) -> None:
    if accepted:
        assert check_constraint(data) is data
        compiled = compile_constraint(data)
        assert len(compiled) == len(Compiled._fields)
    else:
        with pytest.raises(InvalidConstraint) as refused:
            check_constraint(data)
        with pytest.raises(InvalidConstraint) as info:
            compile_constraint(data)
        assert str(info.value) == str(refused.value)


def test_repeated_targets_are_listed_once_but_still_counted() -> None:
    compiled = compile_constraint({"at_least": 2, "of": [{"exists": "a"}, {"exists": "a"}]})
    assert compiled.exists == ("a",)
    assert compiled.node == ("at_least", 2, ("a", "a"))
    compiled = compile_constraint({"all": [{"exists": "b"}, {"exists": "a"}, {"exists": "b"}]})
    assert compiled.exists == ("b", "a")
