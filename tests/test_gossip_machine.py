"""The gossip machine (core.gossip.GossipMachine): events with an explicit ``now`` in,
commands out. No asyncio, no network, no clock: every test drives it by hand."""

from __future__ import annotations

import random

import pytest

from sphaera_crdt import Replica
from sphaera_crdt.core import causal, gossip, sync, updates
from sphaera_crdt.core.clocks import ClockWatch
from sphaera_crdt.core.constraints import observed
from sphaera_crdt.core.gossip import (
    DEBOUNCE,
    Answer,
    GossipMachine,
    Observe,
    Target,
    backoff_delay,
    round_stagger,
)
from sphaera_crdt.core.lib0 import decode_state_vector

INTERVAL = 1.0
LIVENESS = 10.0


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def members(*names: str) -> list[Target]:
    return [Target(url=f"http://{name}", peer_id=name) for name in names]


def machine(
    name: str = "a", *, peers: str = "bcde", fanout: int = 2, seed: int = 1, **kwargs: object
) -> GossipMachine:
    return GossipMachine(
        Replica(name, clock=Clock()),
        interval=INTERVAL,
        fanout=fanout,
        rng=random.Random(seed),
        members=members(*peers),
        **kwargs,  # type: ignore[arg-type]
    )


def declare_peer(replica: Replica, peer: str, url: str) -> None:
    """``replica`` holds ``peer``'s record (declared and observed by the peer itself)."""
    other = Replica(peer, clock=Clock())
    entity = f"replica:{peer}"
    other.declare(entity, kind="replica", attrs={"url": url}, requires=observed(entity, LIVENESS))
    other.observe(entity, ok=True, ttl=LIVENESS)
    replica.merge(other.delta())


# -- rounds --------------------------------------------------------------------------------


def test_the_first_round_is_half_to_one_interval_away_and_seeded() -> None:
    deadlines = [machine(seed=7).first_round(100.0) for _ in range(3)]
    assert deadlines[0] == deadlines[1] == deadlines[2]
    assert 100.0 + INTERVAL / 2 <= deadlines[0] <= 100.0 + INTERVAL


def test_a_round_chooses_fanout_targets_and_names_the_next_round() -> None:
    command = machine(fanout=2).round_due(5.0)
    assert len(command.targets) == 2 and len(set(command.targets)) == 2
    assert set(command.targets) <= set(members(*"bcde"))
    assert command.next_round == 5.0 + INTERVAL
    assert command.stagger == round_stagger(INTERVAL, 2)


def test_rounds_are_deterministic_for_a_seed() -> None:
    def picks(seed: int) -> list[tuple[Target, ...]]:
        m = machine(seed=seed)
        return [m.round_due(float(t)).targets for t in range(20)]

    assert picks(3) == picks(3)
    assert len({repr(picks(seed)) for seed in range(5)}) > 1


def test_a_round_skips_peers_in_flight_and_backing_off() -> None:
    m = machine(fanout=4)
    assert m.acquire("http://b", lambda: None)  # an exchange with b in flight
    failure = m.failed("http://c", 10.0, remote=False)
    assert failure.failures == 1 and failure.loud
    for t in range(3):
        urls = {target.url for target in m.round_due(10.0 + t / 10).targets}
        assert urls == {"http://d", "http://e"}
    # the backoff ends; the exchange with b too
    m.release("http://b")
    later = 10.0 + backoff_delay(1, INTERVAL)
    assert {t.url for t in m.round_due(later).targets} == {f"http://{n}" for n in "bcde"}


def test_backoff_doubles_and_a_success_clears_it() -> None:
    m = machine()
    assert m.failed("http://b", 0.0, remote=False).loud
    second = m.failed("http://b", 0.0, remote=False)
    assert second.failures == 2 and not second.loud
    assert m.failed("http://b", 0.0, remote=True).loud  # an unusable answer always warns
    assert all(t.url != "http://b" for t in m.targets(0.0)[0])
    assert m.succeeded("http://b")
    assert not m.succeeded("http://b")
    assert any(t.url == "http://b" for t in m.targets(0.0)[0])


def test_exchanges_with_one_peer_queue_in_order() -> None:
    m = machine()
    ran: list[str] = []
    assert m.acquire("http://b", lambda: ran.append("first"))
    assert not m.acquire("http://b", lambda: ran.append("second"))
    assert not m.acquire("http://b", lambda: ran.append("third"))
    assert m.busy("http://b")
    m.release("http://b")
    assert ran == ["second"]
    m.release("http://b")
    m.release("http://b")
    assert ran == ["second", "third"] and not m.busy("http://b")


