"""The Replica API: records, observations, events, deltas and conflict resolution."""

from __future__ import annotations

import logging
import math

import pytest
from support import snapshot

import sphaera_crdt
from sphaera_crdt import (
    Change,
    EntityView,
    InputError,
    InvalidUpdate,
    Observation,
    RecordChange,
    RemoteError,
    Replica,
    SphaeraError,
    Status,
    UnknownEntity,
)


class Clock:
    """A settable clock: ``clock.t = 5`` moves time."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sync(src: Replica, dst: Replica) -> list[Change]:
    return dst.merge(src.delta(dst.state_vector()))


def sync_both(a: Replica, b: Replica) -> None:
    sync(a, b)
    sync(b, a)


def attrs_of(replica: Replica, entity_id: str) -> dict[str, object]:
    view = replica.entity(entity_id)
    assert view is not None, f"{entity_id!r} is not declared on {replica.id!r}"
    return view.attrs


# -- errors --------------------------------------------------------------------------------


def test_every_public_error_is_a_sphaera_error() -> None:
    errors = [
        getattr(sphaera_crdt, name)
        for name in sphaera_crdt.__all__
        if isinstance(getattr(sphaera_crdt, name), type)
        and issubclass(getattr(sphaera_crdt, name), BaseException)
    ]
    assert len(errors) >= 8
    for error in errors:
        assert issubclass(error, SphaeraError), error
    for error in errors:
        if issubclass(error, InputError):
            assert issubclass(error, ValueError), error
            assert not issubclass(error, RemoteError), error
    assert issubclass(InvalidUpdate, RemoteError)
    assert issubclass(InvalidUpdate, ValueError)
    assert issubclass(UnknownEntity, LookupError)


# -- identity ------------------------------------------------------------------------------


def test_each_replica_declares_itself() -> None:
    replica = Replica("r1", clock=Clock())
    assert replica.replica_entity == "replica:r1"
    view = replica.entity("replica:r1")
    assert view is not None
    assert (view.kind, view.owner, view.status) == ("replica", "r1", Status.EXISTS)
    other = Replica("r2", clock=Clock())
    sync(replica, other)
    assert set(other.entities()) == {"replica:r1", "replica:r2"}


def test_declare_self_can_be_turned_off() -> None:
    replica = Replica("r1", clock=Clock(), declare_self=False)
    assert replica.entities() == {}


def test_replicas_get_distinct_client_ids_and_nonces() -> None:
    a, b = Replica("a", clock=Clock()), Replica("a", clock=Clock())
    assert a.client_id != b.client_id
    assert a.nonce != b.nonce


def test_now_is_the_injected_clock() -> None:
    clock = Clock(12.5)
    replica = Replica("a", clock=clock)
    assert replica.now() == 12.5
    clock.t = 13.0
    assert replica.now() == 13.0


# -- declare, update, retract --------------------------------------------------------------


def test_declare_states_the_whole_record() -> None:
    replica = Replica("a", clock=Clock())
    view = replica.declare("db", kind="postgres", attrs={"port": 5432})
    expected = EntityView(
        id="db",
        kind="postgres",
        attrs={"port": 5432},
        requires=None,
        owner="a",
        status=Status.EXISTS,
        reason=view.reason,
    )
    assert view == expected
    assert replica.entity("db") == expected
    assert replica.exists("db")
    assert replica.status("db") is Status.EXISTS


def test_redeclare_removes_attrs_it_does_not_name_everywhere() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db", kind="postgres", attrs={"port": 1, "host": "h"})
    sync(a, b)
    b.declare("db", kind="mysql", attrs={"port": 2})
    sync(b, a)
    for replica in (a, b):
        view = replica.entity("db")
        assert view is not None
        assert (view.kind, view.attrs, view.owner) == ("mysql", {"port": 2}, "b")


def test_update_merges_top_level_attrs() -> None:
    replica = Replica("a", clock=Clock())
    replica.declare("db", attrs={"port": 1, "cfg": {"x": 1, "y": 2}})
    replica.update("db", {"role": "primary", "cfg": {"x": 3}})
    assert attrs_of(replica, "db") == {"port": 1, "role": "primary", "cfg": {"x": 3}}


def test_update_and_retract_of_unknown_entity_raise_and_change_nothing() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    b.declare("elsewhere")
    before = snapshot(a)
    with pytest.raises(UnknownEntity, match="'ghost'"):
        a.update("ghost", {"x": 1})
    with pytest.raises(UnknownEntity):
        a.retract("ghost")
    with pytest.raises(UnknownEntity):
        a.update("elsewhere", {"x": 1})  # declared on b, not known here yet
    assert snapshot(a) == before
    sync(b, a)
    a.update("elsewhere", {"x": 1})
    assert attrs_of(a, "elsewhere") == {"x": 1}


def test_retract_makes_absent_everywhere_and_redeclare_brings_back() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("api", kind="svc", attrs={"v": 1})
    sync(a, b)
    assert b.exists("api")
    a.retract("api")
    changes = sync(a, b)
    assert changes == [
        Change(entity="api", before=Status.EXISTS, after=Status.ABSENT, reason=changes[0].reason)
    ]
    for replica in (a, b):
        view = replica.entity("api")
        assert view is not None  # retracted entities stay listed
        assert view.status is Status.ABSENT
        assert "api" in replica.entities()
        assert not replica.exists("api")
    b.declare("api", kind="svc", attrs={"v": 2})
    sync(b, a)
    assert a.exists("api")
    assert attrs_of(a, "api") == {"v": 2}


def test_unknown_entity_reads() -> None:
    replica = Replica("a", clock=Clock())
    assert replica.entity("nope") is None
    assert replica.status("nope") is Status.ABSENT
    assert not replica.exists("nope")
    assert "nope" not in replica.entities()


def test_entities_lists_every_declared_entity_in_order() -> None:
    replica = Replica("a", clock=Clock())
    for name in ["b", "c", "a"]:
        replica.declare(name)
    listed = replica.entities()
    assert list(listed) == ["a", "b", "c", "replica:a"]
    assert all(listed[name] == replica.entity(name) for name in listed)


# -- observations --------------------------------------------------------------------------


def test_observe_records_observer_subject_ok_value_time_and_ttl() -> None:
    clock = Clock(1234.5)
    replica = Replica("obs", clock=clock)
    returned = replica.observe("db", ok=False, value={"latency_ms": 3}, ttl=10)
    expected = Observation(
        observer="obs", subject="db", ok=False, value={"latency_ms": 3}, at=1234.5, ttl=10
    )
    assert returned == expected
    assert replica.observations("db") == [expected]
    clock.t = 2000.0  # the stored time does not follow the clock
    assert replica.observations("db")[0].at == 1234.5


def test_observe_defaults() -> None:
    replica = Replica("obs", clock=Clock(7.0))
    observation = replica.observe("db")
    assert (observation.ok, observation.value, observation.ttl, observation.at) == (
        True,
        None,
        None,
        7.0,
    )


def test_latest_observation_of_each_observer_replaces_the_earlier_one() -> None:
    clock = Clock(10.0)
    a, b = Replica("a", clock=clock), Replica("b", clock=clock)
    a.observe("db", ok=True, value=1)
    b.observe("db", ok=True, value=2)
    clock.t = 11.0
    a.observe("db", ok=False, value=3, ttl=5)
    a.observe("cache", ok=True)
    sync_both(a, b)
    for replica in (a, b):
        db = replica.observations("db")
        assert [(o.observer, o.ok, o.value, o.at, o.ttl) for o in db] == [
            ("a", False, 3, 11.0, 5),
            ("b", True, 2, 10.0, None),
        ]
        assert {o.subject for o in replica.observations()} == {"db", "cache"}
        assert replica.observations("unknown") == []


def test_observations_are_single_writer() -> None:
    # b cannot overwrite a's observation, however late b's clock is.
    a, b = Replica("a", clock=Clock(10.0)), Replica("b", clock=Clock(10_000.0))
    a.observe("db", ok=True, value="a saw")
    sync(a, b)
    b.observe("db", ok=False, value="b saw")
    sync_both(a, b)
    for replica in (a, b):
        by_observer = {o.observer: o.value for o in replica.observations("db")}
        assert by_observer == {"a": "a saw", "b": "b saw"}


def test_observation_time_must_be_finite_and_a_refusal_changes_nothing() -> None:
    clock = Clock(math.nan)
    replica = Replica("a", clock=Clock())
    replica._clock = clock  # the clock breaks after construction
    before = snapshot(replica)
    with pytest.raises(InputError):
        replica.observe("db")
    assert snapshot(replica) == before


# -- conflicts -----------------------------------------------------------------------------


def test_concurrent_updates_of_different_attrs_both_survive() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db", attrs={"port": 5432})
    sync(a, b)
    a.update("db", {"role": "primary"})
    b.update("db", {"max_connections": 200})
    sync_both(a, b)
    expected = {"port": 5432, "role": "primary", "max_connections": 200}
    assert attrs_of(a, "db") == attrs_of(b, "db") == expected


@pytest.mark.parametrize(("t_a", "t_b"), [(100.0, 100.0), (100.0, 50.0), (50.0, 100.0)])
def test_concurrent_updates_of_one_attr_converge_to_one_value(t_a: float, t_b: float) -> None:
    a, b = Replica("a", clock=Clock(t_a)), Replica("b", clock=Clock(t_b))
    c = Replica("c", clock=Clock())
    a.declare("db", attrs={"role": "none"})
    sync(a, b)
    a.update("db", {"role": "from a"})
    b.update("db", {"role": "from b"})
    # deliver in opposite orders to different replicas
    sync(b, a)
    sync(a, c)
    sync(a, b)
    values = {attrs_of(r, "db")["role"] for r in (a, b, c)}
    assert len(values) == 1
    assert values <= {"from a", "from b"}


def test_a_write_made_after_seeing_another_wins_even_with_a_slow_clock() -> None:
    fast, slow = Replica("fast", clock=Clock(1_000_000.0)), Replica("slow", clock=Clock(1.0))
    fast.declare("db", attrs={"role": "set by fast"})
    sync(fast, slow)
    slow.update("db", {"role": "set by slow after seeing fast"})
    sync(slow, fast)
    for replica in (fast, slow):
        assert attrs_of(replica, "db") == {"role": "set by slow after seeing fast"}
    # and the causal chain continues through a third replica with an even slower clock
    third = Replica("third", clock=Clock(0.0))
    sync(slow, third)
    third.update("db", {"role": "third"})
    sync(third, fast)
    sync(third, slow)
    for replica in (fast, slow, third):
        assert attrs_of(replica, "db") == {"role": "third"}


def test_a_later_write_on_one_replica_wins_even_if_its_clock_went_back() -> None:
    clock = Clock(500.0)
    a, b = Replica("a", clock=clock), Replica("b", clock=Clock())
    a.declare("db", attrs={"v": 1})
    clock.t = 10.0
    a.update("db", {"v": 2})
    clock.t = 0.0
    a.update("db", {"v": 3})
    sync(a, b)
    assert attrs_of(a, "db") == attrs_of(b, "db") == {"v": 3}


def test_concurrent_retract_and_update_converge() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db", attrs={"v": 1})
    sync(a, b)
    a.retract("db")
    b.update("db", {"v": 2})
    sync_both(a, b)
    assert a.entities() == b.entities()
    assert attrs_of(a, "db") == {"v": 2}
    assert a.status("db") is Status.ABSENT


# -- replication ---------------------------------------------------------------------------


def test_delta_since_a_peer_holds_only_what_it_lacks() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    for i in range(50):
        a.declare(f"e{i}", attrs={"payload": "x" * 100})
    sync(a, b)
    a.update("e0", {"payload": "y"})
    small = a.delta(b.state_vector())
    assert len(small) < len(a.delta()) / 10
    b.merge(small)
    assert attrs_of(b, "e0") == {"payload": "y"}
    assert {k: v for k, v in b.entities().items() if k != "replica:b"} == a.entities()


def test_a_delta_of_nothing_new_changes_nothing() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db")
    sync_both(a, b)
    before = snapshot(b)
    assert b.merge(a.delta(b.state_vector())) == []
    assert b.merge(a.delta()) == []
    assert b.merge(b.delta()) == []  # its own state, echoed back
    assert snapshot(b) == before


def test_state_vector_grows_with_writes_and_merges() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    sv0 = a.state_vector()
    a.declare("db")
    sv1 = a.state_vector()
    assert sv1 != sv0
    sync(b, a)
    assert a.state_vector() != sv1


def test_converged_replicas_have_byte_identical_state_vectors() -> None:
    # Yrs writes state vector entries in hash-map order, so two replicas holding the same
    # state can encode it in different byte orders; callers (and examples/quickstart.py)
    # compare state vectors with ==, so the replica must return one canonical encoding.
    # These client ids give different orders deterministically (with random ids, as in
    # the quickstart, it happens in about half of the runs).
    a = Replica("a", clock=Clock(), client_id=1151522062105669)
    b = Replica("b", clock=Clock(), client_id=1615799947477145)
    sync_both(a, b)
    assert sync(a, b) == [] and sync(b, a) == []
    assert a.entities() == b.entities()
    assert a.state_vector() == b.state_vector()


BAD_STATE_VECTORS = [
    b"",
    b"\x80",  # truncated varuint
    b"\x01",  # one client announced, none present
    b"\x01\x05",  # client without a clock
    b"\x00\x00",  # trailing byte
    b"\x7f\x01\x01",  # 127 clients claimed in 2 bytes
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varuint beyond 64 bits
    b"\x01\x01\xff\xff\xff\xff\x7f",  # clock beyond 32 bits
    b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f\x01",  # client id beyond 53 bits
]


@pytest.mark.parametrize("since", BAD_STATE_VECTORS, ids=repr)
def test_delta_since_a_malformed_state_vector_raises_invalid_update(since: bytes) -> None:
    replica = Replica("a", clock=Clock())
    replica.declare("db")
    before = snapshot(replica)
    with pytest.raises(InvalidUpdate):
        replica.delta(since)
    assert snapshot(replica) == before


@pytest.mark.parametrize("since", [bytearray(b"\x00"), "\x00", 0, [0]], ids=repr)
def test_delta_since_a_non_bytes_raises_invalid_update(since: object) -> None:
    replica = Replica("a", clock=Clock())
    with pytest.raises(InvalidUpdate):
        replica.delta(since)  # type: ignore[arg-type]


def test_delta_since_a_well_formed_foreign_state_vector_works() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db")
    b.merge(a.delta(b"\x00"))  # the empty state vector: everything
    assert b.entity("db") is not None
    # a state vector naming clients a has never heard of
    a.update("db", {"x": 1})
    b.merge(a.delta(b"\x02\x01\x05\x02\x07"))
    assert attrs_of(b, "db") == {"x": 1}


# -- events --------------------------------------------------------------------------------


def test_subscribers_see_local_and_merged_status_changes() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    seen_a: list[Change] = []
    seen_b: list[Change] = []
    a.subscribe(seen_a.append)
    b.subscribe(seen_b.append)
    a.declare("db")
    assert [(c.entity, c.before, c.after) for c in seen_a] == [("db", Status.ABSENT, Status.EXISTS)]
    returned = sync(a, b)
    assert seen_b == returned
    assert {(c.entity, c.before, c.after) for c in returned} == {
        ("db", Status.ABSENT, Status.EXISTS),
        ("replica:a", Status.ABSENT, Status.EXISTS),
    }
    a.update("db", {"x": 1})  # no status change, no event
    assert len(seen_a) == 1
    a.retract("db")
    assert [(c.entity, c.after) for c in seen_a[1:]] == [("db", Status.ABSENT)]
    assert all(isinstance(c.reason, str) for c in seen_a)


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    replica = Replica("a", clock=Clock())
    seen: list[Change] = []
    unsubscribe = replica.subscribe(seen.append)
    replica.declare("one")
    unsubscribe()
    unsubscribe()
    replica.declare("two")
    assert [c.entity for c in seen] == ["one"]


def test_a_failing_subscriber_is_logged_and_does_not_break_the_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica = Replica("a", clock=Clock())
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise KeyError("subscriber bug")

    replica.subscribe(broken)
    replica.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="sphaera_crdt"):
        replica.declare("db")
    assert replica.exists("db")
    assert [c.entity for c in seen] == ["db"]
    assert any("subscriber bug" in (r.exc_text or "") for r in caplog.records)


def test_record_subscribers_see_entity_and_observation_changes() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    local: list[RecordChange] = []
    remote: list[RecordChange] = []
    a.subscribe_records(local.append)
    unsubscribe = b.subscribe_records(remote.append)
    a.declare("db", attrs={"x": 1})
    a.observe("db", ok=True)
    kinds = {(c.kind, c.id, c.observer, c.local) for c in local}
    assert kinds == {("entity", "db", None, True), ("observation", "db", "a", True)}
    sync(a, b)
    kinds = {(c.kind, c.id, c.observer, c.local) for c in remote}
    assert kinds == {
        ("entity", "db", None, False),
        ("entity", "replica:a", None, False),
        ("observation", "db", "a", False),
    }
    unsubscribe()
    remote.clear()
    a.update("db", {"x": 2})
    sync(a, b)
    assert remote == []
    assert attrs_of(b, "db") == {"x": 2}


def test_merge_of_nothing_new_fires_no_record_change() -> None:
    a, b = Replica("a", clock=Clock()), Replica("b", clock=Clock())
    a.declare("db")
    sync(a, b)
    seen: list[RecordChange] = []
    b.subscribe_records(seen.append)
    b.merge(a.delta())
    assert seen == []
