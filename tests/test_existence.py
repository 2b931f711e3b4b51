"""Semantics of existence (DESIGN.md section 3), one focused test per rule.

Every replica here runs on an injected clock (``t[0]``); nothing sleeps.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable
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


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    name: str = "r",
    clock: Clock | None = None,
    predicates: dict[str, Callable[..., Any]] | None = None,
) -> Replica:
    return Replica(name, clock=clock or Clock(), predicates=predicates)


def pull(dst: Replica, src: Replica) -> list[Change]:
    return dst.merge(src.delta(dst.state_vector()))


def statuses(replica: Replica, *names: str) -> tuple[Status, ...]:
    return tuple(replica.status(name) for name in names)


def recorded(replica: Replica) -> list[Change]:
    events: list[Change] = []
    replica.subscribe(events.append)
    return events


def assert_full(replica: Replica, *names: str) -> None:
    """The incremental statuses equal a recomputation from scratch."""
    derived = replica.derive_all()
    for name in names:
        assert replica.status(name) == derived.get(name, ABSENT), name


# -- declared, undeclared, retracted -----------------------------------------------------------


def test_undeclared_is_absent_and_declared_without_requirements_exists() -> None:
    r = make()
    assert r.status("nobody") is ABSENT
    assert r.exists("nobody") is False
    assert r.entity("nobody") is None
    r.declare("db")
    assert r.status("db") is EXISTS
    assert r.exists("db") is True
    assert r.status("db") == "exists"  # a str enum
    view = r.entity("db")
    assert view is not None
    assert (view.status, view.reason) == (EXISTS, "declared with no requirements")
    assert r.status(r.replica_entity) is EXISTS


def test_retracted_is_absent_and_redeclaring_brings_it_back() -> None:
    r = make()
    r.declare("db")
    r.declare("api", requires=exists("db"))
    r.retract("db")
    assert statuses(r, "db", "api") == (ABSENT, ABSENT)
    view = r.entity("db")
    assert view is not None and view.status is ABSENT and view.reason == "retracted"
    assert r.entities()["db"].status is ABSENT  # still listed
    r.declare("db")
    assert statuses(r, "db", "api") == (EXISTS, EXISTS)
    r.retract("api")
    assert r.status("api") is ABSENT
    assert r.status("db") is EXISTS


def test_retraction_on_another_replica_propagates() -> None:
    clock = Clock()
    a, b = make("a", clock), make("b", clock)
    a.declare("db")
    b.declare("api", requires=exists("db"))
    pull(b, a)
    assert b.status("api") is EXISTS
    pull(a, b)
    a.retract("db")
    changes = pull(b, a)
    assert [(c.entity, c.before, c.after) for c in changes] == [
        ("db", EXISTS, ABSENT),
        ("api", EXISTS, ABSENT),
    ]


def test_a_requirement_on_an_entity_declared_later() -> None:
    r = make()
    r.declare("api", requires=exists("db"))
    assert r.status("api") is ABSENT
    view = r.entity("api")
    assert view is not None and "db" in view.reason
    r.declare("db")
    assert r.status("api") is EXISTS


# -- three-valued logic --------------------------------------------------------------------------


def _boom(**_: Any) -> bool:
    raise RuntimeError("probe failed")


PREDICATES: dict[str, Callable[..., Any]] = {
    "yes": lambda **_: True,
    "no": lambda **_: False,
    "dunno": lambda **_: None,
    "boom": _boom,
    "truthy": lambda **_: 1,  # not a bool: unknown, not true
    "even": lambda n: n % 2 == 0,
}


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("yes", {}, EXISTS),
        ("no", {}, ABSENT),
        ("dunno", {}, UNDETERMINED),
        ("boom", {}, UNDETERMINED),
        ("truthy", {}, UNDETERMINED),
        ("even", {"n": 2}, EXISTS),
        ("even", {"n": 3}, ABSENT),
        ("even", {"m": 3}, UNDETERMINED),  # a predicate that raises on bad args
        ("missing", {}, UNDETERMINED),
    ],
)
def test_call_predicates_are_three_valued(name: str, args: Any, expected: Status) -> None:
    r = make(predicates=PREDICATES)
    r.declare("e", requires=call(name, **args))
    assert r.status("e") is expected


@pytest.mark.parametrize("name", ["dunno", "boom", "missing"])
def test_an_unknown_predicate_result_is_explained_by_its_name(name: str) -> None:
    r = make(predicates=PREDICATES)
    r.declare("e", requires=all_of(True, call(name)))
    view = r.entity("e")
    assert view is not None
    assert view.status is UNDETERMINED
    assert repr(name) in view.reason or name in view.reason, view.reason
    if name == "missing":
        assert "unknown predicate" in view.reason


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        (all_of(call("dunno"), True), UNDETERMINED),
        (all_of(call("dunno"), False), ABSENT),  # false wins an all
        (any_of(call("dunno"), True), EXISTS),  # true wins an any
        (any_of(call("dunno"), False), UNDETERMINED),
        (not_(call("dunno")), UNDETERMINED),
        (not_(not_(call("dunno"))), UNDETERMINED),
        (at_least(2, True, call("dunno"), False), UNDETERMINED),
        (at_least(2, True, call("dunno"), True), EXISTS),
        (at_least(3, True, call("dunno"), False), ABSENT),
        (at_least(0, False), EXISTS),
        (at_least(2, True), ABSENT),
        (all_of(), EXISTS),
        (any_of(), ABSENT),
        (all_of(exists("u"), True), UNDETERMINED),
        (all_of(exists("u"), exists("gone")), ABSENT),
        (any_of(exists("u"), exists("db")), EXISTS),
        (not_(exists("u")), UNDETERMINED),
        (not_(exists("db")), ABSENT),
        (not_(exists("gone")), EXISTS),
    ],
)
def test_kleene_logic(constraint: Any, expected: Status) -> None:
    r = make(predicates=PREDICATES)
    r.declare("db")
    r.declare("u", requires=call("dunno"))
    r.declare("e", requires=constraint)
    assert r.status("e") is expected
    assert_full(r, "e")


def test_predicates_are_re_evaluated_on_tick() -> None:
    answer: list[bool | None] = [True]
    r = make(predicates={"flag": lambda: answer[0]})
    r.declare("e", requires=call("flag"))
    r.declare("dep", requires=exists("e"))
    assert r.status("e") is EXISTS
    answer[0] = None
    changes = r.tick()
    assert [(c.entity, c.after) for c in changes] == [("e", UNDETERMINED), ("dep", UNDETERMINED)]
    answer[0] = False
    r.tick()
    assert statuses(r, "e", "dep") == (ABSENT, ABSENT)
    # a predicate registered later is found at the next tick
    r.declare("late", requires=call("later"))
    assert r.status("late") is UNDETERMINED
    r.predicates["later"] = lambda: True
    r.tick()
    assert r.status("late") is EXISTS


def test_predicates_receive_the_args_of_the_constraint() -> None:
    seen: list[dict[str, Any]] = []

    def probe(**kwargs: Any) -> bool:
        seen.append(kwargs)
        return True

    r = make(predicates={"probe": probe})
    r.declare("e", requires=call("probe", host="db", port=5432, tags=["a"]))
    assert seen and seen[-1] == {"host": "db", "port": 5432, "tags": ["a"]}
    assert type(seen[-1]["port"]) is int


# -- well-founded semantics ----------------------------------------------------------------------


def test_an_unsupported_positive_cycle_is_absent() -> None:
    r = make()
    r.declare("a", requires=exists("b"))
    r.declare("b", requires=exists("a"))
    r.declare("self", requires=exists("self"))
    r.declare("loop", requires=all_of(exists("loop"), True))
    r.declare("ring1", requires=exists("ring2"))
    r.declare("ring2", requires=exists("ring3"))
    r.declare("ring3", requires=any_of(exists("ring1"), False))
    names = ("a", "b", "self", "loop", "ring1", "ring2", "ring3")
    assert statuses(r, *names) == (ABSENT,) * len(names)
    assert_full(r, *names)


def test_a_positively_supported_cycle_exists() -> None:
    r = make()
    r.declare("a", requires=any_of(exists("b"), True))
    r.declare("b", requires=exists("a"))
    assert statuses(r, "a", "b") == (EXISTS, EXISTS)


def test_a_cycle_exists_while_its_outside_support_does() -> None:
    r = make()
    r.declare("seed")
    r.declare("a", requires=any_of(exists("b"), exists("seed")))
    r.declare("b", requires=exists("a"))
    assert statuses(r, "a", "b") == (EXISTS, EXISTS)
    events = recorded(r)
    r.retract("seed")  # the cycle cannot keep itself alive
    assert statuses(r, "a", "b") == (ABSENT, ABSENT)
    assert {c.entity for c in events} == {"seed", "a", "b"}
    r.declare("seed")
    assert statuses(r, "a", "b") == (EXISTS, EXISTS)


def test_stratifiable_negation_gives_the_stratified_answer() -> None:
    r = make()
    r.declare("c")
    r.declare("b", requires=not_(exists("c")))
    r.declare("a", requires=not_(exists("b")))
    r.declare("n", requires=not_(exists("never-declared")))
    # a positive cycle whose members also look down at a negated lower stratum
    r.declare("p", requires=any_of(exists("q"), not_(exists("c"))))
    r.declare("q", requires=exists("p"))
    assert statuses(r, "c", "b", "a", "n", "p", "q") == (
        EXISTS,
        ABSENT,
        EXISTS,
        EXISTS,
        ABSENT,
        ABSENT,
    )
    r.retract("c")
    assert statuses(r, "c", "b", "a", "p", "q") == (ABSENT, EXISTS, ABSENT, EXISTS, EXISTS)


def test_an_unresolvable_cycle_through_negation_is_undetermined() -> None:
    r = make()
    r.declare("p", requires=not_(exists("q")))
    r.declare("q", requires=not_(exists("p")))
    r.declare("x", requires=not_(exists("x")))
    r.declare("odd1", requires=not_(exists("odd2")))
    r.declare("odd2", requires=not_(exists("odd3")))
    r.declare("odd3", requires=not_(exists("odd1")))
    names = ("p", "q", "x", "odd1", "odd2", "odd3")
    assert statuses(r, *names) == (UNDETERMINED,) * len(names)
    assert_full(r, *names)
    # what depends on an undetermined entity is undetermined too, unless decided otherwise
    r.declare("uses", requires=exists("p"))
    r.declare("avoids", requires=not_(exists("p")))
    r.declare("either", requires=any_of(exists("p"), True))
    r.declare("both", requires=all_of(exists("p"), False))
    assert statuses(r, "uses", "avoids", "either", "both") == (
        UNDETERMINED,
        UNDETERMINED,
        EXISTS,
        ABSENT,
    )


def test_a_negation_cycle_broken_by_an_outside_fact_resolves() -> None:
    r = make()
    r.declare("p", requires=any_of(not_(exists("q")), exists("fact")))
    r.declare("q", requires=not_(exists("p")))
    assert statuses(r, "p", "q") == (UNDETERMINED, UNDETERMINED)
    events = recorded(r)
    r.declare("fact")
    assert statuses(r, "p", "q") == (EXISTS, ABSENT)
    assert [(c.entity, c.before, c.after) for c in events] == [
        ("fact", ABSENT, EXISTS),
        ("p", UNDETERMINED, EXISTS),
        ("q", UNDETERMINED, ABSENT),
    ]
    r.retract("fact")
    assert statuses(r, "p", "q") == (UNDETERMINED, UNDETERMINED)
    # x <- not x is also settled by a fact that makes its rule true regardless
    r.declare("x", requires=any_of(not_(exists("x")), exists("fact")))
    assert r.status("x") is UNDETERMINED
    r.declare("fact")
    assert r.status("x") is EXISTS


def test_double_negation_is_kleene_so_a_self_loop_through_it_is_positive() -> None:
    # ``not not e`` is ``e`` in Kleene logic: nothing supports e, so it is absent.
    r = make()
    r.declare("e", requires=not_(not_(exists("e"))))
    assert r.status("e") is ABSENT


def test_cycles_formed_and_broken_incrementally() -> None:
    r = make()
    r.declare("a", requires=exists("b"))
    r.declare("b")
    assert statuses(r, "a", "b") == (EXISTS, EXISTS)
    r.declare("b", requires=exists("a"))  # closes an unsupported cycle
    assert statuses(r, "a", "b") == (ABSENT, ABSENT)
    r.declare("b", requires=not_(exists("a")))  # now a cycle through negation
    assert statuses(r, "a", "b") == (UNDETERMINED, UNDETERMINED)
    r.declare("a", requires=True)  # breaks it
    assert statuses(r, "a", "b") == (EXISTS, ABSENT)
    assert_full(r, "a", "b")


# -- observations and freshness -------------------------------------------------------------------


def test_an_entity_disappears_when_its_evidence_ages_out_with_nothing_else_happening() -> None:
    clock = Clock(100.0)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=10))
    r.declare("web", requires=exists("api"))
    assert r.next_deadline() is None
    r.observe("db")
    assert statuses(r, "api", "web") == (EXISTS, EXISTS)
    deadline = r.next_deadline()
    assert deadline == math.nextafter(110.0, math.inf)
    events = recorded(r)
    clock.now = 110.0
    assert r.tick() == []  # fresh while now - at <= within: still there at the boundary
    assert r.status("api") is EXISTS
    clock.now = deadline
    changes = r.tick()
    assert [(c.entity, c.before, c.after) for c in changes] == [
        ("api", EXISTS, ABSENT),
        ("web", EXISTS, ABSENT),
    ]
    assert changes == events
    assert r.next_deadline() is None


def test_ttl_shortens_freshness_and_within_caps_a_long_ttl() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("short", requires=observed("db", within=10))
    r.declare("long", requires=observed("db", within=3))
    r.observe("db", ttl=5)
    assert statuses(r, "short", "long") == (EXISTS, EXISTS)
    assert r.next_deadline() == math.nextafter(3.0, math.inf)
    r.tick(3.0)
    assert statuses(r, "short", "long") == (EXISTS, EXISTS)
    r.tick(math.nextafter(3.0, math.inf))
    assert statuses(r, "short", "long") == (EXISTS, ABSENT)
    assert r.next_deadline() == math.nextafter(5.0, math.inf)
    r.tick(5.0)
    assert r.status("short") is EXISTS
    r.tick(math.nextafter(5.0, math.inf))
    assert r.status("short") is ABSENT
    assert r.next_deadline() is None


def test_zero_window_and_zero_ttl_are_fresh_only_at_the_instant() -> None:
    clock = Clock(50.0)
    r = make(clock=clock)
    r.declare("now-only", requires=observed("db", within=0))
    r.declare("ttl0", requires=observed("cache", within=100))
    r.observe("db")
    r.observe("cache", ttl=0)
    assert statuses(r, "now-only", "ttl0") == (EXISTS, EXISTS)
    assert r.next_deadline() == math.nextafter(50.0, math.inf)
    r.tick(math.nextafter(50.0, math.inf))
    assert statuses(r, "now-only", "ttl0") == (ABSENT, ABSENT)


def test_a_refreshed_observation_moves_the_deadline() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=10))
    r.observe("db")
    clock.now = 8.0
    r.tick()
    r.observe("db")
    assert r.next_deadline() == math.nextafter(18.0, math.inf)
    clock.now = 15.0
    assert r.tick() == []
    assert r.status("api") is EXISTS


def test_staleness_also_applies_when_a_write_happens_after_the_deadline() -> None:
    # Statuses are a function of (state, now): a write at a later time sees stale evidence
    # as stale even if nobody ticked in between.
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=10))
    r.observe("db")
    clock.now = 20.0
    r.declare("unrelated")
    assert r.status("api") is ABSENT
    assert_full(r, "api")


def test_the_latest_observation_of_an_observer_replaces_the_earlier_one() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("up", requires=observed("db", within=10))
    r.declare("down", requires=observed("db", within=10, ok=False))
    r.observe("db", ok=True)
    assert statuses(r, "up", "down") == (EXISTS, ABSENT)
    clock.now = 1.0
    r.observe("db", ok=False)
    assert statuses(r, "up", "down") == (ABSENT, EXISTS)
    assert len(r.observations("db")) == 1


def test_quorum_counts_distinct_observers() -> None:
    clock = Clock(0.0)
    main, o1, o2 = make("main", clock), make("o1", clock), make("o2", clock)
    main.declare("api", requires=observed("db", within=10, quorum=2))
    main.observe("db")
    clock.now = 1.0
    main.observe("db")  # the same observer again does not make two
    assert main.status("api") is ABSENT
    o1.observe("db", ok=False)  # a not-ok observation does not count
    pull(main, o1)
    assert main.status("api") is ABSENT
    o2.observe("db")
    pull(main, o2)
    assert main.status("api") is EXISTS
    # it lasts as long as the second-freshest observation
    assert main.next_deadline() == math.nextafter(11.0, math.inf)
    main.tick(11.0)
    assert main.status("api") is EXISTS
    main.tick(math.nextafter(11.0, math.inf))
    assert main.status("api") is ABSENT


def test_quorum_waits_for_the_oldest_needed_observation() -> None:
    clock = Clock(0.0)
    main, o1 = make("main", clock), make("o1", clock)
    main.declare("api", requires=observed("db", within=10, quorum=2))
    main.observe("db")  # at 0: expires after 10
    clock.now = 4.0
    o1.observe("db")  # at 4: expires after 14
    pull(main, o1)
    assert main.status("api") is EXISTS
    main.tick(10.0)
    assert main.status("api") is EXISTS
    main.tick(math.nextafter(10.0, math.inf))
    assert main.status("api") is ABSENT


def test_by_lists_only_count_the_named_observers() -> None:
    clock = Clock(0.0)
    main, o1, o2 = make("main", clock), make("o1", clock), make("o2", clock)
    main.declare("by-o1", requires=observed("db", within=10, by=["o1"]))
    main.declare("by-o1-o2", requires=observed("db", within=10, by=["o1", "o2"], quorum=2))
    main.declare("by-anyone", requires=observed("db", within=10))
    main.observe("db")
    o2.observe("db")
    pull(main, o2)
    assert statuses(main, "by-o1", "by-o1-o2", "by-anyone") == (ABSENT, ABSENT, EXISTS)
    o1.observe("db")
    pull(main, o1)
    assert statuses(main, "by-o1", "by-o1-o2", "by-anyone") == (EXISTS, EXISTS, EXISTS)


def test_by_self_means_the_evaluating_replica() -> None:
    clock = Clock(0.0)
    a, b = make("a", clock), make("b", clock)
    a.declare("mine", requires=observed("db", within=10, by="self"))
    a.observe("db")
    pull(b, a)
    assert a.status("mine") is EXISTS
    assert b.status("mine") is ABSENT  # b has not observed db itself
    b.observe("db")
    assert b.status("mine") is EXISTS


def test_ok_false_observations() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("alarm", requires=observed("db", within=5, ok=False))
    r.declare("healthy", requires=observed("db", within=5))
    r.observe("db", ok=False, value={"error": "timeout"})
    assert statuses(r, "alarm", "healthy") == (EXISTS, ABSENT)
    r.tick(math.nextafter(5.0, math.inf))
    assert r.status("alarm") is ABSENT


def test_an_observation_made_on_a_clock_ahead_counts_until_it_ages_out() -> None:
    clock = Clock(100.0)
    ahead = Clock(103.0)
    main, peer = make("main", clock), make("peer", ahead)
    main.declare("api", requires=observed("db", within=5))
    peer.observe("db")  # at = 103
    pull(main, peer)
    assert main.status("api") is EXISTS
    assert main.next_deadline() == math.nextafter(108.0, math.inf)
    main.tick(108.0)
    assert main.status("api") is EXISTS
    main.tick(math.nextafter(108.0, math.inf))
    assert main.status("api") is ABSENT


def test_an_observation_already_stale_when_it_arrives_counts_for_nothing() -> None:
    behind = Clock(0.0)
    clock = Clock(100.0)
    main, peer = make("main", clock), make("peer", behind)
    main.declare("api", requires=observed("db", within=5))
    peer.observe("db")
    changes = pull(main, peer)
    assert [c.entity for c in changes] == ["replica:peer"]
    assert main.status("api") is ABSENT
    assert main.next_deadline() is None


def test_tick_accepts_an_explicit_now() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=1))
    r.observe("db")
    changes = r.tick(2.0)
    assert [(c.entity, c.after) for c in changes] == [("api", ABSENT)]


def test_time_going_back_makes_a_stale_observation_fresh_again() -> None:
    # A replica whose clock is ahead receives an observation already stale for it; asked
    # at an earlier instant (an explicit now, or its clock set back), it is fresh, though
    # no deadline was pending.
    main_clock, ahead = Clock(500.0), Clock(500.5)
    main, other = make("main", main_clock), make("other", ahead)
    main.declare("e0", requires=all_of(observed("e0", within=0)))
    main.observe("e0")
    pull(other, main)
    assert (main.status("e0"), other.status("e0")) == (EXISTS, ABSENT)
    assert other.next_deadline() is None
    changes = other.tick(500.0)
    assert [(c.entity, c.after) for c in changes] == [("e0", EXISTS)]
    assert other.derive_all(500.0)["e0"] is EXISTS
    # ... and the instant after, stale again: the re-evaluation left its deadline
    assert other.next_deadline() == math.nextafter(500.0, math.inf)
    assert [(c.entity, c.after) for c in other.tick()] == [("e0", ABSENT)]
    assert_full(other, "e0")


def test_next_deadline_after_tick_is_never_in_the_past_and_ticking_it_makes_progress() -> None:
    clock = Clock(0.0)
    main, o1, o2 = make("main", clock), make("o1", clock), make("o2", clock)
    main.declare("a", requires=observed("db", within=3))
    main.declare("b", requires=observed("db", within=7, quorum=2))
    main.declare("c", requires=all_of(exists("a"), observed("cache", within=4, by=["o2"])))
    main.observe("db", ttl=5)
    clock.now = 1.0
    o1.observe("db")
    o2.observe("cache")
    pull(main, o1)
    pull(main, o2)
    seen = []
    last = clock.now
    for _ in range(20):
        deadline = main.next_deadline()
        if deadline is None:
            break
        assert deadline > last
        before = statuses(main, "a", "b", "c")
        clock.now = deadline
        main.tick()
        after = statuses(main, "a", "b", "c")
        # each deadline either changes something or moves the next one later
        later = main.next_deadline()
        assert after != before or later is None or later > deadline
        seen.append((deadline, after))
        last = deadline
    else:  # pragma: no cover
        raise AssertionError("deadlines never ran out")
    assert statuses(main, "a", "b", "c") == (ABSENT, ABSENT, ABSENT)
    assert len(seen) <= 4


# -- attr clauses -----------------------------------------------------------------------------


ATTRS: dict[str, Any] = {
    "port": 5432,
    "ratio": 0.5,
    "role": "primary",
    "tags": ["a", "b", 1.0],
    "enabled": True,
    "nothing": None,
    "meta": {"zone": "eu-1", "rack": {"row": 3}, "labels": {"tier": "gold"}},
}


@pytest.mark.parametrize(
    ("path", "op", "value", "holds"),
    [
        ("port", "eq", 5432, True),
        ("port", "eq", 5432.0, True),  # 1 == 1.0
        ("port", "eq", 5433, False),
        ("port", "eq", "5432", False),
        ("port", "ne", 5433, True),
        ("port", "ne", 5432.0, False),
        ("port", "lt", 6000, True),
        ("port", "lt", 5432, False),
        ("port", "le", 5432, True),
        ("port", "le", 5431.5, False),
        ("port", "gt", 5000, True),
        ("port", "gt", 5432, False),
        ("port", "ge", 5432.0, True),
        ("port", "ge", 5433, False),
        ("port", "lt", "6000", False),  # no order between a number and a string
        ("ratio", "lt", 1, True),
        ("ratio", "ge", 0.5, True),
        ("role", "lt", "secondary", True),
        ("role", "ge", "primary", True),
        ("role", "gt", 3, False),
        ("role", "in", ["primary", "replica"], True),
        ("role", "in", ["replica"], False),
        ("role", "in", [], False),
        ("port", "in", [1, 5432.0], True),
        ("role", "contains", "prim", True),
        ("role", "contains", "x", False),
        ("tags", "contains", "a", True),
        ("tags", "contains", 1, True),  # 1 == 1.0 inside lists too
        ("tags", "contains", "c", False),
        ("meta", "contains", "zone", True),  # a dict contains its keys
        ("meta", "contains", "nope", False),
        ("port", "contains", 5, False),
        ("enabled", "eq", True, True),
        ("enabled", "eq", 1, False),  # True is not 1
        ("enabled", "ne", 1, True),
        ("enabled", "in", [1], False),
        ("port", "eq", True, False),
        ("enabled", "lt", 2, False),  # booleans are not numbers
        ("nothing", "eq", None, True),
        ("nothing", "present", None, True),  # present even when null
        ("port", "present", None, True),
        ("meta.zone", "eq", "eu-1", True),
        ("meta.rack.row", "ge", 3, True),
        ("meta.labels.tier", "in", ["gold", "silver"], True),
        ("meta.labels", "eq", {"tier": "gold"}, True),
        ("tags", "eq", ["a", "b", 1], True),
        ("meta.zone.deeper", "present", None, False),  # through a non-object
        ("role.x", "eq", "primary", False),
    ],
)
def test_attr_ops(path: str, op: str, value: Any, holds: bool) -> None:
    r = make()
    r.declare("db", attrs=ATTRS)
    r.declare("e", requires=attr("db", path, op, value))
    assert r.status("e") is (EXISTS if holds else ABSENT)


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "present"])
@pytest.mark.parametrize("path", ["missing", "meta.missing", "meta.zone.x", "port.x"])
def test_a_missing_attribute_satisfies_no_operator(op: str, path: str) -> None:
    value = None if op == "present" else (["x"] if op == "in" else "x")
    r = make()
    r.declare("db", attrs=ATTRS)
    r.declare("e", requires=attr("db", path, op, value))
    r.declare("not-e", requires=not_(attr("db", path, op, value)))
    assert statuses(r, "e", "not-e") == (ABSENT, EXISTS)


def test_attr_of_an_undeclared_or_retracted_entity_is_false() -> None:
    r = make()
    r.declare("e", requires=attr("db", "port", "ne", 1))
    assert r.status("e") is ABSENT
    r.declare("db", attrs={"port": 2})
    assert r.status("e") is EXISTS
    r.retract("db")
    assert r.status("e") is ABSENT


def test_attr_clauses_follow_updates_and_redeclarations() -> None:
    clock = Clock()
    a, b = make("a", clock), make("b", clock)
    a.declare("db", attrs={"role": "replica", "port": 1})
    a.declare("primary", requires=attr("db", "role", "eq", "primary"))
    a.declare("has-port", requires=attr("db", "port", "present"))
    assert statuses(a, "primary", "has-port") == (ABSENT, EXISTS)
    a.update("db", {"role": "primary"})
    assert statuses(a, "primary", "has-port") == (EXISTS, EXISTS)
    a.declare("db", attrs={"role": "primary"})  # re-declaring drops port
    assert statuses(a, "primary", "has-port") == (EXISTS, ABSENT)
    pull(b, a)
    b.update("db", {"role": "replica"})
    pull(a, b)
    assert a.status("primary") is ABSENT


def test_an_entity_may_read_its_own_attributes() -> None:
    r = make()
    r.declare("svc", attrs={"enabled": True}, requires=attr("svc", "enabled", "eq", True))
    assert r.status("svc") is EXISTS
    r.update("svc", {"enabled": False})
    assert r.status("svc") is ABSENT


# -- events -----------------------------------------------------------------------------------


def test_a_chain_flipping_together_emits_one_change_each_dependencies_first() -> None:
    clock = Clock(0.0)
    r = make(clock=clock)
    # names sort against the dependency order, so alphabetical order would be wrong
    r.declare("z-base", requires=observed("db", within=5))
    r.declare("m-mid", requires=exists("z-base"))
    r.declare("a-top", requires=all_of(exists("m-mid"), exists("z-base")))
    r.observe("db")
    events = recorded(r)
    clock.now = 6.0
    changes = r.tick()
    assert [c.entity for c in changes] == ["z-base", "m-mid", "a-top"]
    assert events == changes
    for change in changes:
        assert (change.before, change.after) == (EXISTS, ABSENT)
        view = r.entity(change.entity)
        assert view is not None and change.reason == view.reason
    r.observe("db")
    assert [(c.entity, c.after) for c in events[3:]] == [
        ("z-base", EXISTS),
        ("m-mid", EXISTS),
        ("a-top", EXISTS),
    ]


def test_a_diamond_reports_the_top_once() -> None:
    r = make()
    r.declare("base")
    r.declare("left", requires=exists("base"))
    r.declare("right", requires=not_(not_(exists("base"))))
    r.declare("top", requires=any_of(exists("left"), exists("right")))
    events = recorded(r)
    r.retract("base")
    order = [c.entity for c in events]
    assert sorted(order) == ["base", "left", "right", "top"]
    assert (order[0], order[-1]) == ("base", "top")


def test_no_event_when_a_status_does_not_change() -> None:
    r = make()
    r.declare("db", attrs={"port": 1})
    r.declare("api", requires=attr("db", "port", "gt", 0))
    r.declare("off", requires=False)
    events = recorded(r)
    r.update("db", {"port": 2})  # still > 0
    r.update("db", {"note": "x"})
    r.declare("off", requires=any_of(False, exists("nothing")))  # still absent
    r.declare("api", requires=attr("db", "port", "ge", 1))  # still exists
    assert r.tick() == []
    assert events == []
    r.update("db", {"port": 0})
    assert [(c.entity, c.before, c.after) for c in events] == [("api", EXISTS, ABSENT)]


def test_a_merge_reports_the_changes_it_caused() -> None:
    clock = Clock()
    a, b = make("a", clock), make("b", clock)
    b.declare("api", requires=exists("db"))
    events = recorded(b)
    a.declare("db")
    changes = pull(b, a)
    assert changes == events
    assert ("api", ABSENT, EXISTS) in [(c.entity, c.before, c.after) for c in changes]
    assert pull(b, a) == []  # a duplicate changes nothing


def test_unsubscribe_and_failing_subscribers(caplog: pytest.LogCaptureFixture) -> None:
    r = make()
    first: list[Change] = []
    second: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    stop_first = r.subscribe(first.append)
    r.subscribe(broken)
    r.subscribe(second.append)
    with caplog.at_level(logging.ERROR, logger="sphaera_crdt.replica"):
        r.declare("a")
    assert [c.entity for c in first] == ["a"] == [c.entity for c in second]
    assert any("subscriber" in record.getMessage() for record in caplog.records)
    stop_first()
    stop_first()  # idempotent
    r.declare("b")
    assert [c.entity for c in first] == ["a"]
    assert [c.entity for c in second] == ["a", "b"]


def test_change_is_a_frozen_self_checking_value() -> None:
    change = Change(entity="a", before=ABSENT, after=EXISTS, reason="x")
    assert change.to_json() == {"entity": "a", "before": "absent", "after": "exists", "reason": "x"}
    with pytest.raises(ValueError, match="must change"):
        Change(entity="a", before=EXISTS, after=EXISTS, reason="x")
    with pytest.raises(AttributeError):
        change.after = ABSENT  # type: ignore[misc]


def test_freshness_is_now_minus_at_within_the_window_as_designed() -> None:
    """Fresh while ``now - at <= within`` (DESIGN.md, ``Observation.fresh``), computed on
    floats exactly so: ``now <= at + within`` differs. With at=0.1 and within=0.2, at
    now=0.30000000000000004 ``now - at`` is 0.20000000000000004 > 0.2, so it is stale, and
    the deadline is that very instant.
    """
    clock = Clock(0.1)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=0.2))
    seen = r.observe("db")
    assert r.next_deadline() == 0.30000000000000004
    r.tick(0.3)
    assert r.exists("api") is True
    clock.now = 0.30000000000000004
    r.tick()
    assert seen.fresh(clock.now, 0.2) is False
    assert r.exists("api") is False


# -- incremental restructuring ------------------------------------------------------------------


def test_components_merge_and_split_as_rules_change() -> None:
    """Rewire a graph step by step; after each step the statuses equal a full recomputation."""
    r = make()
    names = [f"n{i}" for i in range(6)]
    r.declare("root")
    for i, name in enumerate(names):
        r.declare(name, requires=exists(names[i + 1]) if i + 1 < len(names) else exists("root"))
    assert all(r.status(name) is EXISTS for name in names)
    plan: list[tuple[str, Any]] = [
        ("n5", exists("n0")),  # a ring of six, no support: all absent
        ("n2", any_of(exists("n3"), exists("root"))),  # supported from outside again
        ("n4", not_(exists("n1"))),  # a negation inside the ring
        ("n1", all_of(exists("n2"), not_(exists("n4")))),
        ("n0", exists("n3")),  # a second, overlapping cycle
        ("n3", True),  # cuts the ring in two
        ("n5", None),
        ("n4", not_(exists("n4"))),
        ("root", exists("n0")),  # the former root joins a cycle
        ("n3", exists("root")),
        ("n2", exists("n2")),
    ]
    for name, requires in plan:
        r.declare(name, requires=requires)
        assert_full(r, "root", *names)
    r.retract("n3")
    assert_full(r, "root", *names)


def test_a_change_re_evaluates_only_what_depends_on_it() -> None:
    # internal counter: ExistenceEngine.evaluated is the number of entities the last step solved
    r = make()
    for chain in range(50):
        r.declare(f"c{chain}.0")
        for i in range(1, 5):
            r.declare(f"c{chain}.{i}", requires=exists(f"c{chain}.{i - 1}"))
    r.retract("c7.0")
    assert r.status("c7.4") is ABSENT
    assert r._engine.evaluated <= 5
    r.update("c9.4", {"x": 1})  # nobody reads it
    assert r._engine.evaluated <= 1


def test_events_replay_to_the_statuses_even_when_a_subscriber_writes() -> None:
    """A subscriber that writes (here: declares a fallback when db goes) starts a nested step
    while the outer step's changes are being delivered. Its changes must queue behind the
    outer ones, so that the last event of every entity is its status; an SSE client folds
    the stream. (Regression: the nested changes used to be delivered first, so the stream
    ended with ``api: exists -> absent`` although api existed again.)
    """
    r = make()
    r.declare("db")
    r.declare("api", requires=any_of(exists("db"), exists("fallback")))
    r.declare("x", requires=exists("db"))
    folded: dict[str, Status] = {}

    def on_change(change: Change) -> None:
        folded[change.entity] = change.after
        if change.entity == "db" and change.after is ABSENT:
            r.declare("fallback")

    r.subscribe(on_change)
    r.retract("db")
    assert r.status("api") is EXISTS
    assert folded["api"] is r.status("api"), "the last event of api disagrees with its status"


@pytest.mark.parametrize(
    ("at", "within"),
    [
        (2.9260307377360073, 10),  # at + within rounds down: one ulp is not enough
        (100.0, 10),
        (0.1, 0.2),
        (1_700_000_000.123, 2.5),
    ],
)
def test_next_deadline_is_the_first_stale_instant(at: float, within: float) -> None:
    """Core bug: formulas.py ``stale_from`` doubles its step (t += step; step *= 2) until
    ``t - at > limit``, so it can jump over the first stale instant. For at=2.9260307377360073
    and within=10 it returns 12.926030737736012, but 12.92603073773601 is already stale
    (``now - at`` = 10.000000000000004): ticking at that instant leaves the entity existing
    while ``derive_all`` at the same instant says absent, and the status changes later than
    DESIGN.md's ``now - at <= within`` says.
    """
    clock = Clock(at)
    r = make(clock=clock)
    r.declare("api", requires=observed("db", within=within))
    r.observe("db")
    deadline = r.next_deadline()
    assert deadline is not None
    assert deadline - at > within  # stale at the deadline
    before = math.nextafter(deadline, -math.inf)
    clock.now = before
    r.tick()
    assert r.status("api") == r.derive_all().get("api", ABSENT)
    assert before - at <= within, "the instant before the deadline is already stale"


def test_evaluating_an_observation_that_ends_at_time_zero_terminates() -> None:
    """An observation at=-10.0 with ttl=10 is fresh at now=0 and stale right after, at the
    smallest positive instants. (Regression: computing that deadline stepped one ulp at a
    time through the denormals and never finished.)
    """
    clock = Clock(0.0)
    peer = make("peer", clock)
    clock.now = -10.0
    peer.observe("db", ttl=10)
    clock.now = 0.0
    r = make("r", clock)
    r.declare("api", requires=observed("db", within=60))

    def give_up(signum: int, frame: Any) -> None:
        raise AssertionError("evaluation did not finish within 2 seconds")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        pull(r, peer)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert r.status("api") is EXISTS
    deadline = r.next_deadline()
    assert deadline is not None and 0.0 < deadline < 1e-9
    r.tick(deadline)
    assert r.status("api") is ABSENT


# -- rules are compiled once per record version ------------------------------------------------


def test_a_rule_is_compiled_once_per_record_version_and_shared_by_every_derivation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sphaera_crdt.core import compiler

    compiled: list[Any] = []
    plain = compiler.compile_constraint

    def counting(data: Any) -> compiler.Compiled:
        compiled.append(data)
        return plain(data)

    monkeypatch.setattr(compiler, "compile_constraint", counting)
    r = make()

    def derived() -> dict[str, Status]:
        return {e: s for e, s in r.derive_all().items() if e in ("db", "api")}

    r.declare("db")
    r.declare("api", requires=all_of(exists("db"), attr("db", "tier", "le", 2)))
    assert len(compiled) == 1
    # Another field of the record, a full derivation, an audit: the same version, no compile.
    r.update("api", {"zone": "a"})
    assert derived() == {"db": EXISTS}  # db has no tier attribute
    assert derived() == {"db": EXISTS}
    assert len(compiled) == 1
    # A new version of the rule is compiled once, and every engine uses it.
    r.declare("api", requires=exists("db"))
    assert len(compiled) == 2
    assert derived() == {"db": EXISTS, "api": EXISTS}
    assert r.status("api") is EXISTS
    assert len(compiled) == 2


def test_a_malformed_rule_is_kept_as_its_message_and_heals_with_a_new_version() -> None:
    r = make()
    peer = make("peer")
    peer.declare("q", requires=exists("db"))
    pull(r, peer)
    # The merged requires turned into one that is not a constraint (as a peer's bad write
    # would be), with nothing compiled for it yet.
    ours = r._view.records["q"].fields["q"]
    ours.value = {"exists": 5}
    ours.rule = None
    assert r.derive_all()["q"] is UNDETERMINED
    assert "malformed" in ours.rule
    assert r.derive_all()["q"] is UNDETERMINED  # the kept message, not a compile
    r.declare("q", requires=True)
    assert r._view.records["q"].fields["q"].rule is not ours.rule
    assert r.derive_all()["q"] is EXISTS
