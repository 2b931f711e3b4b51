"""Explanations: ``why(e)`` trees and the one-line reasons of entities and changes."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from sphaera_crdt import (
    Change,
    Replica,
    Status,
    all_of,
    any_of,
    at_least,
    attr,
    call,
    exists,
    not_,
    observed,
)

EXISTS, ABSENT, UNDETERMINED = Status.EXISTS, Status.ABSENT, Status.UNDETERMINED


def make(t: list[float] | None = None, name: str = "r", **predicates: Any) -> Replica:
    clock = t if t is not None else [0.0]
    return Replica(name, clock=lambda: clock[0], predicates=predicates)


def nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in an explanation tree."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


def why(replica: Replica, entity: str, **kwargs: Any) -> dict[str, Any]:
    """``replica.why`` checked to be plain JSON (it survives a round trip unchanged)."""
    tree = replica.why(entity, **kwargs)
    assert json.loads(json.dumps(tree)) == tree
    assert tree["entity"] == entity
    assert tree["status"] == replica.status(entity).value
    view = replica.entity(entity)
    if view is not None:
        assert tree["reason"] == view.reason
    return tree


def reason(replica: Replica, entity: str) -> str:
    view = replica.entity(entity)
    assert view is not None
    return view.reason


# -- the simple cases --------------------------------------------------------------------------


def test_why_of_undeclared_retracted_and_unconditional_entities() -> None:
    r = make()
    assert why(r, "ghost") == {
        "entity": "ghost",
        "status": "absent",
        "reason": "undeclared",
        "now": 0.0,
    }
    r.declare("db")
    assert why(r, "db") == {
        "entity": "db",
        "status": "exists",
        "reason": "declared with no requirements",
        "now": 0.0,
    }
    r.retract("db")
    assert why(r, "db")["reason"] == "retracted"


def test_why_names_the_absent_dependency_and_why_it_is_absent() -> None:
    r = make()
    r.declare("db")
    r.declare("cache")
    r.declare("api", requires=all_of(exists("cache"), exists("db"), True))
    r.retract("db")
    tree = why(r, "api")
    assert tree["status"] == "absent"
    assert "db" in tree["reason"]
    because = tree["because"]
    assert (because["clause"], because["value"]) == ("all", "false")
    # only the deciding clause is listed: the false one, not the true ones
    [deciding] = because["deciding"]
    assert deciding["clause"] == "exists"
    assert deciding["entity"] == "db"
    assert deciding["value"] == "false"
    assert deciding["dependency"]["reason"] == "retracted"


def test_why_of_an_any_lists_the_true_clauses() -> None:
    r = make()
    r.declare("a")
    r.declare("b")
    r.declare("e", requires=any_of(exists("a"), exists("missing"), exists("b")))
    tree = why(r, "e")
    assert tree["status"] == "exists"
    deciding = tree["because"]["deciding"]
    assert [d["entity"] for d in deciding] == ["a", "b"]


def test_why_of_not_and_at_least() -> None:
    r = make()
    r.declare("db")
    r.declare("e", requires=not_(exists("db")))
    r.declare("k", requires=at_least(2, exists("db"), exists("x"), exists("y")))
    tree = why(r, "e")
    assert tree["because"]["clause"] == "not"
    assert tree["because"]["deciding"][0]["entity"] == "db"
    assert tree["because"]["deciding"][0]["value"] == "true"
    k = why(r, "k")["because"]
    assert (k["clause"], k["need"], k["value"]) == ("at_least", 2, "false")
    assert sorted(d["entity"] for d in k["deciding"]) == ["x", "y"]


def test_why_lists_at_most_a_few_children_and_counts_the_rest() -> None:
    r = make()
    r.declare("e", requires=all_of(*(exists(f"d{i}") for i in range(50))))
    tree = why(r, "e")
    because = tree["because"]
    assert len(because["deciding"]) < 50
    assert len(because["deciding"]) + because["more"] == 50
    assert len(json.dumps(tree)) < 4000


# -- observations ------------------------------------------------------------------------------


def test_why_names_the_stale_observation_and_since_when() -> None:
    t = [100.0]
    r = make(t)
    r.declare("api", requires=observed("db", within=10))
    r.observe("db", ttl=4)  # at 100, fresh until 104 (the ttl is shorter than the window)
    tree = why(r, "api")
    [fresh] = tree["because"]["observations"]
    assert fresh["fresh"] is True and "stale_since" not in fresh
    t[0] = 107.0
    r.tick()
    tree = why(r, "api")
    assert tree["status"] == "absent"
    clause = tree["because"]
    assert clause["clause"] == "observed"
    assert (clause["subject"], clause["within"], clause["quorum"], clause["fresh"]) == (
        "db",
        10,
        1,
        0,
    )
    [item] = clause["observations"]
    assert item["observer"] == "r"
    assert item["fresh"] is False
    assert item["at"] == 100.0
    assert item["age"] == 7.0
    # stale from the first instant after at + min(within, ttl)
    since = item["stale_since"]
    assert since - 100.0 > 4.0
    assert math.nextafter(since, -math.inf) - 100.0 <= 4.0
    assert "db" in tree["reason"]


def test_why_of_an_observation_deep_in_the_tree() -> None:
    t = [0.0]
    r = make(t)
    r.declare("db", requires=observed("db-host", within=5))
    r.declare("api", requires=exists("db"))
    r.declare("web", requires=exists("api"))
    r.observe("db-host")
    t[0] = 6.0
    r.tick()
    tree = why(r, "web")
    stale = [n for n in nodes(tree) if "stale_since" in n]
    assert [(n["observer"], n["stale_since"]) for n in stale] == [
        ("r", math.nextafter(5.0, math.inf))
    ]


def test_why_of_quorum_and_by() -> None:
    t = [0.0]
    main, o1, o2 = make(t, "main"), make(t, "o1"), make(t, "o2")
    main.declare("api", requires=observed("db", within=10, by=["o1", "o2"], quorum=2))
    o1.observe("db")
    o2.observe("db", ok=False)
    main.observe("db")  # not in the by list
    for peer in (o1, o2):
        main.merge(peer.delta(main.state_vector()))
    clause = why(main, "api")["because"]
    assert clause["by"] == ["o1", "o2"]
    assert clause["quorum"] == 2
    assert clause["fresh"] == 1
    assert [(o["observer"], o["ok"]) for o in clause["observations"]] == [
        ("o1", True),
        ("o2", False),
    ]


# -- attributes and predicates -----------------------------------------------------------------


def test_why_of_attr_clauses_shows_the_actual_value_or_what_is_missing() -> None:
    r = make()
    r.declare("db", attrs={"port": 5432, "meta": {"zone": "eu"}})
    r.declare("e", requires=all_of(attr("db", "port", "eq", 1), attr("db", "meta.rack", "present")))
    clauses = why(r, "e")["because"]["deciding"]
    port, rack = clauses
    assert (port["path"], port["op"], port["expected"], port["actual"]) == ("port", "eq", 1, 5432)
    assert rack["path"] == "meta.rack" and "missing" in rack and "expected" not in rack
    r.declare("gone", requires=attr("nobody", "port", "present"))
    assert why(r, "gone")["because"]["missing"] == "undeclared"


def test_why_of_predicates_names_them() -> None:
    r = make(dunno=lambda: None)
    r.declare("e", requires=all_of(True, call("dunno"), call("nope", x=1)))
    tree = why(r, "e")
    assert tree["status"] == "undetermined"
    assert "dunno" in tree["reason"] or "nope" in tree["reason"]
    calls = {n["name"]: n for n in nodes(tree) if n.get("clause") == "call"}
    assert set(calls) == {"dunno", "nope"}
    assert calls["nope"]["args"] == {"x": 1}
    assert "nope" in calls["nope"]["error"]
    assert "error" not in calls["dunno"]


def test_why_of_a_malformed_constraint(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make()
    # as if a peer had written it: validation is skipped
    monkeypatch.setattr(r, "_check_requires", lambda entity_id, requires: requires)
    r.declare("q", requires={"exists": 3})
    tree = why(r, "q")
    assert tree["status"] == "undetermined"
    assert "malformed" in tree["reason"]


# -- cycles ------------------------------------------------------------------------------------


def test_why_names_the_cycle_that_left_an_entity_undetermined() -> None:
    r = make()
    r.declare("p", requires=not_(exists("q")))
    r.declare("q", requires=not_(exists("p")))
    tree = why(r, "p")
    assert tree["status"] == "undetermined"
    assert tree["cycle"] == ["p", "q"]
    assert "cycle" in tree["reason"] and "negation" in tree["reason"]
    assert "p" in tree["reason"] and "q" in tree["reason"]
    # the tree stops where it comes back round
    assert any(n.get("see") for n in nodes(tree))
    r.declare("x", requires=not_(exists("x")))
    assert why(r, "x")["cycle"] == ["x"]


def test_why_of_an_unsupported_positive_cycle() -> None:
    r = make()
    r.declare("a", requires=exists("b"))
    r.declare("b", requires=exists("a"))
    tree = why(r, "a")
    assert tree["status"] == "absent"
    assert tree["cycle"] == ["a", "b"]
    assert "cycle" in tree["reason"]


def test_an_entity_outside_a_cycle_has_no_cycle_key() -> None:
    r = make()
    r.declare("db")
    r.declare("api", requires=exists("db"))
    assert "cycle" not in why(r, "api")


# -- size ---------------------------------------------------------------------------------------


def test_a_100_deep_chain_is_explained_briefly_and_names_its_end() -> None:
    t = [0.0]
    r = make(t)
    for i in range(100):
        r.declare(f"c{i}", requires=all_of(exists(f"c{i + 1}"), True))
    r.declare("c100", requires=observed("db", within=5))
    r.observe("db")
    assert r.status("c0") is EXISTS
    t[0] = 6.0
    r.tick()
    assert r.status("c0") is ABSENT
    tree = why(r, "c0")
    text = json.dumps(tree)
    assert len(text) < 4000
    assert "c100" in text
    chains = [n["chain"] for n in nodes(tree) if "chain" in n]
    assert len(chains) == 1
    chain = chains[0]
    assert chain["ends_at"] == "c100"
    assert chain["status"] == "absent"
    assert "db" in chain["reason"]


def test_a_deep_chain_ending_in_an_undeclared_entity() -> None:
    r = make()
    for i in range(300):
        r.declare(f"c{i}", requires=exists(f"c{i + 1}"))
    text = json.dumps(why(r, "c0"))
    assert len(text) < 4000
    assert "c300" in text and "undeclared" in text


def test_why_depth_controls_how_far_dependencies_are_expanded() -> None:
    r = make()
    for i in range(10):
        r.declare(f"c{i}", requires=exists(f"c{i + 1}"))
    shallow = why(r, "c0", depth=0)
    assert "because" not in shallow
    assert shallow["chain"]["ends_at"] == "c10"
    deep = why(r, "c0", depth=20)
    assert "chain" not in json.dumps(deep)
    assert json.dumps(deep).count('"dependency"') == 10


def test_why_of_a_wide_deep_graph_stays_small() -> None:
    r = make()
    for level in range(6):
        for i in range(8):
            below = [exists(f"n{level + 1}.{j}") for j in range(8)]
            r.declare(f"n{level}.{i}", requires=all_of(*below))
    text = json.dumps(why(r, "n0.0"))
    assert len(text) < 200_000


# -- reasons --------------------------------------------------------------------------------------


def test_the_reason_of_a_change_is_the_reason_of_the_new_status() -> None:
    t = [0.0]
    r = make(t)
    r.declare("api", requires=observed("db", within=1))
    changes: list[Change] = []
    r.subscribe(changes.append)
    r.observe("db")
    t[0] = 2.0
    r.tick()
    assert [c.after for c in changes] == [EXISTS, ABSENT]
    assert changes[-1].reason == reason(r, "api")
    assert "db" in changes[-1].reason


def test_the_reason_of_an_existing_entity_is_readable_text() -> None:
    """The reason names the deciding fact in words. (Regression: it once showed the
    ``(text, entity)`` tuple: ``requirements hold: ('db is exists', 'db')``.)
    """
    r = make()
    r.declare("db")
    r.declare("api", requires=exists("db"))
    text = reason(r, "api")
    assert text.startswith("requirements hold")
    assert "('" not in text and "')" not in text, text


def test_an_entity_blocked_by_a_cycle_member_that_exists_is_not_called_unsupported() -> None:
    """a <- not b, b <- any(a, true): ``a`` is absent because ``b`` exists, not for lack of
    support. (Regression: the reason said "supported only by a cycle: a, b" because the
    deciding atom named a member of a's own cycle, whatever its value.)
    """
    r = make()
    r.declare("a", requires=not_(exists("b")))
    r.declare("b", requires=any_of(exists("a"), True))
    assert (r.status("a"), r.status("b")) == (ABSENT, EXISTS)
    text = reason(r, "a")
    assert "supported only by a cycle" not in text, text
    assert "b" in text


def test_a_positive_cycle_left_unknown_by_a_predicate_is_not_blamed_on_negation() -> None:
    """a <- any(b, call("nope")), b <- a: both are undetermined because the predicate is
    unknown; there is no negation anywhere. (Regression: every undetermined member of a
    cycle was said to be in an "unresolved cycle through negation", and the predicate was
    never named.)
    """
    r = make()
    r.declare("a", requires=any_of(exists("b"), call("nope")))
    r.declare("b", requires=exists("a"))
    assert (r.status("a"), r.status("b")) == (UNDETERMINED, UNDETERMINED)
    text = reason(r, "a")
    assert "negation" not in text, text
    assert "nope" in text, text


def test_a_positive_cycle_left_unknown_by_an_outside_entity_is_not_blamed_on_negation() -> None:
    """The same, with the unknown coming from an entity ``u`` outside the cycle."""
    r = make()
    r.declare("u", requires=call("nope"))
    r.declare("a", requires=any_of(exists("b"), exists("u")))
    r.declare("b", requires=exists("a"))
    assert (r.status("a"), r.status("b")) == (UNDETERMINED, UNDETERMINED)
    text = reason(r, "a")
    assert "negation" not in text, text
    assert "u" in text


def test_why_returns_for_an_observation_stamped_before_the_epoch() -> None:
    """An observation at=-10.0 with ttl=10 (any finite ``at`` is accepted from a peer) puts
    ``at + limit`` at 0. (Regression: formulas.py ``stale_from`` stepped one ulp at a time
    from there while ``t - at <= limit``, crawling through the denormals, so ``why()``,
    which computes ``stale_since`` for every stale observation, never returned; so did
    evaluation at now <= 0. A peer could hang every replica that explains such an entity.)
    """
    t = [0.0]
    peer = make(t, "peer")
    t[0] = -10.0
    peer.observe("db", ttl=10)
    r = make([1000.0])
    r.declare("api", requires=observed("db", within=60))
    r.merge(peer.delta(r.state_vector()))
    assert r.status("api") is ABSENT

    def give_up(signum: int, frame: Any) -> None:
        raise AssertionError("why() did not return within 2 seconds")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        tree = r.why("api")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    [item] = tree["because"]["observations"]
    assert item["fresh"] is False and item["stale_since"] > 0
