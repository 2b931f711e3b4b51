"""Gossip between in-process nodes over loopback HTTP, driven round by round."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from nodes import LIVENESS, FakeClock, StartNode, converged, node_factory, settle

from sphaera_crdt.core import gossip as gossip_core
from sphaera_crdt.core import sync
from sphaera_crdt.core.sync import covers
from sphaera_crdt.node import Node

pytestmark = pytest.mark.asyncio


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def start(clock: FakeClock) -> AsyncIterator[StartNode]:
    async with node_factory(clock) as factory:
        yield factory


def sent_to(node: Node, peer: str, outcome: str = "ok") -> float:
    value = node.metrics.registry.get_sample_value(
        "sphaera_sync_exchanges_total", {"peer": peer, "direction": "out", "outcome": outcome}
    )
    return value or 0.0


def bytes_in(node: Node, peer: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "sphaera_sync_bytes_received_total", {"peer": peer}
    )
    return value or 0.0


def step1_size(node: Node) -> int:
    return len(sync.sync_request(node.replica))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stand_in(
    sync_route: Callable[[web.Request], Awaitable[web.Response]],
) -> tuple[str, web.AppRunner]:
    """Serve ``POST /v1/sync`` with ``sync_route`` on a free port: (URL, runner to clean up)."""
    app = web.Application()
    app.router.add_post("/v1/sync", sync_route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}", runner


async def test_seeded_nodes_converge(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    a.replica.declare("db", kind="postgres", attrs={"port": 5432})
    b.replica.declare("cache", attrs={"size": 3})
    c.replica.observe("db", ok=True, value={"latency_ms": 2})
    await settle([a, b, c])
    for node in (a, b, c):
        assert node.replica.entity("db") is not None
        assert node.replica.entity("db").attrs == {"port": 5432}  # type: ignore[union-attr]
        assert node.replica.entity("cache").attrs == {"size": 3}  # type: ignore[union-attr]
        assert set(node.live_peers()) == {"a", "b", "c"} - {node.replica.id}


async def test_first_contact_learns_the_seed_and_pushes_what_it_lacks(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    b.replica.declare("x", attrs={"n": 1})
    await b.gossip.flush()
    (exchange,) = await b.gossip.round()
    # a pull (STEP1 only: b knows nothing of a), then exactly what a's answer showed missing
    assert exchange.ok and exchange.peer_id == "a"
    assert exchange.requests == 2 and exchange.pushed
    assert a.replica.entity("x") is not None
    # the push carried no state vector: a learned from the update what b holds of its own
    known = a.peers.peers["b"].known
    assert all(known.get(client, 0) > 0 for client in b.replica.writer_clients)
    assert b.live_peers() == {"a": a.url} and a.live_peers() == {"b": b.url}
    assert a.replica.exists("replica:b") and b.replica.exists("replica:a")
    # b observed a once a was declared: a round carries that, then nothing is left to send
    await settle([a, b])
    (exchange,) = await b.gossip.round()
    assert exchange.ok and exchange.requests == 1 and not exchange.pushed
    assert covers(b.peers.peer("a").known, b.replica.clocks())


async def test_eager_push_batches_a_burst_into_one_exchange(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    before = sent_to(a, "b")
    for n in range(50):
        a.replica.declare(f"item-{n}", attrs={"n": n})
    await a.gossip.flush()
    assert sent_to(a, "b") == before + 1
    assert all(b.replica.entity(f"item-{n}") is not None for n in range(50))
    assert converged([a, b])


async def test_nothing_is_echoed_back(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    a.replica.declare("big", attrs={"blob": "x" * 20_000})
    await a.gossip.flush()
    assert b.replica.entity("big") is not None
    assert covers(a.peers.peer("b").known, a.replica.clocks())
    assert covers(b.peers.peer("a").known, b.replica.clocks())
    received = bytes_in(a, "b")
    exchanges = await b.gossip.round() + await a.gossip.round()
    assert [exchange.pushed for exchange in exchanges] == [False, False]
    # b's answer to a's round and b's request: state vectors, no 20 kB blob
    assert bytes_in(a, "b") - received < 200


async def test_idle_round_carries_state_vectors_only(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    await settle([a, b, c])
    for node in (a, b, c):
        exchanges = await node.gossip.round()
        assert len(exchanges) == 2
        for exchange in exchanges:
            assert exchange.ok and exchange.requests == 1 and not exchange.pushed
            assert exchange.sent == step1_size(node)
            # STEP2 with the empty update (5 bytes), then the peer's STEP1
            assert exchange.received == 5 + step1_size(node)


async def test_round_respects_fanout(start: StartNode) -> None:
    a = await start("a", fanout=1)
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    await settle([a, b, c])
    assert len(a.gossip.targets()) == 2
    assert len(await a.gossip.round()) == 1


async def test_dead_peer_drops_out_and_comes_back(start: StartNode, clock: FakeClock) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    assert a.gossip.targets() == {b.url: "b"}
    clock.advance(LIVENESS + 1)
    a.replica.tick()
    b.replica.tick()
    assert not a.replica.exists("replica:b")
    assert a.live_peers() == {}
    assert a.gossip.targets() == {}
    assert await a.gossip.round() == []
    # b still has a as a seed: its round observes a, and carries b's own heartbeat to a
    # (a's part in the exchange is no evidence of b: anyone can claim to be b)
    assert b.gossip.targets() == {a.url: "a"}
    b.replica.observe("replica:b", ok=True, ttl=LIVENESS)  # b's heartbeat
    (exchange,) = await b.gossip.round()
    assert exchange.ok
    assert a.replica.exists("replica:b") and b.replica.exists("replica:a")
    assert a.gossip.targets() == {b.url: "b"}


async def test_restarted_peer_is_relearned(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    a.replica.declare("db", attrs={"port": 5432})
    await settle([a, b])
    port = int(b.url.rsplit(":", 1)[1])
    await b.close()
    b2 = await start("b", port=port)  # same id and URL, empty state, no seeds
    (exchange,) = await a.gossip.round()
    # a believed b had everything; b's STEP1 says otherwise, so a pushes it all
    assert exchange.ok and exchange.requests == 2 and exchange.pushed
    assert b2.replica.entity("db") is not None
    assert covers(a.peers.peer("b").known, a.replica.clocks())


async def test_unreachable_seed_backs_off(
    start: StartNode, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    a = await start("a", peers=[url], gossip_interval=10.0)
    with caplog.at_level(logging.DEBUG, logger="sphaera_crdt"):
        (exchange,) = await a.gossip.round()
        assert not exchange.ok and "unreachable" in (exchange.error or "")
        assert a.gossip.targets() == {}
        clock.advance(10)  # first retry after one interval
        assert a.gossip.targets() == {url: None}
        assert not (await a.gossip.round())[0].ok
        clock.advance(10)  # then after two
        assert a.gossip.targets() == {}
        clock.advance(10)
        assert a.gossip.targets() == {url: None}
    assert sent_to(a, url, "error") == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "unreachable" in warnings[0].getMessage()


async def test_bad_answers_change_nothing(start: StartNode) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x07garbage", content_type="application/octet-stream")

    url, runner = await stand_in(garbage)
    try:
        a = await start("a", peers=[url])
        state = a.replica.state_vector()
        (exchange,) = await a.gossip.round()
        assert not exchange.ok
        assert a.replica.state_vector() == state
    finally:
        await runner.cleanup()


async def test_wrong_token_is_refused(start: StartNode) -> None:
    a = await start("a", token="right-token")
    b = await start("b", peers=[a.url], token="wrong-token")
    (exchange,) = await b.gossip.round()
    assert not exchange.ok and "401" in (exchange.error or "")
    assert "wrong-token" not in (exchange.error or "")
    c = await start("c", peers=[a.url], token="right-token")
    (exchange,) = await c.gossip.round()
    assert exchange.ok


async def test_own_url_as_seed_is_ignored(start: StartNode) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    a = await start("a", port=port, peers=[url])
    assert a.url == url
    assert a.gossip.targets() == {}


async def test_rounds_run_by_themselves(start: StartNode) -> None:
    a = await start("a", gossip_interval=0.05)
    b = await start("b", peers=[a.url], gossip_interval=0.05)
    arrived = asyncio.Event()
    a.replica.subscribe(lambda change: arrived.set() if change.entity == "replica:b" else None)
    await asyncio.wait_for(arrived.wait(), timeout=5)
    assert a.replica.exists("replica:b")
    await b.close()
    assert b.gossip is None  # stopped by the node, and a stopped gossip stays quiet


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return str(cert), str(key)


async def test_gossip_over_https(start: StartNode, tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    trust = ssl.create_default_context(cafile=cert)
    a = await start("a", tls_cert=cert, tls_key=key, client_ssl=trust)
    b = await start("b", peers=[a.url], tls_cert=cert, tls_key=key, client_ssl=trust)
    assert a.url.startswith("https://") and b.url.startswith("https://")
    a.replica.declare("db")
    await settle([a, b])
    assert b.replica.entity("db") is not None
    # Without the certificate in its trust store, a peer refuses the connection.
    c = await start("c", peers=[a.url])
    (exchange,) = await c.gossip.round()
    assert not exchange.ok and "certificate" in (exchange.error or "").lower()
    # One more exchange with a lets it finish the refused handshake before the test ends
    # (else asyncio may find that server-side transport unclosed at teardown).
    assert (await b.gossip.exchange(a.url)).ok


async def front(node: Node, *, claim: str | None = None) -> tuple[str, web.AppRunner]:
    """Another URL for ``node``'s sync route whose answers name the replica in headers.

    ``claim`` replaces the replica id the answers name (to impersonate someone else).
    """

    async def sync_route(request: web.Request) -> web.Response:
        body = await request.read()
        answer = node.handle_sync(body, request.headers.get("Sphaera-Replica"))
        headers = {"Sphaera-Replica": claim or node.replica.id, "Sphaera-Url": node.url}
        return web.Response(body=answer, content_type="application/octet-stream", headers=headers)

    return await stand_in(sync_route)


async def test_answer_headers_name_a_seed(start: StartNode) -> None:
    a = await start("a")
    alias, runner = await front(a)
    try:
        b = await start("b", peers=[alias])
        (exchange,) = await b.gossip.round()
        assert exchange.ok and exchange.peer_id == "a"
        await settle([a, b])
        # the seed is a, already a live peer under its own URL: one target, not two
        assert b.gossip.targets() == {a.url: "a"}
    finally:
        await runner.cleanup()


async def test_a_seed_that_answers_as_this_node_is_dropped(start: StartNode) -> None:
    a = await start("a")
    alias, runner = await front(a, claim="b")
    try:
        b = await start("b", peers=[alias])
        assert b.gossip.targets() == {alias: None}
        assert await b.gossip.round() == []
        assert b.gossip.targets() == {}
    finally:
        await runner.cleanup()


async def test_the_node_runs_the_core_gossip_decisions(
    start: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sans-IO planner the simulator drives: every request and answer is its."""
    planned: list[gossip_core.Request] = []
    answered: list[bytes] = []
    real_request = gossip_core.PeerExchange._request
    real_answer = gossip_core.GossipPlanner.answer

    def counting_request(
        self: gossip_core.PeerExchange, update: bytes | None, *, pull: bool
    ) -> gossip_core.Request:
        request = real_request(self, update, pull=pull)
        planned.append(request)
        return request

    def counting_answer(
        self: gossip_core.GossipPlanner, body: bytes, peer_id: str | None
    ) -> sync.SyncResult:
        answered.append(body)
        return real_answer(self, body, peer_id)

    monkeypatch.setattr(gossip_core.PeerExchange, "_request", counting_request)
    monkeypatch.setattr(gossip_core.GossipPlanner, "answer", counting_answer)
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    b.replica.declare("x")
    await b.gossip.flush()
    assert a.replica.entity("x") is not None
    assert [request.body for request in planned] == answered
    eager = planned[-1]
    assert not eager.pull and types_of(eager.body) == [sync.MessageType.UPDATE]
    assert any(request.pull for request in planned)


