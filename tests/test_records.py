"""The entry layout: stamps, payloads, and texts of the first layout still read."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map
from support import typed
from test_codec import VALUES

from sphaera_crdt import InvalidValue, Replica
from sphaera_crdt.core import records
from sphaera_crdt.core.records import (
    ABSENT_ATTR,
    DIGITS,
    Unreadable,
    decode_payload,
    encode_payload,
    parse_entry,
    restamp,
    split_entry,
    stamp_text,
)

SEP = "\x1f"


def test_digits_are_64_distinct_and_begin_no_payload() -> None:
    assert len(DIGITS) == len(set(DIGITS)) == 64
    payload_heads = set("{[\"-0123456789tfn!'~") | set("abcdef") | set(string.whitespace)
    assert not payload_heads & set(DIGITS)


@given(st.integers(min_value=-(2**64), max_value=2**64), st.integers(0, 2**48))
def test_stamps_round_trip(offset: int, epoch: int) -> None:
    text = stamp_text(offset)
    digits = text.removeprefix("~")
    assert digits == "A" or digits[0] != "A"  # no leading zero
    assert text.startswith("~") == (offset < 0)
    assert split_entry(text + "t", epoch) == (epoch + offset, "t")


def test_stamps_are_short() -> None:
    assert [len(stamp_text(offset)) for offset in (0, 63, 64, 4095, 4096, 86_400_000)] == [
        1,
        1,
        2,
        2,
        3,
        5,
    ]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_payloads_round_trip_with_exact_types(value: Any) -> None:
    assert typed(decode_payload(encode_payload(value))) == typed(value)


def test_scalars_take_their_short_forms() -> None:
    assert [encode_payload(value) for value in (True, False, None, "db", 5, 0.5)] == [
        "t",
        "f",
        "n",
        "'db",
        "5",
        "0.5",
    ]
    assert decode_payload("'") == ""
    assert decode_payload("'\"quoted\" 'twice'") == "\"quoted\" 'twice'"


@pytest.mark.parametrize(
    "value",
    ["lone \ud800", 10**4300, float("nan"), (1,)],
    ids=["surrogate", "huge-int", "nan", "tuple"],
)
def test_payloads_refuse_what_would_not_come_back(value: Any) -> None:
    with pytest.raises(InvalidValue, match=r"attrs\.v"):
        encode_payload(value, "attrs.v")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("B'db", (100 + 1, "db", "'db")),
        ("~Bt", (100 - 1, True, "t")),
        ("A!", (100, ABSENT_ATTR, "")),
        ("BA[1,2]", (100 + 64, [1, 2], "[1,2]")),
        # the first layout: offset in hex, then ":" and JSON, or "!"
        ("1f:5", (100 + 31, 5, "5")),
        ("-a:true", (100 - 10, True, "true")),
        ('0:"db"', (100, "db", '"db"')),
        ("3!", (103, ABSENT_ATTR, "")),
    ],
)
def test_entries_parse(text: str, parsed: tuple[int, Any, str]) -> None:
    assert parse_entry(text, 100) == parsed


@pytest.mark.parametrize("text", ["", "~", "~t", "t", "5", "{}"])
def test_entries_without_a_stamp_parse_to_none(text: str) -> None:
    assert parse_entry(text, 0) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("A", "empty payload"),
        ("A!x", "undecodable"),
        ("3!x", "undecodable"),
        ("A{", "undecodable"),
        ("Ax", "empty payload"),  # "x" is a digit of the stamp
        ("AtX", "undecodable"),
        ("g:5", "undecodable"),
        ("A" + "[" * 129 + "]" * 129, "nested deeper than 128"),
        ("A" + "[" * 5000 + "]" * 5000, "nested deeper than 128"),
        ("A" + "1" * 5000, "more than 4300 digits"),
        ("A[1e400]", "1e400 is not a finite number"),
        ('A"\\ud800"', "lone surrogate"),
        ('A{"\\udfff":1}', "lone surrogate"),
    ],
)
def test_entries_with_a_stamp_but_no_readable_payload_are_unreadable(
    text: str, problem: str
) -> None:
    parsed = parse_entry(text, 0)
    assert parsed is not None
    assert type(parsed[1]) is Unreadable
    assert problem in parsed[1].reason


def test_restamp_moves_either_layout_to_this_one() -> None:
    assert restamp("1f:5", 100, 131) == (131, "A5")
    assert restamp("3!", 0, 4) == (3, "~B!")
    assert restamp("BA'db", 0, 0) == (64, "BA'db")
    assert restamp("{}", 0, 0) is None


def _old_layout_doc(replica_id: str, nonce: str, entries: dict[str, str]) -> bytes:
    doc: Doc[Any] = Doc()
    root = doc.get("w", type=Map)
    with doc.transaction():
        container: Map[Any] = Map()
        root[f"{replica_id}{SEP}{nonce}"] = container
        for key, text in entries.items():
            container[key] = text
    return doc.get_update()


OLD_ENTRIES = {
    f"e{SEP}db{SEP}k": '0:"postgres"',
    f"e{SEP}db{SEP}q": "0:null",
    f"e{SEP}db{SEP}o": '0:"old"',
    f"e{SEP}db{SEP}x": "0:false",
    f"e{SEP}db{SEP}a{SEP}port": "0:5432",
    f"e{SEP}db{SEP}a{SEP}gone": "1!",
    f"s{SEP}db": "2:[true,null,1000.5,30.0]",
}


def test_a_peer_writing_the_first_layout_is_read() -> None:
    replica = Replica("new", clock=lambda: 1000.0)
    replica.merge(_old_layout_doc("old", "abc.0", OLD_ENTRIES))
    view = replica.entity("db")
    assert view is not None
    assert (view.kind, view.owner, view.attrs) == ("postgres", "old", {"port": 5432})
    [observation] = replica.observations("db")
    assert (observation.observer, observation.at, observation.ttl) == ("old", 1000.5, 30.0)
    assert replica.exists("db")


def test_restore_carries_first_layout_entries_over_in_this_layout() -> None:
    saved = _old_layout_doc("me", "abc.0", OLD_ENTRIES)
    replica = Replica.restore("me", [saved], clock=lambda: 1000.0, declare_self=False)
    view = replica.entity("db")
    assert view is not None and view.attrs == {"port": 5432}
    copied = replica._doc.own_entries
    assert copied.keys() == OLD_ENTRIES.keys()
    assert all(text[0] in DIGITS + records.NEGATIVE for text in copied.values())
    # Stamps keep their order across the move: a later local write still wins.
    replica.update("db", {"port": 1})
    again = Replica("peer", clock=lambda: 1000.0)
    again.merge(replica.delta())
    peer_view = again.entity("db")
    assert peer_view is not None and peer_view.attrs == {"port": 1}
