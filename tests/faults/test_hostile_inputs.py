"""Hostile inputs against a real node: every request answers below 500, a request answered
4xx changes nothing (entities, statuses and the whole replicated state, see
:mod:`faults.target`), decode work and held updates are bounded in memory, deep values
never break the node, oversize and slow bodies are cut off while the node keeps serving,
and many event streams do not stall writes.

``SPHAERA_FAULTS_EXAMPLES`` sets the number of hypothesis examples (default 150).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core import updates

from .cluster import MAX_NODE_HWM_KIB
from .target import MAX_BODY, OCTETS, STEP1, UPDATE, Target, running_target, sync_frame

pytestmark = [pytest.mark.slow]

EXAMPLES: Final = int(os.environ.get("SPHAERA_FAULTS_EXAMPLES", "150"))
MIB: Final = 1024 * 1024
JSON: Final = "application/json"
#: The node's deadline on reading a request (``NodeConfig.read_timeout``, no flag).
READ_TIMEOUT: Final = 10.0


def _clock() -> float:
    return 1_000_000.0


def _source(client_id: int) -> Replica:
    # Fixed client ids and nonces: the same bytes, so the same inputs, every run.
    return Replica(f"src{client_id}", clock=_clock, client_id=client_id, nonce=f"{client_id:x}")


def _fixture() -> tuple[bytes, bytes]:
    """A full state and a delta on top of it, written by another replica."""
    source = _source(1001)
    source.declare("db", kind="pg", attrs={"port": 5432, "big": 2**80, "l": [1, 2.5]})
    source.observe("db", ok=True, value={"latency": 3}, ttl=10)
    base = source.state_vector()
    source.update("db", {"port": 5433, "role": "primary"})
    source.declare("api", attrs={"v": "x" * 40}, requires={"exists": "db"})
    source.retract("api")
    return source.delta(), source.delta(base)


FULL, DELTA = _fixture()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as node:
        yield node


@pytest.fixture
def fresh() -> Iterator[Target]:
    with running_target() as node:
        yield node


# -- random and mutated bodies -------------------------------------------------------------


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with 1-3 bytes replaced, truncated, or with garbage appended."""
    replaced = st.lists(
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=3
    ).map(lambda edits: _replace(data, edits))
    truncated = st.integers(0, len(data) - 1).map(lambda end: data[:end])
    appended = st.binary(min_size=1, max_size=16).map(lambda tail: data + tail)
    return st.one_of(replaced, truncated, appended)


def _replace(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    changed = bytearray(data)
    for index, value in edits:
        changed[index] = value
    return bytes(changed)


UPDATE_BODIES: Final = st.one_of(
    st.binary(max_size=64), mutated(FULL), mutated(DELTA), st.sampled_from([FULL, DELTA])
)
SYNC_BODIES: Final = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=24).map(lambda vector: sync_frame(STEP1, vector)),
    UPDATE_BODIES.map(lambda update: sync_frame(STEP1, b"\x00") + sync_frame(UPDATE, update)),
    mutated(sync_frame(STEP1, b"\x00") + sync_frame(UPDATE, DELTA)),
)
BODIES: Final = st.one_of(
    st.tuples(st.just("/v1/updates"), UPDATE_BODIES), st.tuples(st.just("/v1/sync"), SYNC_BODIES)
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=BODIES)
def test_random_and_mutated_peer_bodies(target: Target, request: tuple[str, bytes]) -> None:
    path, body = request
    target.refused_unchanged("POST", path, body)


def test_a_held_malformed_update_never_fails_the_update_that_releases_it(
    fresh: Target,
) -> None:
    """An update that pycrdt cannot decode, whose predecessors are missing, and then its
    valid predecessor: the valid one is merged with 2xx, whatever became of the other."""
    source = _source(4242)
    source.declare("first", attrs={"n": 1})
    first = source.delta()
    vector = source.state_vector()
    source.declare("second", attrs={"n": 2, "s": "x" * 20})
    second = source.delta(vector)
    broken = _undecodable_variants(second, first)
    assert broken, "no undecodable variant of the update found"
    for variant in broken:
        fresh.refused_unchanged("POST", "/v1/updates", variant)
    answer = fresh.refused_unchanged("POST", "/v1/updates", first)
    assert answer.status == 204, f"a valid update answered {answer.status}: {answer.body!r}"
    assert fresh.entities()["first"]["attrs"] == {"n": 1}