# -- eager pushes --------------------------------------------------------------------------


def test_a_local_change_schedules_one_push_after_the_debounce() -> None:
    m = machine()
    changes: list[float | None] = []
    m.replica.subscribe_records(lambda change: changes.append(m.record_changed(change, 3.0)))
    m.replica.declare("db")
    assert changes[0] == 3.0 + DEBOUNCE
    m.replica.declare("cache")  # a push is scheduled: this change joins it
    assert all(deadline is None for deadline in changes[1:])
    push = m.push_due(4.0)
    assert push.targets == tuple(members(*"bcde"))
    m.replica.declare("queue")  # made while the push runs: another follows it
    assert m.push_ended(5.0) == 5.0 + DEBOUNCE
    m.push_due(6.0)
    assert m.push_ended(7.0) is None


def test_liveness_is_not_pushed_eagerly() -> None:
    m = machine()
    deadlines: list[float | None] = []
    m.replica.subscribe_records(lambda change: deadlines.append(m.record_changed(change, 0.0)))
    m.replica.observe("replica:a", ok=True, ttl=LIVENESS)
    assert deadlines and all(deadline is None for deadline in deadlines)


def test_a_push_skips_a_peer_known_to_hold_everything() -> None:
    a, b = machine("a", peers="b"), machine("b", peers="a")
    a.replica.declare("db")
    push = a.push_due(0.0)
    (target,) = push.targets
    request = a.push_exchange(target, push.since).start()
    assert request is not None and not request.pull
    answer = b.request_received(request.body, "a").response
    outcome = a.answered(a.push_exchange(target, push.since), target.url, Answer(body=answer), 0.0)
    assert outcome.send is None
    # b acknowledged: the next push of nothing new sends nothing to it
    again = a.push_due(1.0)
    assert a.push_exchange(target, again.since).start() is None


# -- a whole exchange, by hand --------------------------------------------------------------


def run_exchange(
    caller: GossipMachine, callee: GossipMachine, target: Target, now: float
) -> list[gossip.Request]:
    exchange = caller.round_exchange(target)
    sent: list[gossip.Request] = []
    request = exchange.start()
    while request is not None:
        sent.append(request)
        body = callee.request_received(request.body, caller.replica.id).response
        request = caller.answered(exchange, target.url, Answer(body=body), now).send
    return sent


def test_a_round_pulls_then_pushes_exactly_what_the_peer_lacks() -> None:
    a, b = machine("a", peers="b"), machine("b", peers="a")
    a.replica.declare("from-a")
    b.replica.declare("from-b")
    (target,) = a.round_due(0.0).targets
    sent = run_exchange(a, b, target, 0.0)
    assert [request.pull for request in sent] == [True, False]
    assert decode_state_vector(a.replica.state_vector()) == decode_state_vector(
        b.replica.state_vector()
    )
    # nothing left: the next round is a pull that brings nothing and pushes nothing
    (target,) = a.round_due(1.0).targets
    assert [request.pull for request in run_exchange(a, b, target, 1.0)] == [True]


def test_an_answer_from_this_replica_is_dropped() -> None:
    a = machine("a", peers="b")
    exchange = a.round_exchange(Target(url="http://b", peer_id=None))
    outcome = a.answered(exchange, "http://b", Answer(body=b"", replica_id="a"), 0.0)
    assert outcome.self_contact and outcome.send is None


# -- membership ----------------------------------------------------------------------------


def node_machine(name: str = "a", **kwargs: object) -> GossipMachine:
    return GossipMachine(
        Replica(name, clock=Clock()),
        interval=INTERVAL,
        fanout=3,
        rng=random.Random(0),
        liveness=LIVENESS,
        **kwargs,  # type: ignore[arg-type]
    )


def test_live_peers_come_from_replica_entities_and_seeds() -> None:
    m = node_machine(seeds=("http://seed/",))
    declare_peer(m.replica, "b", "http://b/")
    assert m.live_peers() == {"b": "http://b"}
    targets, refused = m.targets(0.0)
    assert targets == (Target(url="http://b", peer_id="b"), Target(url="http://seed", peer_id=None))
    assert refused == ()


