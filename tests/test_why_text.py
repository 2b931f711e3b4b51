"""The explanation tree as text a person reads: indented clauses, relative times."""

from __future__ import annotations

import json
import math

import pytest

from sphaera_crdt import Replica, all_of, any_of, attr, call, exists, not_, observed
from sphaera_crdt.why_text import _duration, render_why


def world() -> tuple[list[float], Replica]:
    """``api`` needs ``db`` and a fresh observation of it; ``o``'s clock runs 50 s behind."""
    t = [100.0]
    r = Replica("r", clock=lambda: t[0])
    behind = Replica("o", clock=lambda: t[0] - 50)
    r.declare("db", attrs={"port": 5432})
    r.declare(
        "api",
        requires=all_of(
            exists("db"),
            observed("db", within=10),
            attr("db", "port", "eq", 5432),
            not_(exists("x")),
        ),
    )
    r.observe("db")
    behind.observe("db")
    r.merge(behind.delta(r.state_vector()))
    return t, r


def test_a_tree_reads_as_indented_clauses_with_relative_times() -> None:
    t, r = world()
    t[0] = 103.0
    assert render_why(r.why("api")).splitlines() == [
        "api: exists",
        "  reason: requirements hold: db exists; 1 fresh observation of db within 10s, 1 needed;"
        " attr db.port eq 5432 is true; and 1 more",
        "  all: true",
        "    exists db: true",
        "      db: exists",
        "        reason: declared with no requirements",
        "    observed db within 10 s: true (1 fresh, 1 needed)",
        "      o: ok, stale for 43 s, 53 s old",
        "      r: ok, fresh, 3 s old, expires in 7 s",
        "    attr db.port eq 5432 (actual 5432): true",
        "    not: true",
        "      exists x: false",
        "        x: absent",
        "          reason: undeclared",
    ]


def test_the_clock_of_the_tree_or_the_one_given_decides_the_times() -> None:
    t, r = world()
    t[0] = 112.0
    r.tick()
    tree = json.loads(json.dumps(r.why("api")))  # as read from the HTTP API
    text = render_why(tree)
    assert "r: ok, stale for 2 s, 12 s old" in text
    assert "api: absent" in text and "0 fresh observations of db" in text
    later = render_why(tree, now=172.0)
    assert "r: ok, stale for 62 s, 72 s old" in later
    # No clock in the tree: this machine's (a tree from 1970 is decades old).
    del tree["now"]
    assert " d old" in render_why(tree)


def test_a_fresh_observation_past_its_deadline_says_it_was_not_re_evaluated() -> None:
    _, r = world()
    tree = r.why("api")
    assert "r: ok, fresh, 0 s old, expires in 10 s" in render_why(tree)
    text = render_why(tree, now=115.0)
    assert "r: ok, fresh when evaluated, 15 s old, expired 5 s ago" in text


def test_an_observation_dated_ahead_says_by_how_much_and_when_it_counts() -> None:
    t = [100.0]
    r = Replica("r", clock=lambda: t[0])
    ahead = Replica("f", clock=lambda: t[0] + 30)
    r.declare("svc", requires=observed("x", within=3))
    ahead.observe("x")
    r.merge(ahead.delta(r.state_vector()))
    text = render_why(r.why("svc"))
    assert "f: ok, dated 30 s ahead (beyond the skew allowed), counts in 25 s" in text


def test_predicates_cycles_and_chains_render() -> None:
    r = Replica("r", clock=lambda: 0.0)
    r.declare("p", requires=not_(exists("q")))
    r.declare("q", requires=not_(exists("p")))
    r.declare("w", requires=any_of(call("nope", a=1), exists("p")))
    text = render_why(r.why("w"))
    assert "in a cycle with: p, q" in text
    assert "predicate nope({\"a\":1}): unknown (unknown predicate 'nope')" in text
    assert "(see above (cycle))" in text
    for i in range(10):
        r.declare(f"c{i}", requires=exists(f"c{i + 1}"))
    chained = render_why(r.why("c0", depth=1))
    assert "... 9 links down: c10: absent (undeclared)" in chained


def test_a_partial_or_unknown_tree_still_renders() -> None:
    assert render_why({"entity": "x"}, now=0.0) == "x: ?"
    odd = {"entity": "x", "status": "exists", "because": {"clause": "later", "value": "true"}}
    assert render_why(odd, now=0.0).splitlines() == ["x: exists", "  later: true"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0 s"),
        (3.0, "3 s"),
        (2.5, "2.5 s"),
        (12.4, "12 s"),
        (-7.0, "7 s"),
        (600.0, "10 min"),
        (3 * 3600.0, "3 h"),
        (30 * 86400.0, "30 d"),
        (math.inf, "ever"),
        (math.nan, "? s"),
    ],
)
def test_durations_read_in_a_sensible_unit(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
