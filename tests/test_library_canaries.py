"""Canaries: one strict xfail per workaround of a pycrdt or Yrs bug in the package.

Each test asserts what the library would do without the bug, so it fails today and pytest
counts it as expected (``xfail``). The day a pycrdt release fixes the bug, the test passes,
``strict=True`` turns that pass into a failure, and the reason names the workaround that
can then go. ``raises=AssertionError``: only the bug itself counts as the expected failure;
any other error (a renamed API, a broken set-up) fails the test outright.

The canaries talk to pycrdt directly, never through the package: they pin the library's
behaviour, and the package's own tests pin what the workarounds do with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pycrdt import Doc, Map


def canary(*, bug: str, workaround: str) -> pytest.MarkDecorator:
    """The strict xfail of a canary: ``bug`` in the library, ``workaround`` the code that
    works around it and can go once the test passes."""
    return pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason=f"canary: {bug}; worked around by {workaround}. "
        "XPASS(strict) means the library fixed it: remove the workaround and this test.",
    )


def varuint(value: int) -> bytes:
    """lib0's unsigned varint: seven bits a byte, low bits first."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


#: The memory canaries read /proc/self.
LINUX = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")
#: An update whose first count claims 2**28 clients, and nothing after it.
CLAIMS_2_28_CLIENTS = varuint(2**28) + b"\x00"
#: A state vector whose count claims 2**24 clients, and nothing after it.
CLAIMS_2_24_CLIENTS = varuint(2**24) + b"\x00"


def clocks(doc: Doc[Any]) -> dict[int, int]:
    """A document's state vector as ``{client: clock}``."""
    data = doc.get_state()
    position = 0

    def read() -> int:
        nonlocal position
        value = shift = 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    return {read(): read() for _ in range(read())}


def applies(doc: Doc[Any], update: bytes) -> bool:
    """Whether Yrs integrates ``update`` into ``doc`` without an error."""
    try:
        doc.apply_update(update)
    except (ValueError, RuntimeError):
        return False
    return True


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic: pycrdt raises them as ``pyo3_runtime.PanicException``,
    a ``BaseException`` whose module cannot be imported before the first panic."""
    return type(exc).__name__ == "PanicException"


def in_a_fresh_process(code: str) -> str:
    """Run ``code`` in a fresh interpreter (limits and peak memory are per process)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # a crash is not the bug this canary pins
    return done.stdout.strip()


def writes(*pairs: tuple[str, str]) -> tuple[Map[Any], list[bytes], Doc[Any]]:
    """A writer's map after one transaction per ``(key, value)``, and each one's update."""
    doc: Doc[Any] = Doc(client_id=1)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    target = doc.get("m", type=Map)
    for key, value in pairs:
        with doc.transaction():
            target[key] = value
    return target, updates, doc


@canary(
    bug="Yrs loses map entries when it retries a pending update",
    workaround=(
        "the causal gate, CausalGate in sphaera_crdt/core/causal.py with updates.missing in "
        "core/updates.py, which holds updates until their predecessors arrive"
    ),
)
def test_yrs_retries_a_pending_update_without_losing_entries() -> None:
    """Guards :class:`sphaera_crdt.core.causal.CausalGate` (core/causal.py), with
    :func:`sphaera_crdt.core.updates.missing` (core/updates.py): the replica holds an update
    whose predecessors are missing instead of leaving it pending inside Yrs, because
    Yrs' retry of a pending update loses map entries and leaves the state vector short.
    """
    written, updates, writer = writes(("k", "a"), ("j", "b"), ("k", "c"))
    reader: Doc[Any] = Doc()
    for index in (1, 2, 0):  # both later updates wait for the first
        reader.apply_update(updates[index])
    assert reader.get("m", type=Map).to_py() == written.to_py() == {"k": "c", "j": "b"}
    assert clocks(reader) == clocks(writer) == {1: 3}


@canary(
    bug="Yrs integrates part of an update before it finds a parent that is not a shared type",
    workaround=(
        "the parent probe, CausalGate._check_parents and _probe in sphaera_crdt/core/causal.py "
        "with DocumentAdapter.trial in core/ydoc.py"
    ),
)
def test_yrs_refuses_an_update_with_a_non_type_parent_whole() -> None:
    """Guards ``CausalGate._check_parents`` and ``_probe`` (core/causal.py), with
    :meth:`sphaera_crdt.core.ydoc.DocumentAdapter.trial` (core/ydoc.py): Yrs checks that
    an item's parent is a shared type only while integrating, so an update whose second
    item hangs under a string leaves its first item in the document and then fails.
    """
    doc: Doc[Any] = Doc(client_id=1)
    doc.get("m", type=Map)["x"] = "text"  # item 1:0, a string: no parent for anything
    under_root = b"\x28\x01" + b"\x01m" + b"\x01y" + b"\x01\x7e"  # m["y"] = null
    under_text = b"\x28\x00" + varuint(1) + varuint(0) + b"\x01p\x01\x7e"  # (1:0)["p"]
    update = b"\x01\x02" + varuint(2) + b"\x00" + under_root + under_text + b"\x00"
    assert not applies(doc, update)
    assert doc.get("m", type=Map).to_py() == {"x": "text"}
    assert clocks(doc) == {1: 1}


@canary(
    bug="Yrs reads one legacy JSON value (ref 2) more than the count says",
    workaround="the refusal of ref 2 in _content_length, sphaera_crdt/core/updates.py",
)
def test_yrs_reads_legacy_json_content_as_counted() -> None:
    """Guards the refusal of legacy JSON content in ``_content_length``
    (core/updates.py): Yrs reads one string more than the count it writes, so no two
    implementations agree on where such content ends, and the walk refuses it.
    """
    head = bytes.fromhex("010108002201016d0178")  # client 8, one JSON item in m["x"]
    doc: Doc[Any] = Doc()
    # Today Yrs refuses this (a count of 1, one value) and reads a count of 0 followed by
    # one value as one value.
    assert applies(doc, head + b"\x01\x011" + b"\x00")
    assert clocks(doc) == {8: 1}


