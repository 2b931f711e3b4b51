"""The in-memory cluster of sphaera_crdt.testing."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from sphaera_crdt import Replica, Status
from sphaera_crdt.core import sync
from sphaera_crdt.core.updates import missing, shape
from sphaera_crdt.testing import Cluster, ConvergenceError, Message, PumpReport

STEP1 = sync.MessageType.STEP1


def populated(seed: int = 0, size: int = 4) -> Cluster:
    cluster = Cluster([f"r{i}" for i in range(size)], seed=seed)
    for round_ in range(3):
        for replica in cluster:
            replica.declare(f"{replica.id}-{round_}", attrs={"round": round_})
            replica.observe(f"{replica.id}-{round_}", ok=True, value=round_)
    return cluster


# -- construction --------------------------------------------------------------------------


def test_replicas_from_ids_and_objects() -> None:
    own = Replica("own", clock=lambda: 42.0)
    cluster = Cluster(["a", "b", own])
    assert cluster.ids == ["a", "b", "own"]
    assert len(cluster) == 3
    assert cluster["own"] is own
    assert [replica.id for replica in cluster] == ["a", "b", "own"]
    assert cluster["own"].now() == 42.0


def test_duplicate_or_missing_replicas_are_refused() -> None:
    with pytest.raises(ValueError, match="already"):
        Cluster(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        Cluster([])
    cluster = Cluster(["a"])
    with pytest.raises(ValueError, match="already"):
        cluster.add(Replica("a"))
    with pytest.raises(KeyError):
        cluster["nope"]


def test_the_cluster_clock_is_deterministic() -> None:
    cluster = Cluster(["a", "b"], start=100.0)
    assert cluster["a"].now() == 100.0
    assert cluster.advance(2.5) == 102.5
    observation = cluster["b"].observe("x")
    assert observation.at == 102.5


def test_an_injected_clock_is_used_by_replicas_created_from_ids() -> None:
    t = [7.0]
    cluster = Cluster(["a"], clock=lambda: t[0])
    t[0] = 9.0
    assert cluster["a"].now() == 9.0
    assert cluster.add("b").now() == 9.0


# -- sync, send and deliver ----------------------------------------------------------------


def test_sync_sends_what_the_receiver_lacks() -> None:
    cluster = Cluster(["a", "b"])
    cluster["a"].declare("db", attrs={"port": 1})
    changes = cluster.sync("a", "b")
    assert ("db", Status.EXISTS) in {(c.entity, c.after) for c in changes}
    view = cluster["b"].entity("db")
    assert view is not None and view.attrs == {"port": 1}
    assert not cluster.converged()  # b's own replica entity has not gone to a yet
    cluster.sync("b", "a")
    assert cluster.converged()
    cluster.assert_converged()


def test_send_queues_and_deliver_merges_oldest_first() -> None:
    cluster = Cluster(["a", "b", "c"])
    cluster["a"].declare("db")
    first = cluster.send("a", "b")
    second = cluster.send("a", "c")
    assert cluster.in_flight == (first, second)
    assert cluster["b"].entity("db") is None  # nothing arrives until delivered
    cluster.deliver()
    assert cluster.in_flight == (second,)
    assert cluster["b"].entity("db") is not None
    assert cluster["c"].entity("db") is None
    cluster.deliver(second)
    assert cluster.in_flight == ()
    assert cluster["c"].entity("db") is not None
    assert cluster.delivered == (first, second)
    with pytest.raises(LookupError):
        cluster.deliver()


def test_a_stale_message_can_be_delivered_again() -> None:
    cluster = Cluster(["a", "b"])
    cluster["a"].declare("db", attrs={"v": 1})
    stale = cluster.send("a", "b")
    cluster.deliver()
    cluster["a"].update("db", {"v": 2})
    cluster.sync("a", "b")
    assert cluster.deliver(stale) == []
    view = cluster["b"].entity("db")
    assert view is not None and view.attrs == {"v": 2}
    assert cluster.delivered.count(stale) == 2


def test_send_since_the_empty_state_vector_sends_everything() -> None:
    cluster = Cluster(["a", "b"])
    cluster["a"].declare("db")
    cluster.sync("a", "b")
    partial = cluster.send("a", "b")
    full = cluster.send("a", "b", since=b"\x00")
    assert len(full.update) > len(partial.update)


def test_messages_and_reports_are_frozen_and_self_checking() -> None:
    message = Message(seq=0, src="a", dst="b", update=b"\x00\x00")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.seq = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        Message(seq=-1, src="a", dst="b", update=b"")
    with pytest.raises(TypeError):
        Message(seq=0, src="a", dst="b", update=bytearray())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta, a request or an answer"):
        Message(seq=0, src="a", dst="b", update=b"", kind="push")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PumpReport(
            rounds=-1, sent=0, delivered=0, dropped=0, duplicated=0, in_flight=0, converged=True
        )


# -- pump ----------------------------------------------------------------------------------


def test_a_reliable_pump_converges_and_stops() -> None:
    cluster = populated()
    report = cluster.pump()
    assert report.converged
    assert report.in_flight == 0
    assert report.dropped == report.duplicated == 0
    assert report.delivered == report.sent > 0
    cluster.assert_converged()
    assert len(cluster["r0"].entities()) == 4 * 3 + 4
    assert cluster.pump() == PumpReport(
        rounds=0, sent=0, delivered=0, dropped=0, duplicated=0, in_flight=0, converged=True
    )


def test_an_unreliable_pump_still_converges_when_run_to_the_end() -> None:
    cluster = populated(seed=3)
    report = cluster.pump(drop=0.4, duplicate=0.3, reorder=True)
    assert report.converged and report.in_flight == 0
    assert report.dropped > 0 and report.duplicated > 0
    cluster.assert_converged()


def test_a_reordering_pump_to_the_end_stops_soon_after_converging() -> None:
    # The machines gossip every round, converged or not: once the state vectors agree no
    # round starts, and what is in flight is delivered (held back at random, still).
    cluster = populated(seed=4, size=10)
    report = cluster.pump(drop=0.1, duplicate=0.1, reorder=True)
    assert report.converged and report.in_flight == 0 and cluster.in_flight == ()
    assert report.rounds < 30
    cluster.assert_converged()


def test_pump_faults_are_real() -> None:
    cluster = populated(seed=5)
    report = cluster.pump(drop=0.3, duplicate=0.5, reorder=True, rounds=6)
    seqs = [message.seq for message in cluster.delivered]
    # reordered: some message is delivered after a younger one
    assert any(later < earlier for earlier, later in itertools.pairwise(seqs))
    # duplicated: some message is delivered twice
    assert len(seqs) > len(set(seqs))
    # dropped: some message the pump created (seqs 0 .. sent - 1: nothing was sent before)
    # never arrived, even after settling (which delivers answers of its own)
    cluster.settle()
    created = set(range(report.sent))
    assert created - {message.seq for message in cluster.delivered}
    cluster.assert_converged()


def _pushed_updates(message: Message) -> list[bytes]:
    """The updates a gossip request pushes (its UPDATE and STEP2 messages)."""
    return [m.payload for m in sync.decode_messages(message.update) if m.type is not STEP1]


def test_a_lost_message_leaves_a_gap_that_later_gossip_repairs() -> None:
    # An eager push carries the writer's changes since its previous push. When that push
    # is lost, the next one lacks its predecessors: the receiver holds it until a round
    # (a pull of what the receiver lacks, computed from its state vector) fills the gap.
    cluster = Cluster(["a", "b"], seed=0)
    cluster.pump()
    a_client = cluster["a"].client_id
    cluster["a"].declare("first")
    lost = cluster.pump(drop=1.0, rounds=1)  # the push of "first" (and each request) is lost
    assert lost.delivered == 0 and lost.dropped == lost.sent > 0
    cluster["a"].declare("second")
    # The gap stays open: no round repairs it while the lost exchanges wait for their
    # deadline and the peers back off, and the push of "second" waits for the lost one.
    held: list[bytes] = []
    for _ in range(10):
        before = len(cluster.delivered)
        vector = cluster.state_vectors()["b"]
        cluster.pump(rounds=1)
        requests = [m for m in cluster.delivered[before:] if m.kind == "request"]
        pushes = [m for m in requests if m.src == "a" and m.dst == "b"]
        held = [u for m in pushes for u in _pushed_updates(m) if missing(shape(u), vector)]
        if held:
            break
        assert cluster["b"].entity("first") is None
        assert cluster.state_vectors()["b"].get(a_client, 0) == vector.get(a_client, 0)
    # The push of "second" reached b without "first": its predecessors were missing there.
    assert len(held) == 1
    assert shape(held[0]).ranges[a_client][0] > vector[a_client]
    # In the same round b's pull brought what it lacked, "first" with "second" again;
    # the held push has been integrated and nothing is held any longer.
    assert cluster["b"].entity("first") is not None
    assert cluster["b"].entity("second") is not None
    assert cluster["b"].held_stats.count == 0
    cluster.pump()
    cluster.assert_converged()


def test_pump_carries_the_machines_sync_requests_and_answers() -> None:
    cluster = Cluster(["a", "b"], seed=1, start=50.0)
    cluster["a"].declare("db")
    report = cluster.pump(rounds=1)
    assert cluster.converged()
    kinds = [message.kind for message in cluster.delivered]
    assert set(kinds) == {"request", "answer"} and len(kinds) == report.delivered
    assert kinds.count("request") == kinds.count("answer")  # every request answered
    for message in cluster.delivered:
        assert sync.decode_messages(message.update)  # sync bodies, not raw deltas
    assert cluster.time == 50.0  # gossip does not move the replicas' clock


def test_a_request_delivered_again_is_answered_again_and_the_late_answer_ignored() -> None:
    cluster = Cluster(["a", "b"], seed=2)
    cluster.pump()
    request = next(m for m in cluster.delivered if m.kind == "request")
    answer = next(m for m in cluster.delivered if m.kind == "answer")
    assert cluster.deliver(answer) == [] and cluster.in_flight == ()
    cluster.deliver(request)
    (again,) = cluster.in_flight
    assert again.kind == "answer" and (again.src, again.dst) == (request.dst, request.src)
    assert cluster.deliver() == [] and cluster.in_flight == ()  # its exchange is over
    cluster.assert_converged()


def test_a_replica_added_after_pumping_becomes_every_machines_peer() -> None:
    cluster = populated(size=3)
    cluster.pump()
    cluster.add("late").declare("late-entity")
    report = cluster.pump()
    assert report.converged
    cluster.assert_converged()
    assert cluster["r0"].entity("late-entity") is not None


def test_pump_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[PumpReport, list[tuple[int, str, str]]]:
        cluster = populated(seed=seed)
        report = cluster.pump(drop=0.3, duplicate=0.3, reorder=True, rounds=5)
        return report, [(m.seq, m.src, m.dst) for m in cluster.delivered]

    assert run(11) == run(11)
    assert len({repr(run(seed)) for seed in range(5)}) > 1


def test_pump_rounds_limit_the_work() -> None:
    cluster = populated()
    assert cluster.pump(rounds=0).rounds == 0
    assert not cluster.converged()
    report = cluster.pump(rounds=1)
    assert report.rounds == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"drop": -0.1}, {"drop": 1.5}, {"duplicate": 2.0}, {"drop": 1.0}, {"rounds": -1}],
    ids=repr,
)
def test_pump_refuses_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Cluster(["a", "b"]).pump(**kwargs)  # type: ignore[arg-type]


def test_pump_reports_failure_to_converge() -> None:
    cluster = Cluster(["a", "b"], max_rounds=20)
    cluster["a"].declare("x")
    with pytest.raises(ConvergenceError, match="after 20 rounds"):
        cluster.pump(drop=0.999999)
    with pytest.raises(ValueError):
        Cluster(["a"], max_rounds=0)


# -- settle and checks ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_settle_delivers_everything_and_converges(seed: int) -> None:
    cluster = populated(seed=seed, size=5)
    cluster.pump(drop=0.5, duplicate=0.5, reorder=True, rounds=3)
    cluster["r1"].update("r1-0", {"late": True})
    cluster.settle()
    assert cluster.in_flight == ()
    assert cluster.converged()
    cluster.assert_converged()
    for replica in cluster:
        view = replica.entity("r1-0")
        assert view is not None and view.attrs == {"round": 0, "late": True}
    # nothing left to send: a further pump moves nothing
    assert cluster.pump().sent == 0


def test_settle_with_a_single_replica() -> None:
    cluster = Cluster(["solo"])
    cluster["solo"].declare("x")
    assert cluster.settle() == []
    assert cluster.converged()


def test_assert_converged_names_the_difference() -> None:
    cluster = Cluster(["a", "b"])
    cluster["a"].declare("db")
    with pytest.raises(ConvergenceError, match="state vectors differ"):
        cluster.assert_converged()
    assert isinstance(ConvergenceError("x"), AssertionError)


def test_state_vectors_are_compared_by_content() -> None:
    cluster = populated(size=5)
    cluster.settle()
    vectors = cluster.state_vectors()
    assert len(vectors) == 5
    assert all(vector == vectors["r0"] for vector in vectors.values())
    for replica in cluster:  # every replica's own writes are in everyone's vector
        assert vectors["r0"][replica.client_id] > 0
    assert cluster.converged()
