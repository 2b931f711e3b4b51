"""Clock skew in the library: an observation dated more than ``max_skew`` ahead of the
reader's clock is not fresh evidence until the reader's clock catches up with it; and the
sans-IO measurement of peers' clocks (core.clocks)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from sphaera_crdt import Replica, Status, all_of, exists, observed
from sphaera_crdt.core.clocks import ClockWatch, estimate_offset, parse_time
from sphaera_crdt.core.formulas import usable_from
from sphaera_crdt.errors import InvalidValue

T0 = 1000.0


def skewed(t: list[float], skew: float) -> Callable[[], float]:
    return lambda: t[0] + skew


def sync(source: Replica, target: Replica) -> None:
    target.merge(source.delta(target.state_vector()))


def statuses(replica: Replica) -> dict[str, Status]:
    """Every entity that is not absent, as :meth:`Replica.derive_all` lists them."""
    found = {e: replica.status(e) for e in replica.entity_ids()}
    return {e: s for e, s in sorted(found.items()) if s is not Status.ABSENT}


def agrees(replica: Replica, now: float) -> bool:
    return statuses(replica) == replica.derive_all(now)


def world(ahead: float, **options: float) -> tuple[list[float], Replica, Replica]:
    """A reader with a rule over observations of ``x``, and an observer ``ahead`` of it."""
    t = [T0]
    reader = Replica("reader", clock=skewed(t, 0.0), **options)
    observer = Replica("fast", clock=skewed(t, ahead))
    reader.declare("svc", requires=observed("x", within=3))
    reader.declare("app", requires=all_of(exists("svc")))
    return t, reader, observer


def test_an_observation_dated_beyond_the_skew_is_not_fresh_evidence() -> None:
    t, reader, observer = world(30.0)
    observer.observe("x")
    sync(observer, reader)
    assert reader.status("svc") is Status.ABSENT
    assert reader.status("app") is Status.ABSENT
    assert agrees(reader, t[0])
    reason = reader.entity("svc").reason  # type: ignore[union-attr]
    assert "1 dated in the future (more than the 5s allowed)" in reason
    t[0] += 7.0  # still too far ahead: the reason is the same a moment later
    reader.tick()
    assert reader.entity("svc").reason == reason  # type: ignore[union-attr]
    t[0] -= 7.0
    reader.tick()
    (item,) = reader.why("svc")["because"]["observations"]
    assert item["fresh"] is False
    assert item["dated_in_future"] == 30.0
    assert item["usable_from"] == T0 + 25.0
    assert "stale_since" not in item


def test_an_observation_within_the_skew_counts() -> None:
    t, reader, observer = world(4.0)
    observer.observe("x")
    sync(observer, reader)
    assert reader.status("svc") is Status.EXISTS
    assert "dated in the future" not in reader.entity("svc").reason  # type: ignore[union-attr]
    assert agrees(reader, t[0])


def test_it_becomes_fresh_when_the_readers_clock_catches_up() -> None:
    t, reader, observer = world(30.0)
    observer.observe("x")
    at = T0 + 30.0
    sync(observer, reader)
    usable = usable_from(at, 5.0)
    assert reader.next_deadline() == usable == T0 + 25.0
    t[0] = math.nextafter(usable, 0.0)
    assert reader.tick() == []
    assert reader.status("svc") is Status.ABSENT and agrees(reader, t[0])
    t[0] = usable
    changes = reader.tick()
    assert [(c.entity, c.after) for c in changes] == [
        ("svc", Status.EXISTS),
        ("app", Status.EXISTS),
    ]
    assert agrees(reader, t[0])
    # then it ages out as any observation does: ``within`` after its date
    deadline = reader.next_deadline()
    assert deadline is not None and deadline > at + 3.0 - 1e-9
    t[0] = deadline
    reader.tick()
    assert reader.status("svc") is Status.ABSENT and agrees(reader, t[0])


def test_a_clock_set_back_makes_a_fresh_observation_too_far_ahead_again() -> None:
    t, reader, observer = world(0.0)
    observer.observe("x")
    sync(observer, reader)
    assert reader.status("svc") is Status.EXISTS
    t[0] = T0 - 10.0  # the reader's clock is set back: the observation is 10 s ahead
    reader.tick()
    assert reader.status("svc") is Status.ABSENT and agrees(reader, t[0])
    assert reader.next_deadline() == T0 - 5.0


def test_a_far_ahead_observer_no_longer_keeps_the_dead_alive() -> None:
    # A peer's liveness: fresh observations of it within 3 s. An observer 30 s ahead saw
    # it once; the peer then died. Its evidence counts only from 25 s later (when it is
    # within the 5 s allowed), not from the moment it arrives.
    t, reader, observer = world(30.0)
    observer.observe("x")
    sync(observer, reader)
    for step in range(1, 25):
        t[0] = T0 + step
        reader.tick()
        assert reader.status("svc") is Status.ABSENT, f"alive at +{step}s"


def test_max_skew_is_a_replica_argument() -> None:
    t, reader, observer = world(30.0, max_skew=60.0)
    assert reader.max_skew == 60.0
    observer.observe("x")
    sync(observer, reader)
    assert reader.status("svc") is Status.EXISTS and agrees(reader, t[0])
    restored = Replica.restore("reader", [reader.delta()], clock=skewed(t, 0.0), max_skew=1.0)
    assert restored.max_skew == 1.0
    assert restored.status("svc") is Status.ABSENT


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, "5", True, None])
def test_a_bad_max_skew_is_refused(bad: object) -> None:
    with pytest.raises(InvalidValue):
        Replica("r", max_skew=bad)  # type: ignore[arg-type]


SKEWS = {"o1": 0.0, "o2": 30.0, "o3": -20.0, "o4": 6.0, "o5": 4.5}


@settings(max_examples=examples(150), deadline=None)
@given(st.data())
def test_incremental_equals_derive_all_with_observers_far_ahead(data: st.DataObject) -> None:
    t = [T0]
    skew = data.draw(st.sampled_from([0.0, 1.0, 5.0, 10.0]), label="max_skew")
    main = Replica("main", clock=skewed(t, 0.0), max_skew=skew)
    observers = {name: Replica(name, clock=skewed(t, s)) for name, s in SKEWS.items()}
    subjects = ["s0", "s1", "s2"]
    for index, subject in enumerate(subjects):
        within = data.draw(st.sampled_from([0.0, 1.0, 3.0, 10.0, 40.0]))
        quorum = data.draw(st.integers(1, 2))
        main.declare(f"e{index}", requires=observed(subject, within=within, quorum=quorum))
    main.declare("top", requires=all_of(exists("e0"), observed("s1", within=5, by=["o2", "o3"])))
    step = st.one_of(
        st.tuples(
            st.just("observe"),
            st.sampled_from(sorted(SKEWS)),
            st.sampled_from(subjects),
            st.booleans(),
            st.one_of(st.none(), st.sampled_from([0.0, 2.0, 30.0])),
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 4.5, 5.0, 5.5, 20.0, -7.0])),
        st.tuples(st.just("deadline")),
    )
    for kind, *args in data.draw(st.lists(step, min_size=1, max_size=30), label="steps"):
        if kind == "observe":
            observer = observers[args[0]]
            observer.observe(args[1], ok=args[2], ttl=args[3])
            sync(observer, main)
        elif kind == "advance":
            t[0] += args[0]
            main.tick()
        else:
            deadline = main.next_deadline()
            if deadline is not None:
                t[0] = deadline
                main.tick()
        assert agrees(main, t[0]), f"after {kind} {args} at {t[0]}"
        deadline = main.next_deadline()
        assert deadline is None or deadline > t[0]


# -- measuring peers' clocks (sans I/O) ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [None, "", "nan", "inf", "-inf", "1e400", " 1", "1_000", "0x10", "١٢", "1" * 40, "1.2.3"],
)
def test_unusable_time_headers_are_ignored(text: str | None) -> None:
    assert parse_time(text) is None


def test_time_headers_round_trip() -> None:
    assert parse_time(repr(1733212345.123456)) == 1733212345.123456
    assert parse_time("-5e3") == -5000.0


def test_the_offset_is_measured_from_the_midpoint_of_the_round_trip() -> None:
    assert estimate_offset(110.0, 100.0, 102.0) == 9.0
    watch = ClockWatch(5.0, 60.0)
    watch.measured("p", peer_time=110.0, sent=100.0, received=102.0)
    assert watch.offset("p") == 9.0
    assert watch.offset("q") is None


def test_a_peer_is_away_only_when_the_round_trip_cannot_explain_it() -> None:
    watch = ClockWatch(5.0, 60.0)
    # 6 s off, but the answer took 4 s: the truth may be 4 s, within the skew
    (notice,) = watch.measured("p", peer_time=1006.0, sent=998.0, received=1002.0) or [None]
    assert notice is None or notice.kind != "peer_away"
    notices = watch.measured("p", peer_time=1006.0, sent=1000.0, received=1000.0)
    assert [n.kind for n in notices] == ["peer_away", "outlier"]


def test_a_warning_once_per_peer_and_again_after_it_came_back() -> None:
    watch = ClockWatch(5.0, 60.0)
    kinds = []
    for offset in (30.0, 31.0, 29.0, 0.5, 0.0, 40.0, 40.0):
        kinds += [n.kind for n in watch.measured("p", 100.0 + offset, 100.0, 100.0)]
        kinds += [n.kind for n in watch.measured("q", 100.0, 100.0, 100.0)]
        kinds += [n.kind for n in watch.measured("r", 100.0, 100.0, 100.0)]
    assert kinds == ["peer_away", "outlier", "outlier_over", "peer_back", "peer_away"]


def test_the_outlier_is_away_from_a_strict_majority_of_recently_measured_peers() -> None:
    watch = ClockWatch(5.0, 60.0)
    watch.measured("a", 130.0, 100.0, 100.0)
    assert watch.outlier(100.0) is not None  # one of one
    watch.measured("b", 100.0, 100.0, 100.0)
    assert watch.outlier(100.0) is None  # one of two: a tie fences no one
    watch.measured("c", 131.0, 100.0, 100.0)
    outlier = watch.outlier(100.0)
    assert outlier is not None and (outlier.away, outlier.measured) == (2, 3)
    assert outlier.offset == -30.0
    assert "30.000s behind" in outlier.describe()
    # measurements older than the window no longer vote
    watch.measured("b", 159.0, 159.0, 159.0)
    assert watch.outlier(159.0) is not None
    assert watch.outlier(161.0) is None  # a and c measured 61 s ago: b alone votes
    assert watch.own_offset(1000.0) is None


def test_the_outlier_stays_so_until_measurements_say_otherwise() -> None:
    watch = ClockWatch(5.0, 60.0)
    watch.measured("a", 130.0, 100.0, 100.0)
    assert watch.current is not None
    # its peers look dead to it and it stops calling them: that proves nothing
    assert watch.check(1000.0) == [] and watch.current is not None
    assert watch.outlier(1000.0) is None
    notices = watch.measured("a", 1000.5, 1000.0, 1000.0)
    assert [n.kind for n in notices] == ["peer_back", "outlier_over"]
    assert watch.current is None
