"""The gossip's sans-IO decisions (core.gossip), driven by hand between in-memory replicas."""

from __future__ import annotations

import gc
import random
import weakref

import pytest

from sphaera_crdt import RecordChange, Replica
from sphaera_crdt.core import gossip, sync
from sphaera_crdt.core.gossip import (
    Backoff,
    ExchangeKind,
    GossipPlanner,
    PeerExchange,
    PushSchedule,
    choose,
    pushes_eagerly,
)
from sphaera_crdt.core.lib0 import decode_state_vector
from sphaera_crdt.core.sync import covers
from sphaera_crdt.core.updates import shape


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def types(body: bytes) -> list[sync.MessageType]:
    return [message.type for message in sync.decode_messages(body)]


def run(
    exchange: PeerExchange, callee: GossipPlanner, caller_id: str
) -> list[tuple[gossip.Request, bytes]]:
    """Carry an exchange to its end with ``callee`` answering; returns what went over."""
    sent: list[tuple[gossip.Request, bytes]] = []
    request = exchange.start()
    while request is not None:
        answer = callee.answer(request.body, caller_id).response
        sent.append((request, answer))
        request = exchange.answered(answer, callee.replica.id)
    return sent


def converged(*replicas: Replica) -> bool:
    first = decode_state_vector(replicas[0].state_vector())
    return all(decode_state_vector(r.state_vector()) == first for r in replicas[1:])


@pytest.fixture
def trio() -> tuple[GossipPlanner, GossipPlanner, GossipPlanner]:
    clock = Clock()
    replicas = [Replica(name, clock=clock) for name in "abc"]
    planners = [GossipPlanner(replica) for replica in replicas]
    for caller in planners:  # everyone meets everyone: state vectors known all round
        for callee in planners:
            if caller is not callee:
                run(caller.round(callee.replica.id), callee, caller.replica.id)
    for planner in planners:
        planner.begin_round()
    assert converged(*replicas)
    return planners[0], planners[1], planners[2]


# -- knowledge -----------------------------------------------------------------------------


def test_learn_update_learns_the_end_clocks_of_an_incremental_update() -> None:
    writer = Replica("w")
    before = writer.state_vector()
    writer.declare("db", attrs={"port": 5432})
    update = writer.delta(before)
    ranges = shape(update).ranges
    assert all(start > 0 for start, _ in ranges.values())  # incremental: not from clock 0
    peers = sync.PeerKnowledge()
    peers.learn_update("w", update)
    assert peers.peers["w"].known == {client: end for client, (_, end) in ranges.items()}
    assert peers.peers["w"].known  # pycrdt.get_state(update) names none of these clients


def test_learn_update_refuses_garbage_and_learns_nothing() -> None:
    peers = sync.PeerKnowledge()
    with pytest.raises(sync.InvalidUpdate):
        peers.learn_update("w", b"\x05\x01")
    assert "w" not in peers.peers or peers.peers["w"].known == {}


def test_a_state_vector_that_shows_less_makes_the_peer_forgotten() -> None:
    a, b = Replica("a"), Replica("b")
    b.declare("db")
    planner = GossipPlanner(a)
    planner.learn_state("b", b.state_vector())
    empty = Replica("b")  # b restarted without its state
    planner.learn_state("b", empty.state_vector())
    assert planner.peers.peers["b"].known == decode_state_vector(empty.state_vector())


# -- rounds --------------------------------------------------------------------------------


def test_a_round_pulls_first_then_pushes_exactly_what_the_answer_shows_missing() -> None:
    a, b = GossipPlanner(Replica("a")), GossipPlanner(Replica("b"))
    a.replica.declare("x", attrs={"n": 1})
    b.replica.declare("y", attrs={"n": 2})
    exchange = a.round("b")
    first = exchange.start()
    assert first is not None and first.pull and not first.payload
    assert types(first.body) == [sync.MessageType.STEP1]
    first_answer = b.answer(first.body, "a").response
    assert types(first_answer) == [sync.MessageType.STEP2, sync.MessageType.STEP1]
    second = exchange.answered(first_answer, "b")
    assert a.replica.entity("y") is not None
    assert second is not None and not second.pull
    assert types(second.body) == [sync.MessageType.STEP2]
    assert second.payload == len(a.replica.delta(b.replica.state_vector()))  # the gap
    second_answer = b.answer(second.body, "a").response
    assert types(second_answer) == [sync.MessageType.STEP1]
    assert exchange.answered(second_answer, "b") is None
    assert exchange.requests == 2 and exchange.pushed and exchange.merges == 1
    assert converged(a.replica, b.replica)
    # b learned from the pushed update what a holds of its own
    known = b.peers.peers["a"].known
    clocks = a.replica.clocks()
    assert all(known[client] == clocks[client] for client in a.replica.writer_clients)


