"""The encoded state grows with the live data, not with history.

Heartbeats refreshed forever and attributes overwritten forever must not make
``delta()`` (the full state a new peer downloads) grow. Each test compares a replica that
went through a long history with a fresh one holding only the final data.
"""

from __future__ import annotations

from collections.abc import Callable

from sphaera_crdt import Replica

SUBJECTS = 200
MAX_RATIO = 2.0


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sync(src: Replica, dst: Replica) -> None:
    dst.merge(src.delta(dst.state_vector()))


def heartbeat(replica: Replica, round_: int) -> None:
    for subject in range(SUBJECTS):
        replica.observe(f"svc-{subject}", ok=round_ % 3 != 0, value={"round": round_}, ttl=5)


def fresh_observers(final_round: int, clock: Callable[[], float]) -> tuple[Replica, Replica]:
    a, b = Replica("o0", clock=clock), Replica("o1", clock=clock)
    heartbeat(a, final_round)
    heartbeat(b, final_round)
    sync(a, b)
    sync(b, a)
    return a, b


def test_heartbeats_refreshed_forever_do_not_grow_the_state() -> None:
    clock = Clock()
    a, b = Replica("o0", clock=clock), Replica("o1", clock=clock)
    rounds = 30
    for round_ in range(rounds):
        clock.t += 1
        heartbeat(a, round_)
        heartbeat(b, round_)
        sync(a, b)  # gossip as it goes: the receiver must stay small too
        sync(b, a)
    assert a.observations() == b.observations()
    assert len(a.observations()) == 2 * SUBJECTS
    assert {o.value["round"] for o in a.observations()} == {rounds - 1}
    fresh, _ = fresh_observers(rounds - 1, clock)
    baseline = len(fresh.delta())
    for replica in (a, b):
        ratio = len(replica.delta()) / baseline
        assert ratio <= MAX_RATIO, f"{replica.id}: {len(replica.delta())} B vs {baseline} B"


def test_state_size_stops_growing_as_heartbeats_go_on() -> None:
    # A bound that moves with history is no bound: the largest state seen over rounds
    # 50-60 must not exceed the largest over rounds 20-30 (one window spans more than
    # one compaction cycle of the observer's container, whatever its size).
    clock = Clock()
    observer = Replica("o0", clock=clock)
    sizes = []
    for round_ in range(60):
        clock.t += 1
        heartbeat(observer, round_)
        sizes.append(len(observer.delta()))
    early, late = max(sizes[20:30]), max(sizes[50:60])
    assert late <= early * 1.1, f"state grew from {early} B to {late} B"


def test_one_attr_overwritten_forever_does_not_grow_the_state() -> None:
    clock = Clock()
    writer = Replica("w", clock=clock)
    writer.declare("db", kind="postgres", attrs={"counter": 0, "host": "db.internal"})
    for counter in range(1, 5001):
        writer.update("db", {"counter": counter})
    view = writer.entity("db")
    assert view is not None and view.attrs == {"counter": 5000, "host": "db.internal"}
    fresh = Replica("w", clock=clock)
    fresh.declare("db", kind="postgres", attrs={"counter": 5000, "host": "db.internal"})
    ratio = len(writer.delta()) / len(fresh.delta())
    assert ratio <= MAX_RATIO, f"{len(writer.delta())} B vs {len(fresh.delta())} B"


def test_peers_follow_a_writer_that_overwrites_forever() -> None:
    # The writer compacts its container from time to time; a peer that synced before
    # and after must keep seeing every write, and stay small itself.
    clock = Clock()
    writer, peer = Replica("w", clock=clock), Replica("p", clock=clock)
    writer.declare("db", attrs={"counter": 0, "other": "x"})
    writer.observe("db", ok=True, value=0)
    sync(writer, peer)
    for counter in range(1, 3001):
        writer.update("db", {"counter": counter})
        writer.observe("db", ok=True, value=counter)
        if counter % 250 == 0:
            sync(writer, peer)
            view = peer.entity("db")
            assert view is not None and view.attrs == {"counter": counter, "other": "x"}
            assert [o.value for o in peer.observations("db")] == [counter]
    peer.update("db", {"from_peer": True})
    sync(peer, writer)
    assert writer.entities() == peer.entities()
    assert writer.observations() == peer.observations()
    # The peer holds no more history than the writer does (whose bound the tests above
    # check): applying the writer's compactions must free the peer's copy as well.
    assert len(peer.delta()) <= len(writer.delta()) * 1.1
