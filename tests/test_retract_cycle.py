"""Retracting a member of a cycle: its old rule no longer counts as an edge, events come
dependencies first whatever the names, and no reason blames a cycle that is gone."""

from __future__ import annotations

import pytest

from sphaera_crdt import Change, Replica, Status, any_of, exists


def cycle(first: str, second: str) -> tuple[Replica, list[Change]]:
    """``first`` needs ``second`` or ``base``; ``second`` needs ``first``."""
    replica = Replica("r", clock=lambda: 1000.0)
    replica.declare("base")
    replica.declare(first, requires=any_of(exists(second), exists("base")))
    replica.declare(second, requires=exists(first))
    assert replica.status(first) is Status.EXISTS
    assert replica.status(second) is Status.EXISTS
    changes: list[Change] = []
    replica.subscribe(changes.append)
    return replica, changes


def audit(replica: Replica) -> None:
    current = {
        entity_id: view.status
        for entity_id, view in replica.entities().items()
        if view.status is not Status.ABSENT
    }
    assert replica.derive_all() == current


@pytest.mark.parametrize(("first", "second"), [("z", "b"), ("b", "z"), ("a", "a2")])
def test_retracting_a_member_reports_it_first_and_blames_no_cycle(first: str, second: str) -> None:
    replica, changes = cycle(first, second)
    replica.retract(first)
    assert [(c.entity, c.after, c.reason) for c in changes] == [
        (first, Status.ABSENT, "retracted"),
        (second, Status.ABSENT, f"{first} is absent"),
    ]
    tree = replica.why(second)
    assert "cycle" not in tree
    assert "cycle" not in tree["because"]["dependency"]
    assert "cycle" not in replica.why(first)
    audit(replica)


def test_a_retracted_member_rejoins_its_cycle_when_declared_again() -> None:
    replica, changes = cycle("z", "b")
    replica.retract("z")
    replica.retract("base")
    changes.clear()
    replica.declare("z", requires=any_of(exists("b"), exists("base")))
    # Back in the cycle, with no outside support: both stay absent, and now it is the cycle.
    assert replica.status("z") is Status.ABSENT
    assert replica.entity("b").reason == "supported only by a cycle: b, z"  # type: ignore[union-attr]
    assert replica.why("b")["cycle"] == ["b", "z"]
    audit(replica)
    replica.declare("base")
    # Members of one cycle depend on each other: only base must come before them.
    assert changes[0].entity == "base"
    assert {c.entity for c in changes} == {"base", "z", "b"}
    audit(replica)


def test_a_full_derivation_places_a_retracted_member_outside_its_cycle() -> None:
    replica, _ = cycle("z", "b")
    replica.retract("z")
    restored = Replica.restore("r", [replica.delta()], clock=lambda: 1000.0)
    assert restored.status("b") is Status.ABSENT
    assert restored.entity("b").reason == "z is absent"  # type: ignore[union-attr]
    assert "cycle" not in restored.why("b")
    audit(restored)


def test_a_longer_cycle_opens_where_a_member_is_retracted() -> None:
    replica = Replica("r", clock=lambda: 1000.0)
    replica.declare("base")
    # y -> x -> w -> v -> y, with outside support at y: all exist.
    replica.declare("y", requires=any_of(exists("x"), exists("base")))
    replica.declare("x", requires=exists("w"))
    replica.declare("w", requires=exists("v"))
    replica.declare("v", requires=exists("y"))
    changes: list[Change] = []
    replica.subscribe(changes.append)
    replica.retract("w")
    # x depends on w; y and v keep their support from base.
    assert [(c.entity, c.after) for c in changes] == [("w", Status.ABSENT), ("x", Status.ABSENT)]
    for entity in ("v", "x", "y"):
        assert "cycle" not in replica.why(entity, depth=10)
    assert replica.entity("x").reason == "w is absent"  # type: ignore[union-attr]
    audit(replica)
