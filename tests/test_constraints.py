"""The constraint language: builders, validation with blame, and constraints as replicated data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sphaera_crdt import (
    Change,
    InputError,
    InvalidConstraint,
    Replica,
    SphaeraError,
    Status,
    all_of,
    any_of,
    at_least,
    attr,
    call,
    check_constraint,
    exists,
    not_,
    observed,
)
from sphaera_crdt.core.constraints import MAX_CONSTRAINT_DEPTH, MAX_CONSTRAINT_NODES


def _typed(value: Any) -> Any:
    """A form of ``value`` in which ``1``, ``1.0`` and ``True`` differ."""
    if type(value) is list:
        return ["list", [_typed(item) for item in value]]
    if type(value) is dict:
        return ["dict", sorted((key, _typed(item)) for key, item in value.items())]
    return [type(value).__name__, value]


def _replica(name: str = "r", t: list[float] | None = None) -> Replica:
    clock = t if t is not None else [0.0]
    return Replica(name, clock=lambda: clock[0])


def _inject_requires(replica: Replica, entity: str, data: Any) -> None:
    """Declare ``entity`` with ``requires`` data that skips validation, the way a buggy or
    hostile peer could write it into its own container."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replica, "_check_requires", lambda entity_id, requires: requires)
        replica.declare(entity, requires=data)


def _sync(a: Replica, b: Replica) -> None:
    b.merge(a.delta(b.state_vector()))
    a.merge(b.delta(a.state_vector()))


# -- builders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "data"),
    [
        (exists("db"), {"exists": "db"}),
        (all_of(), {"all": []}),
        (any_of(), {"any": []}),
        (all_of(exists("a"), True), {"all": [{"exists": "a"}, True]}),
        (any_of(False, exists("b")), {"any": [False, {"exists": "b"}]}),
        (not_(exists("a")), {"not": {"exists": "a"}}),
        (not_(True), {"not": True}),
        (
            at_least(2, exists("a"), exists("b")),
            {"at_least": 2, "of": [{"exists": "a"}, {"exists": "b"}]},
        ),
        (at_least(0), {"at_least": 0, "of": []}),
        (
            observed("db", within=10),
            {"observed": "db", "within": 10, "by": "*", "quorum": 1, "ok": True},
        ),
        (
            observed("db", within=2.5, by=["r1", "r2"], quorum=2, ok=False),
            {"observed": "db", "within": 2.5, "by": ["r1", "r2"], "quorum": 2, "ok": False},
        ),
        (
            observed("db", within=0, by="self"),
            {"observed": "db", "within": 0, "by": "self", "quorum": 1, "ok": True},
        ),
        (attr("db", "port", "eq", 5432), {"attr": ["db", "port"], "op": "eq", "value": 5432}),
        (attr("db", "meta.zone", "present"), {"attr": ["db", "meta.zone"], "op": "present"}),
        (
            attr("db", "tags", "contains", "x"),
            {"attr": ["db", "tags"], "op": "contains", "value": "x"},
        ),
        (
            attr("db", "role", "in", ["a", "b"]),
            {"attr": ["db", "role"], "op": "in", "value": ["a", "b"]},
        ),
        (attr("db", "x", "eq", None), {"attr": ["db", "x"], "op": "eq", "value": None}),
        (call("healthy"), {"call": "healthy", "args": {}}),
        (call("near", zone="eu", n=2), {"call": "near", "args": {"zone": "eu", "n": 2}}),
    ],
)
def test_builders_produce_exactly_the_json_data(built: Any, data: Any) -> None:
    assert _typed(built) == _typed(data)
    # plain data, as read from a file or an HTTP body, is the same constraint
    assert _typed(json.loads(json.dumps(built))) == _typed(data)
    assert check_constraint(data) is data


