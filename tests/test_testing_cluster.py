"""The in-memory cluster of sphaera_crdt.testing."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from sphaera_crdt import Replica, Status
from sphaera_crdt.testing import Cluster, ConvergenceError, Message, PumpReport


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


def test_pump_faults_are_real() -> None:
    cluster = populated(seed=5)
    report = cluster.pump(drop=0.3, duplicate=0.5, reorder=True, rounds=6)
    seqs = [message.seq for message in cluster.delivered]
    # reordered: some message is delivered after a younger one
    assert any(later < earlier for earlier, later in itertools.pairwise(seqs))
    # duplicated: some message is delivered twice
    assert len(seqs) > len(set(seqs))
    # dropped: some message was created and never arrived, even after settling
    cluster.settle()
    created = report.sent
    assert len({message.seq for message in cluster.delivered}) < created
    cluster.assert_converged()


def test_a_lost_message_leaves_a_gap_that_later_gossip_repairs() -> None:
    # The sender assumes what it pushed arrived; when it did not, the next push lacks
    # its predecessors and waits at the receiver until state vectors reveal the gap.
    cluster = Cluster(["a", "b"], seed=0)
    cluster.pump(rounds=1)
    cluster["a"].declare("first")
    cluster.pump(drop=1.0, rounds=1)  # the push of "first" (and every state vector) is lost
    cluster["a"].declare("second")
    report = cluster.pump(rounds=1)
    assert report.delivered == 1
    a_client = cluster["a"].client_id
    vectors = cluster.state_vectors()
    # held: b's state vector does not claim a's newest writes, whose predecessor is missing
    assert vectors["b"][a_client] < vectors["a"][a_client]
    assert cluster["b"].entity("first") is None
    cluster.pump()  # b's state vector reaches a, which resends what b lacks
    assert cluster["b"].entity("first") is not None
    assert cluster["b"].entity("second") is not None
    cluster.assert_converged()


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
