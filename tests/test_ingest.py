"""Taking in a whole state: a large merge derives every status anew, restore splits each
carried entry once, and the codec's quick paths read exactly what the decoder reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sphaera_crdt import RecordChange, Replica, Status
from sphaera_crdt.core import codec
from sphaera_crdt.core.records import split_entry
from sphaera_crdt.core.replica import BULK_MERGE

EPOCH = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now


def source(entities: int, clock: Clock, deltas: list[bytes] | None = None) -> Replica:
    """A replica holding ``entities`` entities: rules on most, a chain of ``exists``, a few
    retracted, observations of some. ``deltas`` collects the delta of each entity's writes."""
    replica = Replica("src", clock=clock)
    for index in range(entities):
        since = replica.state_vector()
        entity = f"svc-{index:05d}"
        requires: Any = None if index % 10 == 0 else {"exists": f"svc-{index - 1:05d}"}
        if index % 7 == 3:
            requires = {"observed": f"svc-{index - 3:05d}", "within": 20}
        replica.declare(
            entity,
            kind="service",
            attrs={"port": 8000 + index, "weight": index / 4, "big": 2**70 + index},
            requires=requires,
        )
        if index % 4 == 0:
            replica.observe(entity, ok=index % 8 == 0, value={"n": index}, ttl=30.0)
        if index % 97 == 5:
            replica.retract(entity)
        clock.now += 0.001
        if deltas is not None:
            # the first delta carries the container and the self-declaration too
            deltas.append(replica.delta(since if index else None))
    return replica


def test_a_large_merge_gives_the_statuses_events_and_records_of_small_ones() -> None:
    clock = Clock()
    deltas: list[bytes] = []
    sender = source(BULK_MERGE, clock, deltas)
    full = sender.delta()
    clock.now += 1
    bulk = Replica("dst", clock=clock)
    changes: list[Any] = []
    records: list[RecordChange] = []
    bulk.subscribe(changes.append)
    bulk.subscribe_records(records.append)
    assert bulk.merge(full) == changes
    # The same state arriving one entity at a time (each far below the bulk threshold)
    # is kept up to date step by step.
    step = Replica("dst", clock=clock)
    step_changes: list[Any] = []
    step_records: list[RecordChange] = []
    step.subscribe(step_changes.append)
    step.subscribe_records(step_records.append)
    for delta in deltas:
        step.merge(delta)
    assert bulk.entities() == step.entities()
    assert bulk.observations() == step.observations()
    assert {e: bulk.status(e) for e in sender.entity_ids()} == {
        e: step.status(e) for e in sender.entity_ids()
    }
    assert bulk.derive_all() == step.derive_all()
    # Every entity that ends up not absent was reported, with its reason, dependencies
    # first (as the engine orders them).
    final = {change.entity: change.after for change in changes}
    assert final == {c.entity: c.after for c in step_changes if c.entity in final}
    assert set(final) == {e for e, status in step.derive_all().items()} - {step.replica_entity}
    assert all(change.reason for change in changes)
    assert {(r.kind, r.id, r.observer) for r in records} == {
        (r.kind, r.id, r.observer) for r in step_records
    }


def test_a_large_merge_into_a_replica_keeps_its_statuses_in_step_afterwards() -> None:
    clock = Clock()
    sender = source(BULK_MERGE * 2, clock)
    receiver = Replica("dst", clock=clock)
    receiver.merge(sender.delta())

    def statuses(replica: Replica) -> dict[str, Any]:
        return {e: replica.status(e) for e in sender.entity_ids("svc-")}

    assert statuses(receiver) == statuses(sender)
    # Incremental upkeep goes on from the derived state.
    sender.retract("svc-00000")
    clock.now += 40  # past every ttl
    receiver.merge(sender.delta(receiver.state_vector()))
    receiver.tick()
    sender.tick()
    assert statuses(receiver) == statuses(sender)
    # What was kept up to date is what a derivation from scratch gives.
    assert receiver.derive_all() == {
        e: receiver.status(e)
        for e in receiver.entity_ids()
        if receiver.status(e) is not Status.ABSENT
    }
    assert not receiver.exists("svc-00001")


def test_restore_carries_every_own_entry_once_restamped() -> None:
    clock = Clock()
    original = source(300, clock)
    full = original.delta()
    clock.now += 5
    restored = Replica.restore("src", [full], clock=clock)
    assert restored.entities() == original.entities()
    assert restored.observations() == original.observations()
    assert restored.derive_all() == original.derive_all()
    assert restored.nonce != original.nonce
    # Only the fresh container holds its entries; each reads with the same stamp.
    doc = restored._doc
    assert [key for key in doc.containers()] == [doc.key]
    old = original._doc.own_entries
    for key, text in doc.own_entries.items():
        moved = split_entry(text, restored._epoch)
        before = split_entry(old[key], original._epoch)
        assert moved == before, key


def test_restore_moves_its_latest_incarnations_entries_as_they_are() -> None:
    """Restore counts stamps from the latest earlier epoch: those entries move unchanged,
    an older incarnation's are restamped, and every stamp keeps its value."""
    clock = Clock()
    first = Replica("src", clock=clock)
    first.declare("old", kind="service", attrs={"port": 1})
    clock.now += 100
    second = Replica("src", clock=clock)  # a later incarnation that lost its store
    second.declare("new", kind="service", attrs={"port": 2})
    second.merge(first.delta())
    clock.now += 100
    restored = Replica.restore("src", [second.delta()], clock=clock)
    assert restored._epoch == second._epoch != first._epoch
    moved = restored._doc.own_entries
    for key, text in second._doc.own_entries.items():
        assert moved[key] == text, key  # as written
    older = {k: t for k, t in first._doc.own_entries.items() if k not in second._doc.own_entries}
    assert older
    for key, text in older.items():
        assert moved[key] != text, key  # restamped ...
        assert split_entry(moved[key], restored._epoch) == split_entry(text, first._epoch)
    assert {e for e in restored.entity_ids() if not e.startswith("replica:")} == {"old", "new"}
    restored.update("old", {"port": 3})  # a later write still wins everywhere
    peer = Replica("peer", clock=clock)
    peer.merge(restored.delta())
    view = peer.entity("old")
    assert view is not None and view.attrs == {"port": 3}


NUMBERS = [
    "0",
    "-0",
    "7",
    "-12",
    "1.5",
    "-0.0",
    "1e5",
    "1E+5",
    "2.5e-3",
    "12345678901234567",
    "123456789012345678901234567890",
    "9" * 5000,
    "1e400",
    "01",
    "1.",
    ".5",
    "+1",
    "1_0",
    " 1",
    "1 ",
    "-",
    "\u0661",
    "NaN",
    "-Infinity",
]
TEXTS = ['{"a":[1,2.5,null]}', " [1]", "[1] ", "[1]x", "[", '"x"', '["\\ud800"]', "", "{}"]


@pytest.mark.parametrize("text", NUMBERS + TEXTS)
def test_the_quick_decoding_paths_read_what_the_decoder_reads(text: str) -> None:
    def outcome(decode: Any) -> tuple[str, Any]:
        try:
            value = decode(text)
        except (ValueError, RecursionError) as exc:
            return "error", (type(exc), str(exc))
        return "value", (type(value), json.dumps(value))

    assert outcome(codec._decode) == outcome(codec._DECODE)
    if text in ("12345678901234567", "123456789012345678901234567890"):
        assert type(codec.loads(text)) is int