def test_builders_nest() -> None:
    built = all_of(
        exists("db"),
        any_of(observed("db", within=5), not_(attr("db", "role", "eq", "replica"))),
        at_least(1, call("p"), False),
    )
    assert built == {
        "all": [
            {"exists": "db"},
            {
                "any": [
                    {"observed": "db", "within": 5, "by": "*", "quorum": 1, "ok": True},
                    {"not": {"attr": ["db", "role"], "op": "eq", "value": "replica"}},
                ]
            },
            {"at_least": 1, "of": [{"call": "p", "args": {}}, False]},
        ]
    }


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: exists(""), "exists().exists"),
        (lambda: exists("a\x1fb"), "exists().exists"),
        (lambda: observed("db", within=-1), "observed().observed.within"),
        (lambda: observed("db", within=1, by=[]), "observed().observed.by"),
        (lambda: observed("db", within=1, quorum=0), "observed().observed.quorum"),
        (lambda: attr("db", "port", "regex", "x"), "attr().attr.op"),
        (lambda: attr("db", "", "eq", 1), "attr().attr"),
        (lambda: attr("db", "role", "in", "a"), "attr().attr.value"),
        (lambda: at_least(-1, True), "at_least().at_least"),
        (lambda: all_of(True, "yes"), "all_of().all[1]"),  # type: ignore[arg-type]
        (lambda: not_(None), "not_().not"),  # type: ignore[arg-type]
        (lambda: call(""), "call().call"),
        (lambda: call("p", x={1}), "call().call.args.x"),
    ],
)
def test_builders_validate_their_arguments(build: Any, where: str) -> None:
    with pytest.raises(InvalidConstraint) as info:
        build()
    assert str(info.value).startswith(where + ":"), str(info.value)


def test_plain_data_and_builders_give_the_same_statuses() -> None:
    t = [100.0]
    by_builders = _replica("a", t)
    by_data = _replica("b", t)
    built = {
        "api": all_of(exists("db"), observed("db", within=10), attr("db", "port", "ge", 5000)),
        "web": any_of(not_(exists("api")), at_least(1, exists("cache"))),
    }
    for replica in (by_builders, by_data):
        replica.declare("db", attrs={"port": 5432})
        replica.observe("db")
    for name, constraint in built.items():
        by_builders.declare(name, requires=constraint)
        by_data.declare(name, requires=json.loads(json.dumps(constraint)))
    # the defaults of ``observed`` may be left out of plain data
    by_data.declare("api2", requires={"observed": "db", "within": 10})
    by_builders.declare("api2", requires=observed("db", within=10))
    for name in ["api", "web", "api2"]:
        assert by_builders.status(name) == by_data.status(name)
    assert by_data.status("api") is Status.EXISTS
    assert by_data.status("api2") is Status.EXISTS
    assert by_data.status("web") is Status.ABSENT


