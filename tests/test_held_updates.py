"""Updates held for missing predecessors: checked whole before they are held, dropped (and
counted) when Yrs refuses them once released, and bounded by count and by bytes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bombs
import pytest
from support import snapshot

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core.causal import MAX_HELD_BYTES
from sphaera_crdt.core.lib0 import decode_state_vector
from sphaera_crdt.core.ydoc import DocumentAdapter


def clock() -> float:
    return 1000.0


@pytest.mark.parametrize(
    ("make", "match"),
    [(bombs.broken_delete_set, "deleted ranges"), (bombs.deep_json, "nested too deeply")],
    ids=["broken delete set", "deep JSON"],
)
def test_an_update_yrs_would_not_decode_is_refused_before_it_is_held(
    make: Callable[[], tuple[bytes, ...]], match: str
) -> None:
    predecessor, held, *_ = make()
    target = Replica("dst", clock=clock)
    before = snapshot(target)
    with pytest.raises(InvalidUpdate, match=match):
        target.merge(held)
    assert target.held_stats.count == 0
    assert snapshot(target) == before
    target.merge(predecessor)  # nothing held that it could release and fail
    assert target.held_stats.dropped == {"count": 0, "bytes": 0, "invalid": 0}


def test_a_released_update_with_a_non_type_parent_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    predecessor, held = bombs.non_type_parent()
    target = Replica("dst", clock=clock)
    assert target.merge(held) == []
    assert (target.held_stats.count, target.held_stats.bytes) == (1, len(held))
    with caplog.at_level(logging.WARNING):
        target.merge(predecessor)
    assert decode_state_vector(target.state_vector())[bombs.STRANGER] == 5
    stats = target.held_stats
    assert (stats.count, stats.bytes, stats.dropped["invalid"]) == (0, 0, 1)
    assert "must be deleted or shared ref type" in caplog.text


def test_a_released_update_that_yrs_refuses_is_dropped_and_the_merge_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every refusal known is caught before an update is held; should Yrs still refuse a
    # released one, it is dropped and the merge that released it goes on.
    source = Replica("src", clock=clock)
    predecessor = source.delta()
    state = source.state_vector()
    source.declare("db", attrs={"v": 1})
    held = source.delta(state)
    apply = DocumentAdapter.apply

    def refuse_held(self: DocumentAdapter, update: bytes, *args: Any) -> Any:
        if update == held:
            raise InvalidUpdate("cannot apply update: refused by Yrs")
        return apply(self, update, *args)

    monkeypatch.setattr(DocumentAdapter, "apply", refuse_held)
    target = Replica("dst", clock=clock)
    assert target.merge(held) == []
    with caplog.at_level(logging.WARNING):
        target.merge(predecessor)  # released the held update, which Yrs refuses
    # The predecessor went in whole; the held update is gone, counted and logged.
    assert target.entity(source.replica_entity) is not None
    assert target.entity("db") is None
    stats = target.held_stats
    assert (stats.count, stats.bytes, stats.dropped["invalid"]) == (0, 0, 1)
    assert "refused by Yrs" in caplog.text
    # Sent again once nothing refuses it, it merges.
    monkeypatch.undo()
    target.merge(held)
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


# -- parents -------------------------------------------------------------------------------


def test_an_item_under_a_string_entry_is_refused_and_changes_nothing() -> None:
    predecessor, held = bombs.non_type_parent()
    target = Replica("dst", clock=clock)
    target.merge(predecessor)
    before = snapshot(target)
    with pytest.raises(InvalidUpdate, match="must be deleted or shared ref type"):
        target.merge(held)  # its predecessor is there: checked at once, not held
    assert snapshot(target) == before


def test_an_item_under_a_non_type_of_its_own_update_is_refused() -> None:
    # client 7 from clock 0: a null in root "m", then an item whose parent is that null
    update = (
        b"\x01\x02\x07\x00" + b"\x28\x01\x01m\x01x\x01\x7e" + b"\x28\x00\x07\x00\x01y\x01\x7e\x00"
    )
    target = Replica("dst", clock=clock)
    before = snapshot(target)
    with pytest.raises(InvalidUpdate, match="7:0 is not a shared type"):
        target.merge(update)
    assert snapshot(target) == before


def test_after_a_restart_the_containers_of_peers_pass_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peer = Replica("peer", clock=clock)
    peer.declare("db", attrs={"v": 1})
    target = Replica("dst", clock=clock)
    target.merge(peer.delta())
    # A restored replica knows no type yet: the peer's next write names its container
    # (the first entry of a key has no origin, so it names its parent).
    restored = Replica.restore("dst", [target.delta()], clock=clock)
    tried: list[int] = []
    trial = DocumentAdapter.trial

    def counting(self: DocumentAdapter, update: bytes) -> None:
        tried.append(len(update))
        trial(self, update)

    monkeypatch.setattr(DocumentAdapter, "trial", counting)
    state = restored.state_vector()
    peer.update("db", {"w": 2})
    restored.merge(peer.delta(state))
    view = restored.entity("db")
    assert view is not None and view.attrs == {"v": 1, "w": 2}
    assert len(tried) == 1 and tried[0] < 40  # one probe of one parent, not the update
    state = restored.state_vector()
    peer.update("db", {"x": 3})
    restored.merge(peer.delta(state))
    assert len(tried) == 1  # the container is known to be a type now