def _undecodable_variants(update: bytes, predecessor: bytes, count: int = 4) -> list[bytes]:
    """Variants of ``update`` (one byte after its header set to 0x80 or 0xff, so they still
    claim the same client and start clock) that pycrdt refuses to decode, even after
    ``predecessor``; those whose structure the replica's own reader accepts come first
    (the ones a replica may hold until ``predecessor`` arrives)."""
    plausible, others = [], []
    for index in range(8, len(update)):
        for value in (0x80, 0xFF):
            variant = _replace(update, [(index, value)])
            if variant == update or not _undecodable(predecessor, variant):
                continue
            try:
                updates.shape(variant)
            except InvalidUpdate:
                others.append(variant)
            else:
                plausible.append(variant)
    return (plausible + others)[:count]


def _undecodable(predecessor: bytes, variant: bytes) -> bool:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(predecessor)
    try:
        doc.apply_update(variant)
    except BaseException:  # PanicException is a BaseException
        return True
    return False


# -- memory --------------------------------------------------------------------------------

#: A varuint count of about 2^32 structs in 6 bytes: a naive decoder allocates for it.
BOMB: Final = bytes.fromhex("808080800100")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/updates", BOMB),
        ("/v1/sync", sync_frame(STEP1, b"\x00") + sync_frame(UPDATE, BOMB)),
        ("/v1/sync", sync_frame(STEP1, BOMB)),
    ],
    ids=["update", "sync-update-frame", "sync-state-vector"],
)
def test_an_allocation_bomb_costs_at_most_its_size(fresh: Target, path: str, body: bytes) -> None:
    """A rejected request raises peak memory by at most 4x its body plus 16 MiB."""
    before = fresh.state()
    fresh.reset_peak()
    baseline = fresh.peak_kib()
    answer = fresh.request("POST", path, body)
    grown = fresh.peak_kib() - baseline
    assert 400 <= answer.status < 500, (answer.status, answer.body[:200])
    assert fresh.state() == before
    bound = (4 * len(body) + 16 * MIB) // 1024
    assert grown <= bound, f"peak memory grew by {grown} KiB on a {len(body)}-byte body"


def test_held_updates_are_bounded_by_bytes(fresh: Target) -> None:
    """Forty 200 kB updates that wait for predecessors: at most 4x --max-body of them are
    kept, the oldest dropped first (released later, only the kept ones appear)."""
    size = 200_000
    firsts, seconds = [], []
    for index in range(40):
        source = _source(5000 + index)
        source.declare(f"seed-{index}")
        firsts.append(source.delta())
        vector = source.state_vector()
        source.declare(f"big-{index}", attrs={"blob": "x" * size})
        seconds.append(source.delta(vector))
    for update in seconds:
        answer = fresh.request("POST", "/v1/updates", update)
        assert answer.status < 500, answer
    for update in firsts:
        assert fresh.request("POST", "/v1/updates", update).status == 204
    entities = fresh.entities()
    kept = sorted(int(key.split("-")[1]) for key in entities if key.startswith("big-"))
    assert len(kept) * size <= 4 * MAX_BODY + size, f"{len(kept)} held updates of {size} B kept"
    assert 39 in kept, f"the newest held update was dropped, kept: {kept}"


# -- deep values ---------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [32, 200, 250, 251, 253, 256, 257, 1000, 100_000])
def test_a_deep_value_never_answers_5xx(fresh: Target, depth: int) -> None:
    """Deep attributes, observation values and constraints: accepted and served from then
    on, or refused (4xx) with nothing changed; never a 5xx, now or later."""
    deep = _nested(depth)
    constraint = '{"not":' * depth + "true" + "}" * depth
    fresh.request("PUT", "/v1/entities/base", b"{}", JSON)
    bodies = [
        ("PUT", "/v1/entities/deep", f'{{"attrs":{{"v":{deep}}}}}'),
        ("PATCH", "/v1/entities/base", f'{{"attrs":{{"v":{deep}}}}}'),
        ("POST", "/v1/observations", f'{{"subject":"base","value":{deep}}}'),
        ("PUT", "/v1/entities/rule", f'{{"requires":{constraint}}}'),
    ]
    for method, path, text in bodies:
        fresh.refused_unchanged(method, path, text.encode(), content_type=JSON)
        for route in ("/v1/entities", "/v1/entities/base", "/v1/entities/base/why", "/"):
            read = fresh.request("GET", route)
            assert read.status == 200, f"after {method} {path}: GET {route} {read.status}"
        fresh.state()


