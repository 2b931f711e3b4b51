"""Entries that cannot be read are never read as absent.

A raw pycrdt client (or a hostile peer) writes entries straight into a replica's document;
another replica merges them. An unreadable ``requires`` makes its entity undetermined with
a reason naming the problem, a newer unreadable version replaces the older rule, and every
other unreadable field is counted and named in ``why()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples
from pycrdt import Map
from rawpeer import entry, field, raw_write

from sphaera_crdt import Replica, Status, attr, observed
from sphaera_crdt.core.codec import MAX_DEPTH

NOW = 1000.0
#: Stamps (ms) before and after the replicas' own writes, which are stamped about NOW.
OLDER = 500_000
NEWER = 2_000_000

#: Payloads no replica can read, and a word of the reason each one gives.
UNREADABLE = [
    pytest.param('{"exists":', "undecodable", id="undecodable"),
    pytest.param('{"exists":"d', "undecodable", id="truncated"),
    pytest.param("", "empty payload", id="empty"),
    pytest.param("!", "marked removed", id="removed-marker"),
    pytest.param("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper", id="too-deep"),
    pytest.param("[" * 300 + "true" + "]" * 300, "nested deeper", id="orjson-deep"),
    pytest.param("[" * 100_000 + "]" * 100_000, "nested deeper", id="recursion-deep"),
    pytest.param('{"at_least":' + "9" * 5000 + ',"of":[]}', "digits", id="huge-int"),
    pytest.param('{"observed":"db","within":1e400}', "finite", id="huge-float"),
]


def pair() -> tuple[Replica, Replica]:
    a = Replica("a", clock=lambda: NOW)
    b = Replica("b", clock=lambda: NOW)
    return a, b


def audit(replica: Replica) -> None:
    """Incremental statuses equal a full derivation."""
    current = {
        entity_id: view.status
        for entity_id, view in replica.entities().items()
        if view.status is not Status.ABSENT
    }
    assert replica.derive_all() == current


@pytest.mark.parametrize(("payload", "problem"), UNREADABLE)
def test_a_newer_unreadable_requires_makes_the_entity_undetermined(
    payload: str, problem: str
) -> None:
    a, b = pair()
    a.declare("db")
    a.declare("api", requires={"exists": "db"})
    b.merge(a.delta())
    assert b.status("api") is Status.EXISTS
    before = b.unreadable

    raw_write(a, {field("api", "q"): entry(NEWER, payload)})
    changes = b.merge(a.delta())

    # It replaces the older rule: no fallback to {"exists": "db"}, never "no requirements".
    assert b.status("api") is Status.UNDETERMINED
    view = b.entity("api")
    assert view is not None
    assert view.reason.startswith("unreadable requires: ")
    assert problem in view.reason
    assert view.requires is None
    assert [(c.entity, c.after) for c in changes] == [("api", Status.UNDETERMINED)]
    assert b.why("api")["reason"] == view.reason
    assert b.why("api")["unreadable"]["requires"] in view.reason
    assert b.unreadable == before + 1
    audit(b)


@pytest.mark.parametrize(("payload", "problem"), UNREADABLE)
def test_an_entity_declared_with_an_unreadable_requires_is_undetermined(
    payload: str, problem: str
) -> None:
    a, b = pair()
    raw_write(
        a,
        {
            field("job", "x"): entry(NEWER, "f"),
            field("job", "o"): entry(NEWER, "'mallory"),
            field("job", "q"): entry(NEWER, payload),
        },
    )
    b.merge(a.delta())
    assert b.status("job") is Status.UNDETERMINED
    assert problem in b.entity("job").reason  # type: ignore[union-attr]
    audit(b)
    # A replica that starts from the same state derives the same.
    c = Replica.restore("c", [b.delta()], clock=lambda: NOW)
    assert c.status("job") is Status.UNDETERMINED


def test_an_older_unreadable_requires_loses_but_is_counted() -> None:
    a, b = pair()
    a.declare("db")
    a.declare("api", requires={"exists": "db"})
    raw_write(a, {field("api", "q"): entry(OLDER, '{"exists":')})
    b.merge(a.delta())
    assert b.status("api") is Status.EXISTS
    assert b.unreadable == 1
    assert "unreadable" not in b.why("api")


def test_a_readable_rule_written_after_an_unreadable_one_takes_over() -> None:
    a, b = pair()
    a.declare("db")
    a.declare("api", requires={"exists": "db"})
    raw_write(a, {field("api", "q"): entry(NEWER, "{")})
    b.merge(a.delta())
    assert b.status("api") is Status.UNDETERMINED
    raw_write(a, {field("api", "q"): entry(NEWER + 1, '{"exists":"nothing"}')})
    b.merge(a.delta())
    assert b.status("api") is Status.ABSENT
    audit(b)


def test_the_replica_between_forwards_what_it_cannot_read() -> None:
    a, b = pair()
    c = Replica("c", clock=lambda: NOW)
    a.declare("api", requires={"exists": "replica:a"})
    raw_write(a, {field("api", "q"): entry(NEWER, "[" * 200 + "]" * 200)})
    b.merge(a.delta())
    c.merge(b.delta())
    for replica in (b, c):
        assert replica.status("api") is Status.UNDETERMINED
        audit(replica)


@pytest.mark.parametrize(
    ("name", "payload", "label", "problem"),
    [
        ("k", "{", "kind", "undecodable"),
        ("k", "5", "kind", "kind is a number 5, not a string or null"),
        ("o", "[1]", "owner", "owner is a list [1], not a string or null"),
        ("o", "", "owner", "empty payload"),
    ],
)
def test_unreadable_kind_and_owner_are_counted_and_named(
    name: str, payload: str, label: str, problem: str
) -> None:
    a, b = pair()
    a.declare("db", kind="postgres")
    b.merge(a.delta())
    raw_write(a, {field("db", name): entry(NEWER, payload)})
    b.merge(a.delta())
    view = b.entity("db")
    assert view is not None
    assert getattr(view, label) is None
    assert b.status("db") is Status.EXISTS  # neither decides existence
    assert problem in b.why("db")["unreadable"][label]
    assert b.unreadable == 1


@pytest.mark.parametrize("payload", ["{", "5", "'yes", "n"])
def test_an_unreadable_retracted_flag_leaves_the_entity_undetermined(payload: str) -> None:
    a, b = pair()
    a.declare("db", attrs={"port": 5432})
    a.declare("api", requires={"exists": "db"})
    a.declare("reader", requires=attr("db", "port", "eq", 5432))
    raw_write(a, {field("db", "x"): entry(NEWER, payload)})
    b.merge(a.delta())
    assert b.status("db") is Status.UNDETERMINED
    assert b.entity("db").reason.startswith("unreadable retracted flag")  # type: ignore[union-attr]
    assert "retracted" in b.why("db")["unreadable"]
    assert b.status("api") is Status.UNDETERMINED
    assert b.status("reader") is Status.UNDETERMINED
    audit(b)
    # A readable flag written after it settles it.
    raw_write(a, {field("db", "x"): entry(NEWER + 1, "t")})
    b.merge(a.delta())
    assert b.status("db") is Status.ABSENT
    assert b.status("api") is Status.ABSENT
    audit(b)


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        (attr("db", "port", "eq", 5432), Status.UNDETERMINED),
        (attr("db", "port", "present"), Status.UNDETERMINED),
        (attr("db", "port", "ne", 1), Status.UNDETERMINED),
        (attr("db", "other", "present"), Status.EXISTS),
    ],
)
def test_an_unreadable_attribute_is_unknown_not_missing(
    clause: dict[str, Any], expected: Status
) -> None:
    a, b = pair()
    a.declare("db", attrs={"port": 5432, "other": 1})
    a.declare("api", requires=clause)
    b.merge(a.delta())
    assert b.status("api") is Status.EXISTS
    raw_write(a, {field("db", "a\x1fport"): entry(NEWER, "[" * 129 + "]" * 129)})
    b.merge(a.delta())
    assert b.status("api") is expected
    view = b.entity("db")
    assert view is not None
    assert "port" not in view.attrs
    assert "nested deeper" in b.why("db")["unreadable"]["attrs.port"]
    if expected is Status.UNDETERMINED:
        assert "nested deeper" in b.why("api")["because"]["unreadable"]
    audit(b)


def test_an_unreadable_observation_replaces_the_older_one_and_is_named() -> None:
    a, b = pair()
    a.declare("db")
    a.declare("api", requires=observed("db", within=60))
    a.declare("down", requires={"not": observed("db", within=60)})
    raw_write(a, {"s\x1fdb": entry(900_000, "[true,null,990.0,null]")})
    b.merge(a.delta())
    assert b.status("api") is Status.EXISTS
    assert [o.observer for o in b.observations("db")] == ["mallory"]

    raw_write(a, {"s\x1fdb": entry(NEWER, "[true,null,1e400,null]")})
    b.merge(a.delta())
    # The older, readable observation no longer stands as evidence, and the unreadable
    # one decides neither way.
    assert b.status("api") is Status.UNDETERMINED
    assert b.status("down") is Status.UNDETERMINED
    assert b.observations("db") == []
    assert "1 unreadable" in b.entity("api").reason  # type: ignore[union-attr]
    facts = b.why("api")["because"]
    assert facts["unreadable"] == 1
    assert facts["observations"][0]["observer"] == "mallory"
    assert "finite" in facts["observations"][0]["unreadable"]
    assert b.unreadable == 1
    assert "finite" in b.why("db")["unreadable"]["observation by mallory"]
    audit(b)

    # Another observer's fresh observation is enough on its own.
    b.observe("db")
    assert b.status("api") is Status.EXISTS
    assert b.status("down") is Status.ABSENT
    audit(b)


@pytest.mark.parametrize(
    "payload",
    ["[true,null]", '"ok"', "[1,null,900.0,null]", "[true,null,900.0,-1]", "{"],
)
def test_observations_of_the_wrong_shape_are_unreadable(payload: str) -> None:
    a, b = pair()
    a.declare("api", requires=observed("db", within=60))
    raw_write(a, {"s\x1fdb": entry(NEWER, payload)})
    b.merge(a.delta())
    assert b.status("api") is Status.UNDETERMINED
    assert b.unreadable == 1
    audit(b)


def test_entries_without_a_stamp_are_counted() -> None:
    a, b = pair()
    raw_write(a, {field("db", "x"): "no stamp", "zzz": entry(NEWER, "t")})
    b.merge(a.delta())
    assert b.entity("db") is None
    assert b.unreadable == 2


def test_a_deep_observation_value_within_the_limit_is_read() -> None:
    a, b = pair()
    deep: Any = 0
    for _ in range(MAX_DEPTH):
        deep = [deep]
    a.observe("db", value=deep)
    b.merge(a.delta())
    assert b.observations("db")[0].value == deep
    assert b.unreadable == 0


def test_entries_that_are_no_strings_are_counted() -> None:
    a, b = pair()
    raw_write(a, {field("db", "x"): 5, field("db", "k"): Map({"x": "y"})})
    b.merge(a.delta())
    assert b.unreadable == 2
    restored = Replica.restore("c", [b.delta()], clock=lambda: NOW)
    assert restored.unreadable == 2


PAYLOADS = st.sampled_from(
    [
        "t",
        "f",
        "n",
        "5",
        "'x",
        "{",
        "",
        "[" * 200 + "]" * 200,
        '{"exists":"e0"}',
        '{"exists":"e1"}',
        '{"not":{"exists":"e2"}}',
        '{"any":[{"exists":"e1"},{"exists":"e2"}]}',
        '{"attr":["e0","v"],"op":"eq","value":1}',
        '{"observed":"e1","within":60}',
        "[true,null,990.0,null]",
        "[true,null,1e400,null]",
        '{"exists":',
    ]
)
WRITES = st.lists(
    st.tuples(
        st.sampled_from(["e0", "e1", "e2"]),
        st.sampled_from(["q", "x", "k", "a\x1fv", "s"]),
        PAYLOADS,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=examples(150), deadline=None)
@given(writes=WRITES)
def test_whatever_a_raw_writer_writes_replicas_agree(writes: list[tuple[str, str, str]]) -> None:
    a, b = pair()
    a.declare("e0", attrs={"v": 1})
    a.declare("e1", requires={"exists": "e0"})
    a.declare("e2", requires={"not": {"exists": "e1"}})
    b.merge(a.delta())
    for stamp, (entity, name, payload) in enumerate(writes, start=NEWER):
        key = f"s\x1f{entity}" if name == "s" else field(entity, name)
        raw_write(a, {key: entry(stamp, payload)})
        b.merge(a.delta())
        audit(b)
    for entity in ("e0", "e1", "e2"):
        b.why(entity, depth=5)
        b.entity(entity)
    # A replica that starts from the same state derives the same statuses.
    fresh = Replica("c", clock=lambda: NOW)
    fresh.merge(b.delta())
    assert {e: fresh.status(e) for e in ("e0", "e1", "e2")} == {
        e: b.status(e) for e in ("e0", "e1", "e2")
    }
