"""Derived existence: an entity exists while its evidence holds, on every replica.

Two replicas, ``a`` and ``b``, share nothing but the updates they send each other. ``a``
declares ``db`` and ``api``; ``api`` requires that ``db`` exists *and* that someone has
observed ``db`` healthy within the last 10 seconds. ``b`` observes ``db``; after a merge,
``api`` exists on both. Then time passes (a fake clock, advanced by hand), nobody acts,
and ``api`` disappears on both by itself: its evidence aged out. ``why`` says what
decided each time. A fresh observation brings it back.

Run: python examples/quickstart.py
"""

from __future__ import annotations

from typing import Any

from sphaera_crdt import Replica, all_of, exists, observed
from sphaera_crdt.why_text import render_why

#: Where the fake clock starts (any epoch time will do).
START = 1_750_000_000.0


class FakeClock:
    """A clock that moves only when told to: the story runs in no time at all."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sync(x: Replica, y: Replica) -> None:
    """One exchange each way: each side sends what the other's state vector lacks."""
    y.merge(x.delta(y.state_vector()))
    x.merge(y.delta(x.state_vector()))


def show(*replicas: Replica) -> None:
    for replica in replicas:
        print(f"  on {replica.id}: api {replica.status('api').value} ({_reason(replica)})")


def _reason(replica: Replica) -> str:
    view = replica.entity("api")
    return "not declared here" if view is None else view.reason


def print_why(tree: dict[str, Any]) -> None:
    """The explanation tree as the ``sphaera why`` command prints it, indented."""
    for line in render_why(tree).splitlines():
        print("  " + line)


def main() -> None:
    clock = FakeClock()
    a = Replica("a", clock=clock)
    b = Replica("b", clock=clock)

    print("t=0s  a declares db, and api requiring: db exists and db observed ok within 10 s")
    a.declare("db", kind="postgres", attrs={"port": 5432})
    a.declare("api", kind="service", requires=all_of(exists("db"), observed("db", within=10)))
    show(a)

    print("t=0s  b merges a's changes and observes db healthy; a and b sync")
    b.merge(a.delta(b.state_vector()))
    b.observe("db", ok=True, value={"latency_ms": 3})
    sync(a, b)
    show(a, b)
    assert a.exists("api") and b.exists("api")
    print("why does api exist on a?")
    print_why(a.why("api"))

    # Nobody acts: each replica re-evaluates by itself at its next deadline (a node does
    # this with a timer; here the fake clock is moved past the deadline and tick() called).
    deadline = a.next_deadline()
    assert deadline is not None
    print(f"next deadline on a: t={deadline - START:g}s; the clock moves to t=12s, both tick")
    clock.advance(12)
    a.tick()
    b.tick()
    show(a, b)
    assert not a.exists("api") and not b.exists("api")
    print("why is api absent on b?")
    print_why(b.why("api"))

    print("t=12s b observes db again; a and b sync")
    b.observe("db", ok=True, value={"latency_ms": 4})
    sync(a, b)
    show(a, b)
    assert a.exists("api") and b.exists("api")
    assert a.state_vector() == b.state_vector()
    print("replicas a and b converged: api exists on both again")


if __name__ == "__main__":
    main()
