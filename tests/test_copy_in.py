"""Values are copied on the way in: mutating the caller's lists and dicts afterwards
changes nothing, on this replica or any other, and incremental results still equal a full
derivation."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from sphaera_crdt import Replica, Status, all_of, any_of, at_least, attr, call, not_, observed

NOW = 1000.0


def audit(replica: Replica) -> None:
    current = {
        entity_id: view.status
        for entity_id, view in replica.entities().items()
        if view.status is not Status.ABSENT
    }
    assert replica.derive_all() == current


def test_mutating_declared_attrs_changes_nothing() -> None:
    a = Replica("a", clock=lambda: NOW)
    tags = ["x"]
    config = {"port": 5432, "hosts": ["h1"]}
    a.declare("db", attrs={"tags": tags, "config": config})
    a.declare("api", requires=attr("db", "tags", "eq", ["x"]))
    tags.append("y")
    config["hosts"].append("h2")  # type: ignore[attr-defined]
    config["port"] = 1
    a.tick()
    view = a.entity("db")
    assert view is not None
    assert view.attrs == {"tags": ["x"], "config": {"port": 5432, "hosts": ["h1"]}}
    assert a.status("api") is Status.EXISTS
    audit(a)


def test_mutating_updated_attrs_changes_nothing() -> None:
    a = Replica("a", clock=lambda: NOW)
    a.declare("db")
    a.declare("api", requires=attr("db", "tags", "contains", "x"))
    tags = ["x"]
    a.update("db", {"tags": tags})
    assert a.status("api") is Status.EXISTS
    tags.clear()
    a.tick()
    assert a.entity("db").attrs == {"tags": ["x"]}  # type: ignore[union-attr]
    assert a.status("api") is Status.EXISTS
    audit(a)


def test_mutating_a_requires_after_declaring_changes_nothing() -> None:
    a = Replica("a", clock=lambda: NOW)
    a.declare("db", attrs={"role": "primary"})
    allowed = ["primary"]
    requires: dict[str, Any] = {"attr": ["db", "role"], "op": "in", "value": allowed}
    a.declare("api", requires=requires)
    assert a.status("api") is Status.EXISTS
    allowed[0] = "replica"
    requires["op"] = "eq"
    a.update("db", {"role": "primary"})  # re-evaluates api
    assert a.status("api") is Status.EXISTS
    assert a.entity("api").requires == {  # type: ignore[union-attr]
        "attr": ["db", "role"],
        "op": "in",
        "value": ["primary"],
    }
    audit(a)


def test_builders_copy_what_they_are_given() -> None:
    allowed = [1, 2]
    clause = attr("db", "n", "in", allowed)
    args = {"names": ["a"]}
    predicate = call("p", **args)
    inner = observed("db", within=5, by=["r1"])
    outer = all_of(inner, not_(clause))
    allowed.append(3)
    args["names"].append("b")
    inner["by"].append("r2")
    assert clause["value"] == [1, 2]
    assert predicate["args"] == {"names": ["a"]}
    assert outer["all"][0]["by"] == ["r1"]
    built = any_of(clause)
    clause["value"].append(4)
    assert built["any"][0]["value"] == [1, 2]
    assert at_least(1, clause)["of"][0] is not clause


def test_mutating_an_observed_value_changes_nothing() -> None:
    a = Replica("a", clock=lambda: NOW)
    a.declare("api", requires=attr("db", "x", "present"))
    value = {"load": [1, 2]}
    observation = a.observe("db", value=value)
    value["load"].append(3)
    assert a.observations("db")[0].value == {"load": [1, 2]}
    assert observation.value is value  # the caller's own object is handed back to it
    b = Replica("b", clock=lambda: NOW)
    b.merge(a.delta())
    assert b.observations("db")[0].value == {"load": [1, 2]}


def test_mutating_an_explanation_changes_nothing() -> None:
    a = Replica("a", clock=lambda: NOW)
    a.declare("db", attrs={"tags": ["x"]})
    a.declare("api", requires=attr("db", "tags", "eq", ["x"]))
    tree = a.why("api")
    tree["because"]["expected"].append("y")
    tree["because"]["actual"].append("y")
    a.update("db", {"tags": ["x"]})
    assert a.status("api") is Status.EXISTS
    assert a.why("api")["because"]["expected"] == ["x"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@settings(max_examples=examples(60), deadline=None)
@given(first=JSON, second=JSON, mutation=JSON)
def test_whatever_the_caller_mutates_replicas_agree_with_a_full_derivation(
    first: Any, second: Any, mutation: Any
) -> None:
    a = Replica("a", clock=lambda: NOW)
    b = Replica("b", clock=lambda: NOW)
    expected = [first]
    value = [first]
    a.declare("db", attrs={"v": value})
    a.declare("eq", requires=attr("db", "v", "eq", expected))
    a.declare("in", requires=attr("db", "v", "in", [expected]))
    a.declare("has", requires=attr("db", "v", "contains", first))
    before = {name: a.status(name) for name in ("eq", "in", "has")}
    assert before == {"eq": Status.EXISTS, "in": Status.EXISTS, "has": Status.EXISTS}
    # The caller goes on using its objects (differently, so that no rule holds by luck).
    value.append(mutation)
    expected.append({"not": mutation})
    if isinstance(first, list):
        first.append(mutation)
    elif isinstance(first, dict):
        first["mutated"] = mutation
    a.update("db", {"w": second})
    b.merge(a.delta())
    for replica in (a, b):
        assert {name: replica.status(name) for name in before} == before
        assert replica.entity("db").attrs["v"] != value  # type: ignore[union-attr]
        audit(replica)
