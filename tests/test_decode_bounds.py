"""Counts and lengths in untrusted bytes are checked against the bytes that hold them
before pycrdt decodes anything: allocation bombs are refused by the parsers alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import bombs
import pycrdt
import pytest
from support import snapshot

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core import sync, updates
from sphaera_crdt.core.lib0 import decode_state_vector, write_varuint


@contextlib.contextmanager
def pycrdt_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """While open, pycrdt's decoders of updates and state vectors refuse to run and say
    so in the list yielded."""
    reached: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            reached.append(what)
            raise AssertionError(f"untrusted bytes reached pycrdt.{what}")

        return call

    with monkeypatch.context() as patch:
        for what in ("get_state", "merge_updates", "get_update"):
            patch.setattr(pycrdt, what, refuse(what))
        patch.setattr(pycrdt.Doc, "apply_update", refuse("Doc.apply_update"))
        yield reached


UPDATES = pytest.mark.parametrize(
    ("name", "body"), bombs.UPDATE_BOMBS, ids=[name for name, _ in bombs.UPDATE_BOMBS]
)
SYNCS = pytest.mark.parametrize(
    ("name", "body"), bombs.SYNC_BOMBS, ids=[name for name, _ in bombs.SYNC_BOMBS]
)


@UPDATES
def test_update_bombs_are_refused_by_the_parser(name: str, body: bytes) -> None:
    with pytest.raises(InvalidUpdate, match=r"claims|past the end"):
        updates.shape(body)


@UPDATES
def test_update_bombs_never_reach_pycrdt(
    name: str, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = Replica("a", clock=lambda: 1000.0)
    before = snapshot(replica)
    with pycrdt_guard(monkeypatch) as reached, pytest.raises(InvalidUpdate):
        replica.merge(body)
    assert reached == []
    assert snapshot(replica) == before
    assert replica.held_stats.count == 0


@SYNCS
def test_sync_bombs_never_reach_pycrdt(
    name: str, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = Replica("a", clock=lambda: 1000.0)
    before = snapshot(replica)
    with pycrdt_guard(monkeypatch) as reached:
        with pytest.raises((InvalidUpdate, sync.InvalidMessage)):
            sync.handle_sync(replica, body)
    assert reached == []
    assert snapshot(replica) == before


def test_a_state_vector_needs_two_bytes_per_client() -> None:
    claimed = write_varuint(2**32) + b"\x01\x01"
    with pytest.raises(InvalidUpdate, match="claims 4294967296 clients"):
        decode_state_vector(claimed)


def test_every_valid_update_still_reads_whole() -> None:
    source = Replica("src", clock=lambda: 1000.0)
    source.declare("db", attrs={"text": "é" * 200, "n": 2**70, "l": [1, {"k": None}]})
    source.retract("db")
    for update in (source.delta(), sync.EMPTY_UPDATE, pycrdt.Doc().get_update()):
        updates.shape(update)


@pytest.mark.parametrize(
    ("name", "tail"),
    [
        ("trailing bytes", b"\x00"),
        ("a delete set cut short", b"\x01"),
    ],
)
def test_an_update_is_read_to_its_exact_end(name: str, tail: bytes) -> None:
    update = Replica("src", clock=lambda: 1000.0).delta()
    with pytest.raises(InvalidUpdate):
        updates.shape(update + tail if name == "trailing bytes" else update[:-1] + tail)


def test_strings_and_types_yrs_would_refuse_are_refused_first() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.get("m", type=pycrdt.Map)["k"] = "v"
    update = doc.get_update()
    at = update.index(b"v")
    bad_utf8 = update[:at] + b"\xff" + update[at + 1 :]
    bad_type = bytes.fromhex("010107002701016d017807") + b"\x00"
    legacy_json = bytes.fromhex("010107002201016d0178") + b"\x01\x011\x012" + b"\x00"
    for data, match in (
        (bad_utf8, "UTF-8"),
        (bad_type, "shared type"),
        (legacy_json, "legacy JSON"),
    ):
        with pytest.raises(InvalidUpdate, match=match):
            updates.shape(data)