def test_a_round_with_a_peer_that_lacks_nothing_is_one_request() -> None:
    a, b = GossipPlanner(Replica("a")), GossipPlanner(Replica("b"))
    run(a.round("b"), b, "a")
    b.replica.declare("y")
    sent = run(a.round("b"), b, "a")
    assert len(sent) == 1
    assert a.replica.entity("y") is not None


def test_a_round_never_pushes_from_stale_knowledge(
    trio: tuple[GossipPlanner, GossipPlanner, GossipPlanner],
) -> None:
    a, b, c = trio
    b.replica.declare("big", attrs={"blob": "x" * 5000})
    run(b.round("c"), c, "b")  # c got it from b; a still believes c has what it had
    run(b.round("a"), a, "b")
    for planner in (a, b, c):
        planner.begin_round()
    assert not covers(a.peers.peer("c").known, a.replica.clocks())  # stale: a would push the blob
    sent = run(a.round("c"), c, "a")
    assert sum(request.payload for request, _ in sent) == 0
    assert sum(len(body) for _, body in sent) < 1000


# -- eager pushes --------------------------------------------------------------------------


def test_an_eager_push_carries_own_changes_only_and_pulls_nothing(
    trio: tuple[GossipPlanner, GossipPlanner, GossipPlanner],
) -> None:
    a, b, c = trio
    b.replica.declare("from-b", attrs={"blob": "y" * 3000})
    run(b.push("a", b.begin_push()), a, "b")  # a now holds b's change too
    a.replica.declare("from-a", attrs={"n": 1})
    since = a.begin_push()
    sent = run(a.push("c", since), c, "a")
    ((request, answer),) = sent
    assert types(request.body) == [sync.MessageType.UPDATE] and not request.pull
    assert types(answer) == [sync.MessageType.STEP1]
    assert request.payload < 1000  # b's 3 kB change is b's to push
    assert c.replica.entity("from-a") is not None and c.replica.entity("from-b") is None
    update = sync.decode_messages(request.body)[0].payload
    assert set(shape(update).ranges) <= set(a.replica.writer_clients)
    # the acknowledgement names the pushed clients only, not every client c knows
    acknowledged = decode_state_vector(sync.decode_messages(answer)[0].payload)
    assert acknowledged == {client: c.replica.clocks()[client] for client in shape(update).ranges}
    assert len(c.replica.clocks()) > len(acknowledged)
    # c learned what a holds of its own from the update, a what c holds from its STEP1
    own = {client: a.replica.clocks()[client] for client in a.replica.writer_clients}
    assert sync.covers(c.peers.peers["a"].known, own)
    assert a.peers.peers["c"].known == c.replica.clocks()


def test_an_eager_push_skips_a_peer_known_to_hold_the_changes(
    trio: tuple[GossipPlanner, GossipPlanner, GossipPlanner],
) -> None:
    a, b, _ = trio
    a.replica.declare("x")
    since = a.begin_push()
    assert len(run(a.push("b", since), b, "a")) == 1
    assert a.push("b", since).start() is None  # b told us it has them
    assert a.push("b", a.begin_push()).start() is None  # and nothing is new since


def test_what_writers_push_eagerly_is_not_relayed_until_the_next_round(
    trio: tuple[GossipPlanner, GossipPlanner, GossipPlanner],
) -> None:
    a, b, c = trio
    a.replica.declare("x", attrs={"blob": "z" * 2000})
    since = a.begin_push()
    run(a.push("b", since), b, "a")  # a's push to c is still in flight
    sent = run(c.round("b"), b, "c")
    assert sum(len(answer) for _, answer in sent) < 500  # b does not relay it ...
    assert c.replica.entity("x") is None
    sent = run(c.round("a"), a, "c")  # ... nor does a, whose push carries it
    assert c.replica.entity("x") is None
    b.begin_round()  # a round later the push has reached whom it reaches
    run(c.round("b"), b, "c")
    assert c.replica.entity("x") is not None
    assert converged(a.replica, b.replica, c.replica)


