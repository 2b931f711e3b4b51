"""Merging: any order, any number of times, held until predecessors arrive, and hostile bytes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hostile
import pytest
from support import snapshot

from sphaera_crdt import Change, InvalidUpdate, Replica, Status
from sphaera_crdt.core.lib0 import decode_state_vector


def clock() -> float:
    return 1000.0


def sync(src: Replica, dst: Replica) -> list[Change]:
    return dst.merge(src.delta(dst.state_vector()))


def history(replica: Replica, steps: list[Callable[[Replica], object]]) -> list[bytes]:
    """Run each step on ``replica``; return the deltas of its creation and of each step."""
    deltas = [replica.delta()]
    for step in steps:
        before = replica.state_vector()
        step(replica)
        deltas.append(replica.delta(before))
    return deltas


STEPS: list[Callable[[Replica], object]] = [
    lambda r: r.declare("db", kind="postgres", attrs={"port": 5432}),
    lambda r: r.update("db", {"role": "primary"}),
    lambda r: r.observe("db", ok=True, value={"latency": 3}, ttl=10),
    lambda r: r.declare("api", attrs={"v": 2**70}),
    lambda r: r.update("db", {"port": 5433}),
    lambda r: r.retract("api"),
    lambda r: r.observe("db", ok=False, value=None),
    lambda r: r.declare("api", attrs={"v": 3}),
]


# -- order and duplicates ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_updates_apply_in_any_order_any_number_of_times(seed: int) -> None:
    rng = random.Random(seed)
    source = Replica("src", clock=clock)
    deltas = history(source, STEPS)
    shuffled = deltas + rng.sample(deltas, k=rng.randrange(len(deltas)))
    rng.shuffle(shuffled)
    target = Replica("dst", clock=clock)
    for delta in shuffled:
        target.merge(delta)
    sync(target, source)  # only "replica:dst" travels this way
    assert target.entities() == source.entities()
    assert target.observations() == source.observations()
    assert decode_state_vector(target.state_vector()) == decode_state_vector(source.state_vector())


def test_a_duplicate_changes_nothing_and_reports_no_change() -> None:
    source, target = Replica("src", clock=clock), Replica("dst", clock=clock)
    source.declare("db", attrs={"x": 1})
    delta = source.delta()
    first = target.merge(delta)
    assert [(c.entity, c.after) for c in first] == [
        ("db", Status.EXISTS),
        ("replica:src", Status.EXISTS),
    ] or {(c.entity, c.after) for c in first} == {
        ("db", Status.EXISTS),
        ("replica:src", Status.EXISTS),
    }
    before = snapshot(target)
    for _ in range(3):
        assert target.merge(delta) == []
    assert snapshot(target) == before


def test_a_stale_delta_after_newer_state_does_not_roll_back() -> None:
    source, target = Replica("src", clock=clock), Replica("dst", clock=clock)
    source.declare("db", attrs={"v": 1})
    stale = source.delta()
    source.update("db", {"v": 2})
    target.merge(source.delta())
    target.merge(stale)
    view = target.entity("db")
    assert view is not None and view.attrs == {"v": 2}


def test_a_missing_predecessor_update_is_held_until_it_arrives() -> None:
    source = Replica("src", clock=clock)
    creation, first, second, third = history(
        source,
        [
            lambda r: r.declare("db", attrs={"v": 1}),
            lambda r: r.update("db", {"v": 2, "extra": True}),
            lambda r: r.observe("db", ok=True, value="late"),
        ],
    )
    target = Replica("dst", clock=clock)
    target.merge(creation)
    empty = decode_state_vector(target.state_vector())
    assert target.merge(third) == []
    assert target.merge(second) == []
    # Held: the state vector does not claim it, and what depends on the missing
    # declaration is not visible. (Yrs may show an item that depends on nothing missing,
    # such as the observation, early; the state vector still makes peers resend it.)
    assert target.entity("db") is None
    assert decode_state_vector(target.state_vector()) == empty
    changes = target.merge(first)
    assert ("db", Status.EXISTS) in {(c.entity, c.after) for c in changes}
    view = target.entity("db")
    assert view is not None and view.attrs == {"v": 2, "extra": True}
    assert [o.value for o in target.observations("db")] == ["late"]
    assert _covers(target, source)


def _covers(holder: Replica, other: Replica) -> bool:
    """Whether ``holder``'s state vector has everything ``other``'s has."""
    mine = decode_state_vector(holder.state_vector())
    return all(
        mine.get(client, 0) >= clock
        for client, clock in decode_state_vector(other.state_vector()).items()
    )


def test_a_held_update_applies_when_a_relay_brings_its_predecessors() -> None:
    a, b, c = (Replica(name, clock=clock) for name in "abc")
    a.declare("db", attrs={"from": "a"})
    sync(a, b)
    sync(b, a)  # a now also holds b's earlier writes and can relay them
    b_before = b.state_vector()
    b.update("db", {"from": "b", "b": 1})
    b_only = b.delta(b_before)  # b's newest write, without anything before it
    c.merge(b_only)
    assert c.entity("db") is None
    assert decode_state_vector(c.state_vector()).get(b.client_id, 0) == 0
    sync(a, c)  # a never saw b's update, but brings everything before it
    view = c.entity("db")
    assert view is not None and view.attrs == {"from": "b", "b": 1}
    assert (
        decode_state_vector(c.state_vector())[b.client_id]
        == (decode_state_vector(b.state_vector())[b.client_id])
    )


def test_merge_refuses_non_bytes() -> None:
    replica = Replica("a", clock=clock)
    delta = replica.delta()
    before = snapshot(replica)
    for bad in (bytearray(delta), memoryview(delta), delta.hex(), None, 5):
        with pytest.raises(InvalidUpdate):
            replica.merge(bad)  # type: ignore[arg-type]
    assert snapshot(replica) == before


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x01", b"\xff", b"abc", b"\x01\x01", b"\x80" * 20],
    ids=repr,
)
def test_short_garbage_raises_invalid_update_and_changes_nothing(data: bytes) -> None:
    replica = Replica("a", clock=clock)
    replica.declare("db", attrs={"x": 1})
    before = snapshot(replica)
    with pytest.raises(InvalidUpdate):
        replica.merge(data)
    assert snapshot(replica) == before


def test_the_empty_update_is_accepted_and_changes_nothing() -> None:
    replica = Replica("a", clock=clock)
    before = snapshot(replica)
    assert replica.merge(b"\x00\x00") == []
    assert snapshot(replica) == before


# -- hostile bytes -------------------------------------------------------------------------
# The checks live in hostile.py and run in a child process: an input that takes the
# interpreter down (a Rust panic during a commit) then fails one test, with its bytes.

HOSTILE = Path(__file__).with_name("hostile.py")


Records = list[dict[str, Any]]


def _run_hostile(*args: str) -> tuple[int, Records, Records, str | None]:
    """Run hostile.py; return the input count, started and finished records, and a crash."""
    result = subprocess.run(
        [sys.executable, str(HOSTILE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HOSTILE.parent,
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    [total] = [r["total"] for r in records if "total" in r]
    started = [r for r in records if "start" in r]
    finished = [r for r in records if "done" in r]
    crash = None
    if result.returncode != 0:
        last = started[-1] if started else {}
        stderr = result.stderr.strip().splitlines()
        crash = (
            f"the replica process died (exit code {result.returncode}) merging input "
            f"{last.get('label')!r} = {last.get('data')} (bare pycrdt raises "
            f"{last.get('raw')}); stderr ends: {stderr[-3:]}"
        )
    return total, started, finished, crash


@pytest.mark.slow
def test_the_hostile_inputs_include_ones_that_make_yrs_panic() -> None:
    # Guards the fuzz test: it must exercise the PanicException path, not only ValueErrors.
    fixture = hostile.Fixture()
    raw = [
        hostile.raw_apply_error(fixture.base, data)
        for _, data in hostile.hostile_inputs(fixture, seed=1)
    ]
    assert len(raw) >= 400
    assert raw.count("PanicException") >= 1
    assert raw.count("ValueError") >= 100
    assert raw.count(None) >= 50  # accepted by Yrs: the "survive it" branch is exercised


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_bytes_raise_invalid_update_and_change_nothing_or_are_survived(
    seed: int,
) -> None:
    problems: list[str] = []
    finished: Records = []
    first, total = 0, 1
    while first < total:
        total, started, done, crash = _run_hostile("fuzz", str(seed), str(first))
        finished.extend(done)
        labels = {r["start"]: r["label"] for r in started}
        problems.extend(f"{labels[r['done']]}: {r['problem']}" for r in done if r["problem"])
        if crash is None:
            break
        problems.append(crash)
        first = started[-1]["start"] + 1  # resume after the input that crashed
    assert total >= 400
    assert problems == [], f"{len(problems)} of {total} inputs: {problems[:5]}"
    assert len(finished) == total
    accepted = sum(r["accepted"] for r in finished)
    assert 0 < accepted < len(finished)


def test_a_panicking_input_raises_invalid_update_and_changes_nothing() -> None:
    total, started, finished, crash = _run_hostile("panic")
    assert total == 1
    assert [r["raw"] for r in started] == ["PanicException"]
    assert crash is None, crash
    assert [(r["accepted"], r["problem"]) for r in finished] == [(False, None)]