# -- validation on declare -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requires", "where", "words"),
    [
        ({"all": [True, {"exist": "db"}]}, "requires of 'api'.all[1]", "unknown clause"),
        ({"all": [True, {"exists": ""}]}, "requires of 'api'.all[1].exists", "empty"),
        ({"any": "db"}, "requires of 'api'.any", "list"),
        ({"not": 5}, "requires of 'api'.not", "true, false or an object"),
        ({"not": None}, "requires of 'api'.not", "true, false or an object"),
        ({"at_least": -1, "of": []}, "requires of 'api'.at_least", "non-negative int"),
        ({"at_least": True, "of": []}, "requires of 'api'.at_least", "non-negative int"),
        ({"at_least": 1.0, "of": []}, "requires of 'api'.at_least", "non-negative int"),
        ({"at_least": 1}, "requires of 'api'.at_least", "'of'"),
        ({"at_least": 1, "of": [True, 3]}, "requires of 'api'.at_least.of[1]", "object"),
        ({"observed": "db"}, "requires of 'api'.observed", "within"),
        ({"observed": "db", "within": -1}, "requires of 'api'.observed.within", "non-negative"),
        ({"observed": "db", "within": True}, "requires of 'api'.observed.within", "number"),
        ({"observed": "db", "within": "5"}, "requires of 'api'.observed.within", "number"),
        ({"observed": "db", "within": float("nan")}, "requires of 'api'.observed.within", "nan"),
        ({"observed": "db", "within": 1, "by": []}, "requires of 'api'.observed.by", "list"),
        ({"observed": "db", "within": 1, "by": "me"}, "requires of 'api'.observed.by", "self"),
        (
            {"observed": "db", "within": 1, "by": ["a", 3]},
            "requires of 'api'.observed.by[1]",
            "str",
        ),
        (
            {"observed": "db", "within": 1, "quorum": 0},
            "requires of 'api'.observed.quorum",
            "positive",
        ),
        (
            {"observed": "db", "within": 1, "quorum": 1.5},
            "requires of 'api'.observed.quorum",
            "1.5",
        ),
        (
            {"observed": "db", "within": 1, "ok": "yes"},
            "requires of 'api'.observed.ok",
            "true or false",
        ),
        (
            {"observed": "db", "within": 1, "ttl": 3},
            "requires of 'api'.observed",
            "unexpected key 'ttl'",
        ),
        ({"observed": 7, "within": 1}, "requires of 'api'.observed", "entity id"),
        ({"attr": ["db"], "op": "eq", "value": 1}, "requires of 'api'.attr", "ENTITY_ID"),
        ({"attr": "db.port", "op": "eq", "value": 1}, "requires of 'api'.attr", "ENTITY_ID"),
        ({"attr": ["db", "a..b"], "op": "eq", "value": 1}, "requires of 'api'.attr", "empty part"),
        ({"attr": ["db", "a"], "op": "regex", "value": 1}, "requires of 'api'.attr.op", "regex"),
        ({"attr": ["db", "a"], "value": 1}, "requires of 'api'.attr.op", "None"),
        ({"attr": ["db", "a"], "op": "eq"}, "requires of 'api'.attr", "needs a 'value'"),
        (
            {"attr": ["db", "a"], "op": "present", "value": 1},
            "requires of 'api'.attr.value",
            "present",
        ),
        ({"attr": ["db", "a"], "op": "in", "value": 1}, "requires of 'api'.attr.value", "list"),
        ({"attr": ["db", "a"], "op": "eq", "value": {1, 2}}, "requires of 'api'.attr.value", "set"),
        (
            {"attr": ["db", "a"], "op": "eq", "value": float("inf")},
            "requires of 'api'.attr.value",
            "finite",
        ),
        ({"call": ""}, "requires of 'api'.call", "predicate name"),
        ({"call": 3}, "requires of 'api'.call", "predicate name"),
        ({"call": "p", "args": []}, "requires of 'api'.call.args", "object"),
        ({"call": "p", "args": {"x": b"1"}}, "requires of 'api'.call.args.x", "bytes"),
        ({"exists": "a", "not": True}, "requires of 'api'", "one clause per object"),
        ({}, "requires of 'api'", "unknown clause"),
        ([], "requires of 'api'", "true, false or an object"),
        ("true", "requires of 'api'", "true, false or an object"),
        (1, "requires of 'api'", "true, false or an object"),
        (0, "requires of 'api'", "true, false or an object"),
        (
            {"all": [{"any": [True, {"not": {"observed": "x", "within": 1, "by": "any"}}]}]},
            "requires of 'api'.all[0].any[1].not.observed.by",
            "self",
        ),
    ],
)
def test_declare_refuses_a_malformed_constraint_and_names_the_bad_part(
    requires: Any, where: str, words: str
) -> None:
    replica = _replica()
    with pytest.raises(InvalidConstraint) as info:
        replica.declare("api", requires=requires)
    message = str(info.value)
    assert message.startswith(where + ":"), message
    assert words in message, message
    assert replica.entity("api") is None


def test_invalid_constraint_is_an_input_error() -> None:
    assert issubclass(InvalidConstraint, InputError)
    assert issubclass(InvalidConstraint, ValueError)
    assert issubclass(InvalidConstraint, SphaeraError)
    with pytest.raises(ValueError, match="unknown clause"):
        check_constraint({"exist": "db"})


def test_check_constraint_names_the_caller_given_root() -> None:
    with pytest.raises(InvalidConstraint, match=r"^body\.any\[0\]: "):
        check_constraint({"any": [{"nope": 1}]}, "body")
    with pytest.raises(InvalidConstraint, match=r"^requires\.not: "):
        check_constraint({"not": []})


def test_a_refused_declare_changes_nothing() -> None:
    replica = _replica()
    replica.declare("db")
    replica.declare("api", kind="svc", attrs={"port": 1}, requires=exists("db"))
    events: list[Change] = []
    replica.subscribe(events.append)
    vector = replica.state_vector()
    with pytest.raises(InvalidConstraint):
        replica.declare("api", kind="other", attrs={"port": 2}, requires={"exists": 5})
    view = replica.entity("api")
    assert view is not None
    assert (view.kind, view.attrs, view.requires, view.status) == (
        "svc",
        {"port": 1},
        {"exists": "db"},
        Status.EXISTS,
    )
    assert replica.state_vector() == vector
    assert events == []