def test_liveness_is_not_pushed_eagerly() -> None:
    assert pushes_eagerly(RecordChange(kind="entity", id="db", local=True))
    assert pushes_eagerly(RecordChange(kind="observation", id="db", observer="a", local=True))
    assert pushes_eagerly(RecordChange(kind="entity", id="replica:a", local=True))
    heartbeat = RecordChange(kind="observation", id="replica:a", observer="a", local=True)
    assert not pushes_eagerly(heartbeat)
    assert not pushes_eagerly(RecordChange(kind="entity", id="db", local=False))


def test_push_schedule_batches_and_follows_up() -> None:
    schedule = PushSchedule()
    assert schedule.request()  # schedule one
    schedule.started()
    assert not schedule.request()  # already scheduled: it will carry this too
    schedule.begin()
    assert not schedule.request()  # made while pushing ...
    assert schedule.end()  # ... so another push follows
    schedule.begin()
    assert not schedule.end()
    assert schedule.request()


# -- targets and backoff -------------------------------------------------------------------


def test_choose_draws_distinct_eligible_targets() -> None:
    rng = random.Random(1)
    for _ in range(200):
        chosen = choose(rng, 3, 10, lambda n: n * 10, lambda value: value != 40)
        assert len(chosen) == len(set(chosen)) == 3
        assert 40 not in chosen and all(value % 10 == 0 for value in chosen)
    assert sorted(choose(rng, 5, 10, lambda n: n, lambda n: n in (2, 7))) == [2, 7]
    assert choose(rng, 2, 0, lambda n: n, lambda n: True) == []


def test_backoff_doubles_and_is_capped() -> None:
    backoff: Backoff[str] = Backoff()
    assert backoff.due("p", 0.0)
    delays = []
    for _ in range(8):
        failures = backoff.failed("p", 100.0, 1.0)
        assert not backoff.due("p", 100.0)
        delays.append(gossip.backoff_delay(failures, 1.0))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    assert backoff.due("p", 116.0)
    assert gossip.backoff_delay(9, 10.0) == 30.0  # at most 30 s ...
    assert gossip.backoff_delay(9, 60.0) == 60.0  # ... but never under one interval
    assert backoff.succeeded("p") and not backoff.succeeded("p")
    assert gossip.exchange_timeout(1.0) == 3.0
    assert gossip.exchange_timeout(0.1) == 1.0 and gossip.exchange_timeout(10) == 5.0


# -- exchange steps as data ------------------------------------------------------------------


def test_the_plans_table_is_what_the_exchanges_do() -> None:
    assert gossip.PLANS[ExchangeKind.ROUND].pull and gossip.PLANS[ExchangeKind.ROUND].follow_up
    eager = gossip.PLANS[ExchangeKind.EAGER]
    assert not eager.pull and not eager.follow_up


def test_a_bad_answer_merges_and_learns_nothing() -> None:
    a = GossipPlanner(Replica("a"))
    exchange = a.round("b")
    exchange.start()
    state = a.replica.state_vector()
    with pytest.raises(sync.InvalidMessage):
        exchange.answered(b"\x00\x07garbage", "b")
    assert a.replica.state_vector() == state and "b" not in a.peers.peers


# -- replicas are freed ------------------------------------------------------------------------


def test_a_replica_nobody_holds_is_freed() -> None:
    a, b = Replica("a"), Replica("b")
    b.declare("db", attrs={"port": 1})
    a.merge(b.delta())
    a.subscribe(lambda change: None)
    log: list[bytes] = []
    a.on_update(log.append)
    alive = weakref.ref(a)
    del a
    gc.collect()
    assert alive() is None


def test_seeded_identities_make_replicas_repeatable() -> None:
    from sphaera_crdt.sim.identity import IdentitySource

    def build(seed: int) -> tuple[int, tuple[int, int], str, dict[int, int], int]:
        identities = IdentitySource(random.Random(seed))
        replica = Replica("a", clock=lambda: 0.0, identities=identities)
        restored = Replica.restore("a", [replica.delta()], clock=lambda: 0.0, identities=identities)
        # (Yrs orders the structs of an update by a hash of its own: sizes, not bytes)
        state = decode_state_vector(restored.state_vector())
        return (
            replica.client_id,
            restored.writer_clients,
            restored.nonce,
            state,
            len(restored.delta()),
        )

    assert build(1) == build(1)
    assert build(1) != build(2)
    first = build(1)
    assert first[0] not in first[1]  # a restored replica writes with fresh client ids
