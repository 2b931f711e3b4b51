"""Forgetting departed replicas: tombstones converge, state is bounded, the rule agrees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sphaera_crdt import Replica, Status, observed
from sphaera_crdt.core import forgetting
from sphaera_crdt.errors import InvalidIdentifier, InvalidValue
from sphaera_crdt.testing import Cluster


def _cluster(*ids: str) -> Cluster:
    cluster = Cluster(ids, start=1000.0)
    cluster.sync_all()
    return cluster


def test_forget_converges_on_every_replica() -> None:
    cluster = _cluster("a", "b", "c")
    cluster["c"].declare("svc", kind="web")
    cluster["c"].observe("db", ok=True)
    cluster["a"].declare("api", requires=observed("db", within=60))
    cluster.sync_all()
    assert cluster["b"].status("api") is Status.EXISTS
    cluster.remove("c")
    changes = cluster["a"].forget("c")
    assert {change.entity for change in changes} >= {"api", "svc", "replica:c"}
    cluster.sync_all()
    cluster.assert_converged()
    for replica in cluster:
        assert replica.entity("svc") is None
        assert replica.entity("replica:c") is None
        assert replica.observations("db") == []
        assert replica.status("api") is Status.ABSENT
        assert replica.forgotten() == {"c"}


def test_forget_reaches_a_replica_that_joins_later() -> None:
    cluster = _cluster("a", "c")
    cluster["c"].declare("svc")
    cluster.sync_all()
    cluster.remove("c")
    cluster["a"].forget("c")
    late = cluster.add("d")
    cluster.sync_all()
    assert late.entity("svc") is None
    cluster.assert_converged()


def test_a_replica_cannot_forget_itself() -> None:
    replica = Replica("a", clock=lambda: 0.0)
    with pytest.raises(InvalidValue):
        replica.forget("a")
    with pytest.raises(InvalidIdentifier):
        replica.forget("")


def test_a_forgotten_replica_still_running_starts_afresh() -> None:
    cluster = _cluster("a", "b")
    cluster["b"].declare("svc")
    cluster.sync_all()
    old_nonce = cluster["b"].nonce
    cluster["a"].forget("b")
    cluster.sync_all()
    cluster.sync_all()
    b = cluster["b"]
    assert b.nonce != old_nonce
    assert b.entity("svc") is None
    # It declared itself again, in its fresh container, and every replica welcomes it.
    for replica in cluster:
        assert replica.status("replica:b") is Status.EXISTS
    b.declare("svc2")
    cluster.sync_all()
    cluster.assert_converged()
    assert cluster["a"].entity("svc2") is not None


def test_a_forgotten_replica_returning_is_welcomed_as_new() -> None:
    cluster = _cluster("a", "b")
    cluster["b"].declare("svc")
    cluster.sync_all()
    cluster.remove("b")
    cluster["a"].forget("b")
    back = cluster.add("b")
    cluster.sync_all()
    back.declare("svc3")
    cluster.sync_all()
    cluster.assert_converged()
    assert cluster["a"].entity("svc") is None
    assert cluster["a"].status("replica:b") is Status.EXISTS
    assert cluster["a"].entity("svc3") is not None


def test_forgetting_bounds_the_state() -> None:
    cluster = _cluster("a", "b")
    baseline = len(cluster["a"].delta())
    for index in range(30):
        name = f"tmp{index}"
        cluster.add(name)
        for key in range(20):
            cluster[name].declare(f"{name}-e{key}", attrs={"n": key})
        cluster.sync_all()
        cluster.remove(name)
        cluster["a"].forget(name)
        cluster.sync_all()
    cluster.assert_converged()
    grown = len(cluster["a"].delta())
    # what stays per departed replica: its tombstone and its Yrs clients' GC ranges
    assert grown < baseline + 30 * 150, (baseline, grown)


def test_timed_forget_after_silence() -> None:
    clock = [1000.0]
    a = Replica("a", clock=lambda: clock[0], forget_after=3600)
    b = Replica("b", clock=lambda: clock[0], forget_after=3600)
    a.merge(b.delta())
    b.merge(a.delta())
    a.tick()
    clock[0] += 1800
    a.observe("replica:a", ok=True)  # a stays alive; b is silent
    a.tick()
    assert a.forgotten() == set()
    clock[0] += 3600
    a.observe("replica:a", ok=True)
    a.tick()
    assert a.forgotten() == {"b"}
    assert a.entity("replica:b") is None


@settings(max_examples=40, deadline=None)
@given(
    lives=st.lists(st.floats(min_value=0, max_value=10_000), min_size=1, max_size=5),
    now=st.floats(min_value=0, max_value=20_000),
    window=st.floats(min_value=1, max_value=5_000),
    order=st.randoms(use_true_random=False),
)
def test_the_timed_rule_agrees_on_replicas_holding_the_same_state(
    lives: list[float], now: float, window: float, order: object
) -> None:
    clock = [0.0]
    writers = []
    for index, life in enumerate(lives):
        clock[0] = life
        writer = Replica(f"w{index}", clock=lambda: clock[0])
        writer.observe("replica:" + writer.id, ok=True)
        writers.append(writer)
    updates = [writer.delta() for writer in writers]
    judges = [Replica(name, clock=lambda: now) for name in ("x", "y")]
    for judge in judges:
        shuffled = list(updates)
        order.shuffle(shuffled)  # type: ignore[attr-defined]
        for update in shuffled:
            judge.merge(update)
    verdicts = [
        forgetting.due(judge._view, judge._live_containers(), now, window, judge.id)
        for judge in judges
    ]
    assert verdicts[0] == verdicts[1]
    expected = {f"w{i}" for i, life in enumerate(lives) if now - life > window}
    assert verdicts[0] == expected


def test_a_tombstone_names_a_container_by_a_short_digest_and_the_full_layout_still_reads() -> None:
    cluster = _cluster("a", "b", "c")
    cluster["c"].declare("svc")
    cluster.sync_all()
    c_key = cluster["c"]._doc.key
    cluster["a"].forget("c")
    tombstones = [key for key in cluster["a"]._doc.own_entries if key[:1] == "f"]
    assert tombstones == [forgetting.tombstone_key(c_key)]
    assert len(tombstones[0]) == 2 + 12
    assert forgetting.parse_tombstone(tombstones[0]) == forgetting.digest(c_key)
    # A tombstone written in full (the earlier layout) forgets the same container.
    b = cluster["b"]
    b._doc.write([(f"f\x1f{c_key}", "At")])
    late = Replica.restore("d", [b.delta()], clock=lambda: 1000.0)
    assert late.forgotten() == {"c"} and late.entity("svc") is None
    for bad in ("f\x1f", "f\x1fshort", "f\x1f" + "!" * 12, "f\x1fno-nonce\x1f"):
        assert forgetting.parse_tombstone(bad) is None


def test_a_restored_replica_waits_a_whole_window_before_forgetting() -> None:
    """Restore counts stamps from the earlier incarnation's epoch, but the window a
    replica must have run before it forgets anyone starts when it was restored."""
    clock = [1000.0]
    a = Replica("a", clock=lambda: clock[0], forget_after=3600)
    b = Replica("b", clock=lambda: clock[0], forget_after=3600)
    a.merge(b.delta())
    saved = a.delta()
    clock[0] += 10 * 3600  # a was down for ten windows; b has been silent all along
    restored = Replica.restore("a", [saved], clock=lambda: clock[0], forget_after=3600)
    assert restored.nonce.endswith(f".{int(1000.0 * 1000):x}")  # the earlier epoch
    restored.tick()
    assert restored.forgotten() == set()  # it has not run a window yet
    clock[0] += 3600
    restored.observe("replica:a", ok=True)
    restored.tick()
    assert restored.forgotten() == {"b"}