def types_of(body: bytes) -> list[sync.MessageType]:
    return [message.type for message in sync.decode_messages(body)]


async def test_heartbeats_are_not_pushed_eagerly(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    before = sent_to(a, "b")
    a.replica.observe("replica:a", ok=True, ttl=LIVENESS)  # what the heartbeat writes
    assert not a.gossip.pushing
    (exchange,) = await a.gossip.round()  # the round carries it
    assert exchange.pushed and b.replica.observations("replica:a")
    a.replica.declare("db")
    assert a.gossip.pushing
    await a.gossip.flush()
    assert sent_to(a, "b") == before + exchange.requests + 1  # the round's, then one push
    assert b.replica.entity("db") is not None


async def test_a_round_skips_a_peer_with_an_exchange_in_flight(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    await settle([a, b, c])
    assert a.gossip.machine.acquire(b.url, lambda: None)  # an exchange with b, not ended
    for _ in range(5):
        exchanges = await a.gossip.round()
        assert [exchange.url for exchange in exchanges] == [c.url]
    a.gossip.machine.release(b.url)


async def test_rounds_do_not_wait_for_an_exchange_that_hangs(start: StartNode) -> None:
    hung, release = asyncio.Event(), asyncio.Event()

    async def never_answers(request: web.Request) -> web.Response:
        hung.set()
        await release.wait()  # until the test is over
        return web.Response(status=503)

    url, runner = await stand_in(never_answers)
    try:
        b = await start("b")
        a = await start("a", peers=[url, b.url], gossip_interval=0.05, fanout=2, client_timeout=60)
        await asyncio.wait_for(hung.wait(), timeout=10)
        # Nothing is written: only rounds talk to b, and they go on while the exchange
        # with the stand-in hangs (with fanout 2, every round would pick it otherwise).
        calls, enough = [0], asyncio.Event()
        real_handle = b.handle_sync

        def counting_handle(body: bytes, peer_id: str | None) -> bytes:
            calls[0] += 1
            if calls[0] >= 5:
                enough.set()
            return real_handle(body, peer_id)

        b.handle_sync = counting_handle  # type: ignore[method-assign]
        await asyncio.wait_for(enough.wait(), timeout=10)
        assert a.gossip.machine.busy(url)
        assert sent_to(a, url, "error") == 0
        await a.close()
    finally:
        release.set()
        await runner.cleanup()


async def test_a_rounds_exchanges_follow_one_another(start: StartNode) -> None:
    a = await start("a", fanout=2)
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    await settle([a, b, c])
    events: list[tuple[str, str]] = []
    real = a.gossip._guarded

    async def recording(target: Any, push: Any) -> Any:
        events.append(("start", target.url))
        try:
            return await real(target, push)
        finally:
            events.append(("end", target.url))

    a.gossip._guarded = recording  # type: ignore[method-assign]
    assert len(await a.gossip.round()) == 2
    first, second = events[0][1], events[2][1]
    assert events == [("start", first), ("end", first), ("start", second), ("end", second)]
    assert {first, second} == {b.url, c.url}


async def test_a_step_of_the_wall_clock_neither_stalls_nor_rushes_rounds(
    start: StartNode, clock: FakeClock
) -> None:
    """The machine's deadlines are on the node's clock; the driver times them on the
    loop's monotonic clock, so rounds go on at their pace when the wall clock steps."""
    b = await start("b")
    a = await start("a", peers=[b.url], gossip_interval=0.05)
    loop = asyncio.get_running_loop()
    for step in (-3600.0, 7200.0):
        clock.advance(step)
        before, started = sent_to(a, "b"), loop.time()
        while sent_to(a, "b") < before + 3:
            assert loop.time() - started < 5, "rounds stalled after a step of the clock"
            await asyncio.sleep(0.01)
        # three rounds take about two intervals or more: not all at once
        assert loop.time() - started >= 0.05
