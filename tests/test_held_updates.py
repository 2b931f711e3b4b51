"""Updates held for missing predecessors: checked whole before they are held, dropped (and
counted) when Yrs refuses them once released, and bounded by count and by bytes."""

from __future__ import annotations

import logging

import bombs
import pytest
from support import snapshot

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core.causal import MAX_HELD_BYTES
from sphaera_crdt.core.lib0 import decode_state_vector


def clock() -> float:
    return 1000.0


def test_an_update_with_a_broken_delete_set_is_refused_before_it_is_held() -> None:
    predecessor, held, source = bombs.broken_delete_set()
    target = Replica("dst", clock=clock)
    before = snapshot(target)
    with pytest.raises(InvalidUpdate, match="deleted ranges"):
        target.merge(held)
    assert target.held_stats.count == 0
    assert snapshot(target) == before
    target.merge(predecessor)  # nothing held that it could release and fail
    assert decode_state_vector(target.state_vector())[source.client_id] > 0


def test_a_released_update_that_yrs_refuses_is_dropped_and_the_merge_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    predecessor, held = bombs.late_refusal()
    target = Replica("dst", clock=clock)
    assert target.merge(held) == []
    assert target.held_stats.count == 1
    assert target.held_stats.bytes == len(held)
    with caplog.at_level(logging.WARNING):
        target.merge(predecessor)  # released the held update, which Yrs refuses
    # The predecessor went in whole; the held update is gone, counted and logged.
    assert decode_state_vector(target.state_vector())[bombs.STRANGER] == 5
    stats = target.held_stats
    assert (stats.count, stats.bytes, stats.dropped["invalid"]) == (0, 0, 1)
    assert "dropped a held update" in caplog.text
    # The replica keeps working: a later update from a real peer merges.
    source = Replica("src", clock=clock)
    source.declare("db", attrs={"v": 1})
    target.merge(source.delta(target.state_vector()))
    view = target.entity("db")
    assert view is not None and view.attrs == {"v": 1}


def _never_applicable(count: int, size: int) -> tuple[list[bytes], list[bytes]]:
    """``count`` updates of about ``size`` bytes, each missing its predecessor (returned
    too, in the same order)."""
    predecessors, held = [], []
    for index in range(count):
        source = Replica(f"s{index}", clock=clock)
        predecessors.append(source.delta())
        state = source.state_vector()
        source.declare(f"big{index}", attrs={"blob": "x" * size})
        held.append(source.delta(state))
    return predecessors, held


def test_held_updates_are_bounded_by_bytes_oldest_dropped_first() -> None:
    predecessors, held = _never_applicable(40, 200_000)
    limit = 1_000_000
    target = Replica("dst", clock=clock, max_held_bytes=limit)
    for update in held:
        assert target.merge(update) == []
    stats = target.held_stats
    assert stats.bytes <= limit
    assert stats.count == 4  # four updates of 200 kB and a few bytes fit in 1 MB
    assert stats.dropped == {"count": 0, "bytes": 36, "invalid": 0}
    for update in predecessors:
        target.merge(update)
    # Only the newest four were kept, and they are the ones released now.
    assert target.entity_ids("big") == [f"big{index}" for index in range(36, 40)]
    assert target.held_stats.count == 0


def test_an_update_larger_than_the_whole_limit_is_not_held() -> None:
    _, held = _never_applicable(2, 5_000)
    target = Replica("dst", clock=clock, max_held_bytes=len(held[0]) + 100)
    target.merge(held[0])
    target.merge(held[1])  # about the same size: the first is dropped for it
    big = _never_applicable(1, 20_000)[1][0]
    target.merge(big)
    stats = target.held_stats
    assert stats.count == 1 and stats.dropped["bytes"] == 2


def test_held_bytes_have_a_default_and_refuse_nonsense() -> None:
    replica = Replica("a", clock=clock)
    assert replica.held_stats.bytes == 0
    assert MAX_HELD_BYTES == 32 * 1024 * 1024
    for bad in (-1, 1.5, "10"):
        with pytest.raises(ValueError, match="max_held_bytes"):
            Replica("a", clock=clock, max_held_bytes=bad)  # type: ignore[arg-type]


def test_restored_replicas_take_the_limit_too() -> None:
    source = Replica("a", clock=clock)
    restored = Replica.restore("a", [source.delta()], clock=clock, max_held_bytes=10)
    _, held = _never_applicable(1, 100)
    restored.merge(held[0])
    assert restored.held_stats.count == 0 and restored.held_stats.dropped["bytes"] == 1