def test_depth_and_size_limits() -> None:
    deep: Any = True
    for _ in range(MAX_CONSTRAINT_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(InvalidConstraint, match="nested deeper than"):
        check_constraint(deep)
    shallow: Any = True
    for _ in range(MAX_CONSTRAINT_DEPTH):
        shallow = {"not": shallow}
    assert check_constraint(shallow) is shallow
    with pytest.raises(InvalidConstraint, match=f"more than {MAX_CONSTRAINT_NODES} clauses"):
        check_constraint({"any": [True] * MAX_CONSTRAINT_NODES})
    assert check_constraint({"any": [True] * (MAX_CONSTRAINT_NODES - 1)})


def test_requires_none_true_and_false() -> None:
    replica = _replica()
    replica.declare("free")
    replica.declare("yes", requires=True)
    replica.declare("no", requires=False)
    assert replica.status("free") is Status.EXISTS
    assert replica.status("yes") is Status.EXISTS
    assert replica.status("no") is Status.ABSENT
    free = replica.entity("free")
    assert free is not None and free.requires is None


# -- malformed constraints from other replicas -------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"exist": "db"},
        {"observed": "db"},
        {"all": [True, {"at_least": -1, "of": []}]},
        {"attr": ["db", "port"], "op": "matches", "value": "x"},
        {"exists": "db", "any": []},
        42,
        "exists db",
        [{"exists": "db"}],
    ],
)
def test_a_malformed_constraint_from_a_peer_makes_the_entity_undetermined(bad: Any) -> None:
    t = [10.0]
    src = _replica("src", t)
    dst = _replica("dst", t)
    src.declare("db")
    src.declare("q", requires=exists("db"))
    _inject_requires(src, "q", bad)
    events: list[Change] = []
    dst.subscribe(events.append)
    dst.merge(src.delta(dst.state_vector()))  # must not raise
    for replica in (src, dst):
        assert replica.status("q") is Status.UNDETERMINED
        view = replica.entity("q")
        assert view is not None
        assert view.status is Status.UNDETERMINED
        assert "malformed" in view.reason
        assert _typed(view.requires) == _typed(bad)  # kept as it came, for inspection
        assert "malformed" in replica.why("q")["reason"]
        json.dumps(replica.why("q"))
        assert replica.derive_all()["q"] is Status.UNDETERMINED
    [change] = [c for c in events if c.entity == "q"]
    assert change.after is Status.UNDETERMINED and "malformed" in change.reason


def test_a_malformed_constraint_spreads_as_unknown_and_heals_when_redeclared() -> None:
    t = [10.0]
    src = _replica("src", t)
    dst = _replica("dst", t)
    src.declare("db")
    src.declare("q", requires=exists("db"))
    dst.declare("uses", requires=exists("q"))
    dst.declare("either", requires=any_of(exists("q"), True))
    dst.declare("guard", requires=not_(exists("q")))
    _inject_requires(src, "q", {"exist": "db"})
    _sync(src, dst)
    assert dst.status("uses") is Status.UNDETERMINED
    assert dst.status("either") is Status.EXISTS
    assert dst.status("guard") is Status.UNDETERMINED
    # a later, valid declaration anywhere wins and heals every replica
    dst.declare("q", requires=exists("db"))
    _sync(src, dst)
    for replica in (src, dst):
        assert replica.status("q") is Status.EXISTS
        assert replica.status("uses") is Status.EXISTS
        assert replica.status("guard") is Status.ABSENT


# -- constraints replicate as data ---------------------------------------------------------------


def test_constraints_replicate_as_the_declared_data() -> None:
    t = [0.0]
    replicas = [_replica(name, t) for name in ("a", "b", "c")]
    declared = {
        "api": all_of(
            exists("db"),
            observed("db", within=10, by=["a", "b"], quorum=2),
            attr("db", "port", "eq", 5432),
            attr("db", "ratio", "le", 0.5),
        ),
        "web": any_of(not_(exists("api")), at_least(2, True, False, call("p", n=1, f=1.0))),
        "float": observed("db", within=10.0),
        "big": attr("db", "n", "eq", 2**70),
        "plain": {"observed": "db", "within": 3},
        "none": None,
    }
    for index, (name, requires) in enumerate(declared.items()):
        replicas[index % 3].declare(name, requires=requires)
    for _ in range(2):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    b.merge(a.delta(b.state_vector()))
    for replica in replicas:
        for name, requires in declared.items():
            view = replica.entity(name)
            assert view is not None, (replica.id, name)
            assert _typed(view.requires) == _typed(requires), (replica.id, name)
            assert _typed(view.to_json()["requires"]) == _typed(requires)
    # a caller that mutates what it got back cannot change the replicated constraint
    view = replicas[0].entity("api")
    assert view is not None
    view.requires["all"].clear()
    again = replicas[0].entity("api")
    assert again is not None and again.requires == declared["api"]
