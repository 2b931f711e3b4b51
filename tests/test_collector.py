"""Bulk reads pause Python's cyclic collector, and always turn it back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sphaera_crdt import Replica
from sphaera_crdt.core import collector
from sphaera_crdt.core.replica import BULK_BYTES
from sphaera_crdt.errors import InvalidUpdate


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_turns_the_collector_off_and_back_on(collector_on: None) -> None:
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off(collector_on: None) -> None:
    gc.disable()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def _collections_during(work: object) -> int:
    """How many collections ran while ``work()`` ran."""
    runs = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        work()  # type: ignore[operator]
    finally:
        gc.callbacks.remove(count)
    return len(runs)


def test_large_merges_and_restores_run_with_the_collector_paused(collector_on: None) -> None:
    source = Replica("src")
    for index in range(600):
        source.declare(f"svc-{index:04d}", kind="service", attrs={"port": index, "zone": "a"})
    state = source.delta()
    assert len(state) >= BULK_BYTES
    gc.collect()
    # The control: the same merge without the pause runs young collections (one every
    # few hundred allocations), so a count of zero below means something.
    control = Replica("control")
    assert _collections_during(lambda: control._merge(state, None)) >= 5
    fresh = Replica("dst")
    # at most one: the young collection that may run as soon as the collector is back
    assert _collections_during(lambda: fresh.merge(state)) <= 1
    assert len(fresh.entity_ids("svc-")) == 600
    assert gc.isenabled()
    assert _collections_during(lambda: Replica.restore("src", [state])) <= 1
    assert gc.isenabled()


def test_the_collector_comes_back_after_a_refused_update(collector_on: None) -> None:
    with pytest.raises(InvalidUpdate):
        Replica("dst").merge(b"\xff" * BULK_BYTES)
    assert gc.isenabled()
    with pytest.raises(InvalidUpdate):
        Replica.restore("dst", [b"\xff" * 16])
    assert gc.isenabled()
