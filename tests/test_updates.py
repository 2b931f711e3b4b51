"""Reading an update's structure from its bytes, against what Yrs says of the same update."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples
from pycrdt import Array, Doc, Map, Text

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core import updates
from sphaera_crdt.core.lib0 import decode_state_vector

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.binary(max_size=20),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3),
)
#: (target, key or index, value): writes to a map, an array, a text and a nested map
OPS = st.lists(
    st.tuples(st.sampled_from(["map", "array", "text", "nested", "delete"]), VALUES),
    min_size=1,
    max_size=12,
)


def _apply(doc: Doc[Any], ops: list[tuple[str, Any]]) -> None:
    root = doc.get("m", type=Map)
    items = doc.get("a", type=Array)
    text = doc.get("t", type=Text)
    with doc.transaction():
        for index, (target, value) in enumerate(ops):
            if target == "map":
                root[f"k{index % 3}"] = value
            elif target == "array":
                items.append(value)
            elif target == "text":
                text.insert(0, str(value)[:20] or "x")
            elif target == "nested":
                root[f"n{index}"] = Map({"v": value})
            elif len(items):
                del items[0]


@settings(max_examples=examples(150), deadline=None)
@given(OPS, OPS)
def test_ranges_match_the_state_vectors_yrs_reports(first: list[Any], second: list[Any]) -> None:
    doc: Doc[Any] = Doc()
    _apply(doc, first)
    before = decode_state_vector(doc.get_state())
    full = updates.shape(doc.get_update())
    assert {client: end for client, (_, end) in full.ranges.items()} == before
    assert all(start == 0 for start, _ in full.ranges.values())
    state = doc.get_state()
    _apply(doc, second)
    after = decode_state_vector(doc.get_state())
    delta = updates.shape(doc.get_update(state))
    assert delta.ranges == {
        client: (before.get(client, 0), end)
        for client, end in after.items()
        if end > before.get(client, 0)
    }
    assert not updates.missing(delta, before)
    if delta.ranges and before:
        assert updates.missing(delta, {})


@settings(max_examples=examples(60), deadline=None)
@given(OPS)
def test_every_prefix_is_refused_or_reads_the_same_structs(ops: list[Any]) -> None:
    doc: Doc[Any] = Doc()
    _apply(doc, ops)
    update = doc.get_update()
    whole = updates.shape(update)
    for length in range(len(update)):
        try:
            part = updates.shape(update[:length])
        except InvalidUpdate:
            continue
        # Only the delete set, which follows the structs, can be cut without notice.
        assert part == whole


def test_entries_of_a_replica_are_read() -> None:
    replica = Replica("a", clock=lambda: 5.0)
    state = replica.state_vector()
    replica.observe("s", value="x" * 200)  # a string longer than one varuint byte
    replica.declare("e", attrs={"v": "é" * 70})
    shape = updates.shape(replica.delta(state))
    clocks = decode_state_vector(state)
    assert {client: end for client, (_, end) in shape.ranges.items()} == {
        client: end for client, end in replica.clocks().items() if end != clocks.get(client)
    }
