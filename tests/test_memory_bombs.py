"""Allocation bombs against a real node process: each gets a 4xx, and raises the node's
peak resident memory (``VmHWM``) by at most four times its body size plus 16 MB.

Where the kernel lets this user reset the peak (writing ``5`` to ``/proc/PID/clear_refs``),
each bomb is measured alone from its own reset; otherwise all of them together must stay
within the bound of the largest body, measured from the peak the node had reached before.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import bombs
import pytest
from procs import NodeProcess, Processes

from sphaera_crdt.core.lib0 import write_varuint

pytestmark = pytest.mark.slow

MB: Final = 1024 * 1024
MAX_BODY: Final = 2 * MB


def _sync(kind: int, payload: bytes) -> bytes:
    return bytes((0, kind)) + write_varuint(len(payload)) + payload


def _large() -> list[tuple[str, str, bytes]]:
    """Bodies near the size limit that are refused only at their end."""
    text = b"x" * (MAX_BODY - 4096)
    string_item = b"\x01\x01\x07\x00\x28\x01\x01m\x01x\x01\x77" + write_varuint(len(text)) + text
    deep = ("[" * 200 + "]" * 200).encode()
    nulls = MAX_BODY // 10
    null_item = b"\x28\x01\x01m\x01x\x01\x7e"
    # the node holds STRANGER's five string entries (clocks 0-4), see the fixture
    under_string = b"\x28\x00" + write_varuint(bombs.STRANGER) + b"\x00\x01x\x01\x7e"
    under_own = b"\x28\x00\x07\x00\x01x\x01\x7e"
    return [
        (
            "/v1/updates",
            "many items, then JSON nested too deeply",
            b"\x01"
            + write_varuint(nulls + 1)
            + b"\x07\x00"
            + null_item * nulls
            + b"\x25\x01\x01m\x01x"
            + write_varuint(len(deep))
            + deep
            + b"\x00",
        ),
        (
            "/v1/updates",
            "many items under a string entry the node holds",
            b"\x01"
            + write_varuint(MAX_BODY // 12)
            + write_varuint(bombs.STRANGER)
            + b"\x05"
            + under_string * (MAX_BODY // 12)
            + b"\x00",
        ),
        (
            "/v1/updates",
            "many items under a string entry of their own",
            b"\x01"
            + write_varuint(nulls + 1)
            + b"\x07\x00"
            + null_item
            + under_own * nulls
            + b"\x00",
        ),
        ("/v1/updates", "a large update with trailing bytes", string_item + b"\x00\x00"),
        (
            "/v1/sync",
            "a large UPDATE with a bomb after it",
            _sync(2, string_item + b"\x00") + _sync(2, bytes.fromhex("808080800100")),
        ),
        (
            "/v1/updates",
            "many small structs, then a bad type",
            b"\x01"
            + write_varuint(MAX_BODY // 4)
            + b"\x07\x00"
            + b"\x00\x01" * (MAX_BODY // 4 - 1)
            + b"\x07\x01\x01m\x63"
            + b"\x00",
        ),
    ]


CASES: Final = [
    *[("/v1/updates", name, body) for name, body in bombs.UPDATE_BOMBS],
    *[("/v1/sync", name, body) for name, body in bombs.SYNC_BOMBS],
    *_large(),
]


def _status(pid: int) -> dict[str, int]:
    """The node's ``VmHWM`` and ``VmRSS`` in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> bool:
    """Reset the node's ``VmHWM`` to its current RSS; whether the kernel allowed it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    processes = Processes()
    try:
        process = processes.start("bombed", args=["--max-body", str(MAX_BODY)])
        # Warm up the paths the bombs take (parsers, aiohttp's buffers) with valid bodies.
        assert _post(process.url + "/v1/updates", bombs.five_strings(bombs.STRANGER)) == 204
        for _ in range(3):
            assert _post(process.url + "/v1/sync", _sync(0, b"\x00")) == 200
            assert _post(process.url + "/v1/updates", b"\x00\x00") == 204
        yield process
    finally:
        processes.close()


def _bound(body: bytes) -> int:
    return 4 * len(body) + 16 * MB


@pytest.mark.parametrize(
    ("route", "name", "body"), CASES, ids=[f"{route} {name}" for route, name, _ in CASES]
)
def test_each_bomb_alone_stays_within_the_bound(
    node: NodeProcess, route: str, name: str, body: bytes
) -> None:
    pid = node.popen.pid
    if not _reset_peak(pid):
        pytest.skip("this kernel does not let us reset VmHWM through clear_refs")
    start = _status(pid)["VmRSS"]
    status = _post(node.url + route, body)
    peak = _status(pid)["VmHWM"]
    assert 400 <= status < 500, f"{name}: answered {status}"
    assert peak - start <= _bound(body), f"{name}: peak rose {(peak - start) / MB:.1f} MB"
    assert node.popen.poll() is None


def test_all_bombs_together_stay_within_the_bound_of_the_largest(node: NodeProcess) -> None:
    pid = node.popen.pid
    start = _status(pid)["VmHWM"]
    for route, name, body in CASES:
        status = _post(node.url + route, body)
        assert 400 <= status < 500, f"{name}: answered {status}"
    peak = _status(pid)["VmHWM"]
    largest = max(len(body) for _, _, body in CASES)
    assert peak - start <= 4 * largest + 16 * MB, f"peak rose {(peak - start) / MB:.1f} MB"
    assert _post(node.url + "/v1/updates", b"\x00\x00") == 204
