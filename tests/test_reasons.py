"""Reasons say what decided: counts read "k fresh observations, n needed", the reason names
the deciding clause, and ``why()`` lists the deciding atoms as data (``decided_by``).

The property: after a random history (declares, retracts, updates, observations from
several replicas with times and ttls, merges, the clock moving on), every deciding atom
named anywhere in every ``why()`` tree has, read through its ``not``s, the value of the
status it explains; and its own value, checked by declaring the atom as the whole rule of
a probe entity on a replica restored from the same state at the same instant, is the
value the tree gives it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from test_existence_properties import (
    World,
    _predicates,
    profile,
    run_step,
    seeded_world,
)

from sphaera_crdt import Replica, Status, all_of, any_of, at_least, exists, not_, observed
from sphaera_crdt.core.explain import MAX_REASON_ATOMS
from sphaera_crdt.net.openapi import openapi_document
from sphaera_crdt.why_text import render_why

SCHEMA = openapi_document()["components"]["schemas"]["Explanation"]
VALUE_OF_STATUS = {"exists": "true", "absent": "false", "undetermined": "unknown"}
FLIP = {"true": "false", "false": "true", "unknown": "unknown"}
#: "k of n", which must never read with k above n.
K_OF_N = re.compile(r"\b(\d+) of (\d+)\b")


def make(t: list[float], name: str = "r") -> Replica:
    return Replica(name, clock=lambda: t[0])


def reason(replica: Replica, entity: str) -> str:
    view = replica.entity(entity)
    assert view is not None
    return view.reason


def deciders(replica: Replica, entity: str) -> list[dict[str, Any]]:
    return list(replica.why(entity)["decided_by"])


# -- counts --------------------------------------------------------------------------------------


def test_more_fresh_observations_than_needed_do_not_read_k_of_n() -> None:
    t = [100.0]
    r, other = make(t), make(t, "o")
    r.declare("q", requires=observed("db", within=10))
    r.observe("db")
    other.observe("db")
    r.merge(other.delta(r.state_vector()))
    text = reason(r, "q")
    assert "2 of 1" not in text
    assert text == "requirements hold: 2 fresh observations of db within 10s, 1 needed"


def test_counts_in_words_singular_plural_quorum_observers_and_not_ok() -> None:
    t = [0.0]
    r = make(t)
    r.declare("one", requires=observed("db", within=5))
    r.declare("two", requires=observed("db", within=5, by=["o1", "r"], quorum=2))
    r.declare("down", requires=observed("db", within=5, ok=False, by="self"))
    r.observe("db")
    assert reason(r, "one") == "requirements hold: 1 fresh observation of db within 5s, 1 needed"
    assert reason(r, "two") == "1 fresh observation of db by o1, r within 5s, 2 needed"
    assert reason(r, "down") == ("0 fresh not-ok observations of db by self within 5s, 1 needed")


# -- the clause that decided ---------------------------------------------------------------------


def test_an_observation_that_decided_is_named_beside_the_entity() -> None:
    """all(exists db, observed db) exists: both hold, and both are named (the reason once
    said only "requirements hold: db exists")."""
    t = [0.0]
    r = make(t)
    r.declare("db")
    r.declare("api", requires=all_of(exists("db"), observed("db", within=10)))
    r.observe("db")
    text = reason(r, "api")
    assert text != "requirements hold: db exists"
    assert text == "requirements hold: db exists; 1 fresh observation of db within 10s, 1 needed"
    assert [(d["clause"], d["value"]) for d in deciders(r, "api")] == [
        ("exists", "true"),
        ("observed", "true"),
    ]
    t[0] = 11.0
    r.tick()
    # Now only the stale observation decides: db still exists, and is not named.
    assert reason(r, "api") == "0 fresh observations of db within 10s, 1 needed"
    [stale] = deciders(r, "api")
    assert stale == {
        "clause": "observed",
        "value": "false",
        "negated": False,
        "text": "0 fresh observations of db within 10s, 1 needed",
        "subject": "db",
        "within": 10,
        "by": "*",
        "quorum": 1,
        "ok": True,
        "fresh": 0,
    }


def test_an_any_names_its_first_true_child_and_a_false_one_names_them_all() -> None:
    t = [0.0]
    r = make(t)
    r.declare("e", requires=any_of(exists("db"), observed("db", within=10)))
    r.observe("db")
    assert reason(r, "e") == "requirements hold: 1 fresh observation of db within 10s, 1 needed"
    r.declare("f", requires=any_of(exists("x"), exists("y")))
    assert reason(r, "f") == "x is absent; y is absent"
    assert [d["entity"] for d in deciders(r, "f")] == ["x", "y"]


def test_at_least_names_the_set_that_decided() -> None:
    r = make([0.0])
    for name in ("a", "b", "c"):
        r.declare(name)
    r.declare("two", requires=at_least(2, exists("x"), exists("a"), exists("b"), exists("c")))
    assert reason(r, "two") == "requirements hold: a exists; b exists"
    # needs 2 of x, y, a: two are absent, so at most one can hold; both absent ones decide
    r.declare("three", requires=at_least(2, exists("x"), exists("y"), exists("a")))
    assert reason(r, "three") == "x is absent; y is absent"
    # needs all 3: one absent is enough to decide
    r.declare("all3", requires=at_least(3, exists("x"), exists("y"), exists("a")))
    assert reason(r, "all3") == "x is absent"
    r.declare("many", requires=at_least(3, exists("a")))
    assert reason(r, "many") == "3 clauses needed, only 1 given"
    r.declare("none", requires=at_least(0, exists("x")))
    assert reason(r, "none") == "requirements hold: no clause needed (at_least 0)"


def test_not_names_its_inner_clause_turned_round() -> None:
    r = make([0.0])
    r.declare("db")
    r.declare("quiet", requires=not_(exists("db")))
    assert reason(r, "quiet") == "db exists"
    [inner] = deciders(r, "quiet")
    assert (inner["entity"], inner["value"], inner["negated"]) == ("db", "true", True)


def test_a_long_all_names_a_few_and_counts_the_rest() -> None:
    r = make([0.0])
    for i in range(6):
        r.declare(f"d{i}")
    r.declare("e", requires=all_of(*(exists(f"d{i}") for i in range(6))))
    shown = "; ".join(f"d{i} exists" for i in range(MAX_REASON_ATOMS))
    assert reason(r, "e") == f"requirements hold: {shown}; and {6 - MAX_REASON_ATOMS} more"
    assert [d["entity"] for d in deciders(r, "e")] == [f"d{i}" for i in range(6)]


def test_why_gives_the_instants_a_reader_needs_and_the_clock_it_was_read_at() -> None:
    t = [100.0]
    r = make(t)
    r.declare("api", requires=observed("db", within=10))
    r.observe("db", ttl=4)
    t[0] = 103.0
    tree = r.why("api")
    assert tree["now"] == 103.0
    [item] = tree["because"]["observations"]
    assert item["fresh"] is True and 104.0 < item["expires_at"] <= 104.0 + 1e-9


# -- the property --------------------------------------------------------------------------------


def entity_objects(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object of a tree that explains an entity (not a chain's summary)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "entity" in item and "status" in item and "reason" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def atom_constraint(atom: dict[str, Any]) -> Any:
    """The atom, rebuilt from its data in the tree as constraint data (``None`` for a
    connective that decided by its shape alone)."""
    clause = atom["clause"]
    if clause == "exists":
        return {"exists": atom["entity"]}
    if clause == "observed":
        keys = ("within", "by", "quorum", "ok")
        return {"observed": atom["subject"], **{key: atom[key] for key in keys}}
    if clause == "attr":
        rebuilt = {"attr": [atom["entity"], atom["path"]], "op": atom["op"]}
        if "expected" in atom:
            rebuilt["value"] = atom["expected"]
        return rebuilt
    if clause == "call":
        return {"call": atom["name"], "args": atom["args"]}
    if clause == "const":
        return atom["constant"]
    return None


def shape_value(atom: dict[str, Any]) -> str:
    """The value of a connective that decides by its shape alone."""
    clause, of = atom["clause"], atom["of"]
    if clause == "all":
        assert of == 0
        return "true"
    if clause == "any":
        assert of == 0
        return "false"
    assert clause == "at_least"
    assert atom["need"] <= 0 or atom["need"] > of
    return "true" if atom["need"] <= 0 else "false"


@profile(200)
@given(seeded_world())
def test_every_deciding_atom_has_the_value_of_the_status_it_explains(
    case: tuple[int, list[Any], list[Any]],
) -> None:
    n, initial, steps = case
    world = World(n)
    for i, requires in enumerate(initial):
        world.main.declare(f"e{i}", requires=requires)
    for step in steps:
        run_step(world, step)
    main = world.main
    now = world.t[0]
    main.tick()
    probe = Replica.restore(
        "main", [main.delta()], clock=lambda: now, predicates=_predicates(), declare_self=False
    )
    checked: dict[str, str] = {}  # constraint (as text) -> its value on the probe replica
    for entity in world.ids:
        tree = main.why(entity)
        assert tree["now"] == now
        # Every tree reads as text too, headed by the entity and its status.
        assert render_why(tree).splitlines()[:2] == [
            f"{entity}: {tree['status']}",
            f"  reason: {tree['reason']}",
        ]
        for explained in entity_objects(tree):
            for k, n_ in K_OF_N.findall(explained["reason"]):
                assert int(k) <= int(n_), explained["reason"]
            # The published schema names every field of every entity in the tree.
            assert set(explained) <= set(SCHEMA["properties"]), set(explained)
            assert set(SCHEMA["required"]) <= set(explained)
            atoms = explained.get("decided_by", [])
            want = VALUE_OF_STATUS[explained["status"]]
            for atom in atoms:
                assert set(SCHEMA["properties"]["decided_by"]["items"]["required"]) <= set(atom)
                seen = FLIP[atom["value"]] if atom["negated"] else atom["value"]
                assert seen == want, (entity, explained, atom)
                constraint = atom_constraint(atom)
                if constraint is None:
                    assert atom["value"] == shape_value(atom), atom
                    continue
                key = repr(constraint)
                if key not in checked:
                    name = f"probe{len(checked)}"
                    probe.declare(name, requires=constraint)
                    checked[key] = VALUE_OF_STATUS[probe.status(name).value]
                assert checked[key] == atom["value"], (atom, constraint)
            if atoms and not explained["reason"].startswith(
                ("unresolved cycle", "supported only by a cycle")
            ):
                # The reason names the deciding atoms, in the order of decided_by.
                assert atoms[0]["text"] in explained["reason"], (explained, atoms)
            # A few atoms at most, then "and N more" (an atom's words hold no "; ").
            assert explained["reason"].count("; ") <= MAX_REASON_ATOMS, explained["reason"]
            if explained["status"] != Status.EXISTS.value:
                assert not explained["reason"].startswith("requirements hold")
