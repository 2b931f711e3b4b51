"""A rotation leaves behind the writer's observations that can no longer count, and every
replica, including one that reads the document afresh, agrees on what is left."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support import snapshot

from sphaera_crdt import Replica, Status, observed
from sphaera_crdt.errors import InvalidValue
from sphaera_crdt.testing import Cluster


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rotate(replica: Replica) -> None:
    """Overwrite one attribute until the replica rotates its container."""
    before = replica.rotations
    for n in range(10_000):
        replica.update("churn", {"n": n})
        if replica.rotations > before:
            return
    raise AssertionError("no rotation")


def _observers(replica: Replica, subject: str) -> list[str]:
    return sorted(observation.observer for observation in replica.observations(subject))


def _fresh_reader(replica: Replica) -> Replica:
    """A replica that reads the whole document from scratch."""
    return Replica.restore("reader", [replica.delta()], clock=replica._clock, declare_self=False)


def _observations(replica: Replica) -> list[tuple[str, str, float]]:
    return sorted((o.subject, o.observer, o.at) for o in replica.observations())


def _pair(grace: float = 60.0) -> tuple[Clock, Replica, Replica]:
    clock = Clock()
    a = Replica("a", clock=clock, observation_grace=grace)
    b = Replica("b", clock=clock, observation_grace=grace)
    a.declare("churn")
    b.merge(a.delta())
    return clock, a, b


def test_an_observation_past_its_ttl_and_the_grace_is_left_behind_everywhere() -> None:
    clock, a, b = _pair(grace=60.0)
    a.observe("old", ok=True, ttl=10)
    a.observe("recent", ok=True, ttl=10)
    a.observe("forever", ok=True)  # no ttl: it may count under any window, so it stays
    b.merge(a.delta(b.state_vector()))
    clock.now += 30  # "old" and "recent" expired 20 s ago: within the grace
    _rotate(a)
    assert _observers(a, "old") == ["a"]
    clock.now += 45  # 65 s past their ttl
    a.observe("recent", ok=True, ttl=10)  # written again: fresh
    _rotate(a)
    assert _observers(a, "old") == []
    assert _observers(a, "recent") == ["a"]
    assert _observers(a, "forever") == ["a"]
    assert "s\x1fold" not in a._doc.own_entries
    changes = b.merge(a.delta(b.state_vector()))
    assert changes == []  # an expired observation decided nothing
    assert _observations(b) == _observations(a) == _observations(_fresh_reader(a))


def test_leaving_behind_changes_no_status() -> None:
    clock, a, b = _pair(grace=0.0)
    a.declare("api", requires=observed("db", within=3600))
    a.observe("db", ok=True, ttl=5)
    b.merge(a.delta(b.state_vector()))
    assert b.status("api") is Status.EXISTS
    clock.now += 6
    assert a.tick() and b.tick()
    assert a.status("api") is b.status("api") is Status.ABSENT
    statuses, peer_statuses = a.derive_all(), b.derive_all()
    _rotate(a)
    assert a.observations("db") == []
    assert a.derive_all() == statuses
    b.merge(a.delta(b.state_vector()))
    assert b.observations("db") == []
    assert b.derive_all() == peer_statuses


def test_observations_of_a_retracted_subject_go_once_they_expire() -> None:
    clock, a, b = _pair(grace=3600.0)
    a.declare("svc")
    a.observe("svc", ok=True, ttl=10)
    a.observe("svc-untimed", ok=True)
    a.declare("svc-untimed")
    a.retract("svc")
    a.retract("svc-untimed")
    b.merge(a.delta(b.state_vector()))
    _rotate(a)
    assert _observers(a, "svc") == ["a"]  # still fresh: still evidence
    clock.now += 11
    _rotate(a)
    assert _observers(a, "svc") == []  # expired, and its subject is gone: no grace
    assert _observers(a, "svc-untimed") == ["a"]  # no ttl: kept for the grace
    clock.now += 3600
    _rotate(a)
    assert _observers(a, "svc-untimed") == []
    b.merge(a.delta(b.state_vector()))
    assert _observations(b) == _observations(a) == _observations(_fresh_reader(a))


def test_observations_of_a_forgotten_replica_go_once_they_expire() -> None:
    cluster = Cluster(["a", "b", "c"], start=1000.0)
    cluster.sync_all()
    a = cluster["a"]
    a.observe("replica:c", ok=True, ttl=5)
    cluster.sync_all()
    cluster.remove("c")
    a.forget("c")
    cluster.advance(6)
    a.declare("churn")
    _rotate(a)
    assert a.observations("replica:c") == []
    cluster.sync_all()
    cluster.assert_converged()
    assert cluster["b"].observations("replica:c") == []


def test_a_peer_whose_winner_came_from_an_earlier_incarnation_drops_it_too() -> None:
    clock, a, b = _pair(grace=0.0)
    a.observe("old", ok=True, ttl=1)
    b.merge(a.delta(b.state_vector()))
    restored = Replica.restore("a", [a.delta()], clock=clock, observation_grace=0.0)
    b.merge(restored.delta(b.state_vector()))
    assert _observers(b, "old") == ["a"]
    clock.now += 5
    _rotate(restored)
    assert restored.observations("old") == []
    b.merge(restored.delta(b.state_vector()))
    assert b.observations("old") == []
    assert _observations(b) == _observations(_fresh_reader(restored))


def test_a_peer_that_skipped_the_rotation_still_agrees() -> None:
    clock, a, b = _pair(grace=0.0)
    a.observe("old", ok=True, ttl=1)
    b.merge(a.delta(b.state_vector()))
    clock.now += 5
    _rotate(a)
    _rotate(a)  # b merges only after two rotations: it never saw the first fresh container
    b.merge(a.delta(b.state_vector()))
    assert b.observations("old") == []
    assert snapshot(b)[2] == snapshot(a)[2]


def test_observation_grace_is_checked() -> None:
    for bad in (-1, float("inf"), float("nan"), "10", True):
        try:
            Replica("a", observation_grace=bad)  # type: ignore[arg-type]
        except InvalidValue:
            continue
        raise AssertionError(f"observation_grace={bad!r} was accepted")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["observe", "retract", "advance", "rotate", "sync"]),
            st.sampled_from(["a", "b"]),
            st.sampled_from(["s1", "s2", "s3"]),
            st.sampled_from([None, 1.0, 5.0]),
        ),
        max_size=25,
    ),
    st.sampled_from([0.0, 1.5, 4.0, 10.0]),
)
def test_every_replica_agrees_with_a_fresh_reader(
    ops: list[tuple[str, str, str, float | None]], final_advance: float
) -> None:
    clock = Clock()
    replicas = {name: Replica(name, clock=clock, observation_grace=2.0) for name in ("a", "b")}
    for replica in replicas.values():
        replica.declare("churn")
    for op, name, subject, ttl in ops:
        replica = replicas[name]
        other = replicas["b" if name == "a" else "a"]
        if op == "observe":
            replica.observe(subject, ok=True, ttl=ttl)
        elif op == "retract":
            replica.declare(subject)
            replica.retract(subject)
        elif op == "advance":
            clock.now += 3.0
        elif op == "rotate":
            _rotate(replica)
        else:
            other.merge(replica.delta(other.state_vector()))
    a, b = replicas["a"], replicas["b"]
    # Each has seen the other's observations; time passes; both rotate; they sync again.
    a.merge(b.delta(a.state_vector()))
    b.merge(a.delta(b.state_vector()))
    clock.now += final_advance
    _rotate(a)
    _rotate(b)
    a.merge(b.delta(a.state_vector()))
    b.merge(a.delta(b.state_vector()))
    assert _observations(a) == _observations(b) == _observations(_fresh_reader(a))
    assert a.derive_all() == b.derive_all()