def test_a_declared_url_that_is_not_allowed_is_refused_once() -> None:
    m = node_machine()
    m.allows = lambda url: url != "http://evil"
    declare_peer(m.replica, "b", "http://evil")
    targets, refused = m.targets(0.0)
    assert targets == () and refused == (Target(url="http://evil", peer_id="b"),)
    assert m.targets(0.0) == ((), ())


def test_a_peer_is_seen_only_at_its_declared_url_in_its_name() -> None:
    a, b = node_machine("a"), node_machine("b")
    declare_peer(a.replica, "b", "http://b")
    exchange = a.round_exchange(Target(url="http://b", peer_id="b"))
    request = exchange.start()
    assert request is not None
    body = b.request_received(request.body, "a").response
    wrong = a.answered(exchange, "http://alias", Answer(body=body, replica_id="b"), 10.0)
    assert wrong.observe is None  # an answer from another URL
    exchange = a.round_exchange(Target(url="http://b", peer_id="b"))
    request = exchange.start()
    assert request is not None
    body = b.request_received(request.body, "a").response
    right = a.answered(exchange, "http://b", Answer(body=body, replica_id="b"), 10.0)
    assert right.observe == Observe(replica_id="b", ttl=LIVENESS)
    # rate limited: once per quarter window
    again = a.round_exchange(Target(url="http://b", peer_id="b"))
    request = again.start()
    assert request is not None
    body = b.request_received(request.body, "a").response
    assert a.answered(again, "http://b", Answer(body=body, replica_id="b"), 11.0).observe is None
    # a caller's claim to be someone is no evidence
    assert a.request_received(
        b.round_exchange(Target(url="http://a", peer_id="a")).start().body, "c"
    )  # type: ignore[union-attr]
    assert "c" not in a.live_peers()


def test_the_heartbeat_and_observations_stop_while_the_clock_is_the_outlier() -> None:
    watch = ClockWatch(max_skew=5.0, window=LIVENESS)
    m = node_machine(clocks=watch)
    declare_peer(m.replica, "b", "http://b")
    assert m.heartbeat(0.0) == Observe(replica_id="a", ttl=LIVENESS)
    # b's answer shows a clock 30 s behind ours: with one peer measured, we are the outlier
    exchange = m.round_exchange(Target(url="http://b", peer_id="b"))
    request = exchange.start()
    assert request is not None
    body = node_machine("b").request_received(request.body, "a").response
    outcome = m.answered(
        exchange,
        "http://b",
        Answer(body=body, replica_id="b", time=-30.0, sent=0.0, received=0.0),
        0.0,
    )
    assert outcome.peer_offset == -30.0
    assert [notice.kind for notice in outcome.notices] == ["peer_away", "outlier"]
    assert outcome.observe is None
    assert m.heartbeat(1.0) is None
    assert m.outlier(1.0)[0] is not None


def test_a_clock_reading_from_an_undeclared_url_is_not_measured() -> None:
    watch = ClockWatch(max_skew=5.0, window=LIVENESS)
    m = node_machine(clocks=watch)
    declare_peer(m.replica, "b", "http://b")
    exchange = m.round_exchange(Target(url="http://elsewhere", peer_id="b"))
    request = exchange.start()
    assert request is not None
    body = node_machine("b").request_received(request.body, "a").response
    answer = Answer(body=body, replica_id="b", time=-30.0, sent=0.0, received=0.0)
    outcome = m.answered(exchange, "http://elsewhere", answer, 0.0)
    assert outcome.peer_offset is None and watch.offset("b") is None


# -- a received update is parsed once ------------------------------------------------------


def test_a_received_push_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = machine("a", peers="b"), machine("b", peers="a")
    run_exchange(b, a, Target(url="http://a", peer_id="a"), 0.0)  # b holds a's start
    a.replica.declare("db", attrs={"port": 5432})
    push = a.push_due(0.0)
    request = a.push_exchange(push.targets[0], push.since).start()
    assert request is not None
    (message,) = sync.decode_messages(request.body)
    parsed: list[bytes] = []
    real = updates.shape

    def counting(update: bytes, items: bool = False) -> updates.UpdateShape:
        parsed.append(update)
        return real(update, items)

    for module in (updates, sync, gossip, causal):
        if hasattr(module, "shape"):
            monkeypatch.setattr(module, "shape", counting)
    b.request_received(request.body, "a")
    assert parsed.count(message.payload) == 1
    assert b.replica.entity("db") is not None
    assert b.peers.peer("a").known == decode_state_vector(a.replica.state_vector())