# -- oversize and slow bodies --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/updates", "/v1/sync", "/v1/entities/big"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_oversize_body_is_refused(target: Target, path: str, framing: str) -> None:
    """A body over --max-body, announced by Content-Length or sent in chunks: 413."""
    method, kind = ("PUT", JSON) if path.startswith("/v1/entities") else ("POST", OCTETS)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
    before = target.state()
    if framing == "length":
        head += f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
        parts = [b"x" * 1000]  # announced, never sent: refused before it is read
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        parts = [chunk] * (MAX_BODY // (64 * 1024) + 2) + [b"0\r\n\r\n"]
    answer = _raw_exchange(target, head.encode(), parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert target.state() == before


def _raw_exchange(target: Target, head: bytes, parts: list[bytes]) -> bytes:
    """Send a request by hand (the node may answer and close before it is all sent)."""
    with socket.create_connection((target.host, target.port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for part in parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return _read_head(sock)
        except ConnectionResetError:
            return b""


def test_slow_bodies_and_heads_are_cut_off_while_the_node_serves(target: Target) -> None:
    before = target.state()
    slow = []
    for index in range(16):
        sock = socket.create_connection((target.host, target.port), timeout=READ_TIMEOUT + 10)
        if index % 2:  # a head that never ends
            sock.sendall(b"POST /v1/updates HTTP/1.1\r\nHost: x\r\n")
        else:  # a body that never ends
            sock.sendall(
                b"POST /v1/updates HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
                + b"\x00"
                * 10
            )
        slow.append(sock)
    started = time.monotonic()
    try:
        healthy = target.request("GET", "/healthz", timeout=2.0)
        assert healthy.status == 200
        assert time.monotonic() - started < 2.0, "the node stalled behind slow clients"
        for sock in slow:
            answer = _read_head(sock)
            assert not answer or answer.startswith(b"HTTP/1.1 408"), answer[:100]
        took = time.monotonic() - started
        assert took < READ_TIMEOUT + 5, f"slow clients held on for {took:.1f} s"
    finally:
        for sock in slow:
            sock.close()
    assert target.state() == before


def _read_head(sock: socket.socket) -> bytes:
    """What arrives until the end of an answer's head, or until the node closes."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    return data


# -- many event streams --------------------------------------------------------------------


def test_many_event_streams_do_not_stall_writes(fresh: Target) -> None:
    asyncio.run(_many_streams(fresh, streams=200, writes=20))


async def _many_streams(target: Target, *, streams: int, writes: int) -> None:
    base = f"http://{target.host}:{target.port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        opened = [await session.get(f"{base}/v1/events") for _ in range(streams)]
        try:
            for stream in opened:
                assert stream.status == 200
                assert (await stream.content.readline()).startswith(b"event: snapshot")
            for index in range(writes):
                started = time.monotonic()
                async with session.put(f"{base}/v1/entities/s{index}", json={}) as answer:
                    assert answer.status == 201
                took = time.monotonic() - started
                assert took < 2.0, f"a write took {took:.2f} s with {streams} streams"

            async def changes(stream: aiohttp.ClientResponse) -> int:
                seen = 0
                while seen < writes:
                    line = await stream.content.readline()
                    seen += line.startswith(b"event: change")
                return seen

            async with asyncio.timeout(30):
                counts = await asyncio.gather(*(changes(stream) for stream in opened))
            assert counts == [writes] * streams
        finally:
            for stream in opened:
                stream.close()
    assert target.peak_kib() < MAX_NODE_HWM_KIB
    assert target.request("GET", "/healthz").status == 200


# -- the OpenAPI document ------------------------------------------------------------------


def _schemathesis() -> str | None:
    """The ``schemathesis`` command: next to this interpreter, on PATH, or named by
    ``SPHAERA_SCHEMATHESIS``."""
    named = os.environ.get("SPHAERA_SCHEMATHESIS")
    if named:
        return named
    beside = Path(sys.executable).with_name("schemathesis")
    return str(beside) if beside.exists() else shutil.which("schemathesis")


def test_schemathesis_finds_no_server_error(target: Target, tmp_path: Path) -> None:
    """Every operation of /v1/openapi.json, fuzzed: no 5xx (the event stream never ends,
    so it is left to the tests above)."""
    command = _schemathesis()
    if command is None:
        pytest.skip("schemathesis is not installed")
    before = target.entities()
    done = subprocess.run(
        [
            command,
            "run",
            f"http://{target.host}:{target.port}/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "20",
            "--request-timeout",
            "5",
            "--exclude-path",
            "/v1/events",
            "--generation-deterministic",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "replica:target" in before and target.request("GET", "/healthz").status == 200