@canary(
    bug="pycrdt panics half-way through a write on a lone surrogate",
    workaround=(
        "the UTF-8 checks of codec.dumps_checked and codec.check_text, sphaera_crdt/core/codec.py"
    ),
)
def test_pycrdt_refuses_a_lone_surrogate_without_panicking() -> None:
    """Guards the UTF-8 checks of :func:`sphaera_crdt.core.codec.dumps_checked` and
    :func:`sphaera_crdt.core.codec.check_text` (core/codec.py): Yrs stores UTF-8, and a
    string with a lone surrogate makes pycrdt panic half-way through a write (a
    ``PanicException``, which is no ``Exception``) after the earlier writes went in.
    """
    doc: Doc[Any] = Doc()
    target = doc.get("m", type=Map)
    try:
        with doc.transaction():
            target["a"] = "fine"
            target["b"] = "x\ud800"
    except Exception:  # UnicodeEncodeError, say
        refused = "cleanly"
    except BaseException as exc:
        if not is_panic(exc):
            raise
        refused = "with a panic"
    assert refused == "cleanly"


@canary(
    bug="pycrdt reads ints back as floats and panics on 2**63",
    workaround="the JSON-text values of sphaera_crdt/core/codec.py",
)
def test_pycrdt_keeps_ints_exact() -> None:
    """Guards the value codec (core/codec.py), which stores every value as JSON text
    because raw Yrs turns every int into a float and panics on ints of 2**63 or more.
    """
    target = Doc().get("m", type=Map)
    target["small"] = 5
    assert type(target["small"]) is int
    try:
        target["big"] = 2**63
    except BaseException as exc:
        if not is_panic(exc):
            raise
        held = False
    else:
        held = target["big"] == 2**63
    assert held


@canary(
    bug="Yrs reserves memory for an update's counts before it reads what they count",
    workaround=(
        "the bounded walk of updates.shape, sphaera_crdt/core/updates.py, before Yrs decodes"
    ),
)
@LINUX
def test_yrs_bounds_an_update_count_by_its_bytes() -> None:
    """Guards the count checks of :func:`sphaera_crdt.core.updates.shape` (core/updates.py),
    which every received update passes before Yrs decodes it: Yrs reserves memory for a
    count before it reads the items, so six bytes claiming 2**28 clients reserve 512 MB.
    Under an address-space limit that leaves 128 MB, the reservation fails where a bounded
    decoder would find the bytes too few.
    """
    said = in_a_fresh_process(
        f"""
        import resource
        import pycrdt
        size = next(int(line.split()[1]) for line in open("/proc/self/status")
                    if line.startswith("VmSize:")) * 1024
        limit = size + 128 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            pycrdt.Doc().apply_update({CLAIMS_2_28_CLIENTS!r})
        except ValueError as exc:
            print(exc)
        """
    )
    assert said.startswith("Cannot decode update")
    assert "allocat" not in said


@canary(
    bug="Yrs sizes its table by the count a state vector claims",
    workaround="decode_state_vector, sphaera_crdt/core/lib0.py, before get_update",
)
@LINUX
def test_yrs_bounds_a_state_vector_count_by_its_bytes() -> None:
    """Guards :func:`sphaera_crdt.core.lib0.decode_state_vector` (core/lib0.py), which
    checks a peer's state vector before it reaches ``get_update`` (``Replica.delta``):
    Yrs sizes its table by the count a state vector claims, so two bytes claiming 2**24
    clients cost it tens of megabytes and milliseconds (a random one, half a second).
    """
    grown = in_a_fresh_process(
        f"""
        import pycrdt

        def status(key):
            with open("/proc/self/status") as lines:
                return next(int(line.split()[1]) for line in lines if line.startswith(key))

        doc = pycrdt.Doc()
        doc.get("m", type=pycrdt.Map)["k"] = "v"
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak resident size starts again from the current one
        before = status("VmHWM:")
        try:
            doc.get_update({CLAIMS_2_24_CLIENTS!r})
        except ValueError:
            pass
        print(status("VmHWM:") - before)
        """
    )
    assert int(grown) < 8 * 1024  # kilobytes of peak resident memory (today about 32 MB)


@canary(
    bug="Yrs does not squash GC ranges collected in place",
    workaround=(
        "DocumentAdapter.reload and MIN_RELOAD, sphaera_crdt/core/ydoc.py, which rebuild the "
        "document"
    ),
)
def test_yrs_squashes_gc_ranges_collected_in_place() -> None:
    """Guards :meth:`sphaera_crdt.core.ydoc.DocumentAdapter.reload` (core/ydoc.py): Yrs
    squashes adjacent GC ranges when it decodes a document but not when it collects items
    in place, so a writer that retires containers carries one GC range per overwrite in
    its own encoding until it rebuilds the document.
    """
    doc: Doc[Any] = Doc(client_id=1)
    root = doc.get("w", type=Map)
    for index in range(5):
        key = f"c{index}"
        with doc.transaction():
            root[key] = Map()
        for write in range(50):
            with doc.transaction():
                root[key][f"k{write % 3}"] = f"v{write}"
        with doc.transaction():
            root[key] = ""  # retired: the container's items are collected
    own = doc.get_update()
    decoded: Doc[Any] = Doc(client_id=1)
    decoded.apply_update(own)
    assert len(own) == len(decoded.get_update())
