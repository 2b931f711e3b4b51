"""Clocks between in-process nodes: every exchange carries the sender's clock, each node
measures its peers' offsets (``/v1/replicas``, ``/metrics``, one warning per peer), and the
node whose clock disagrees with a majority of its live peers fences itself: ``/healthz``
answers 503, observations are refused with 503, its heartbeat stops, until its clock is
back. Every node has a clock of its own over one fake time, so nothing depends on the
wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from nodes import INTERVAL, LIVENESS, FakeClock, quiesce

from sphaera_crdt.core import sync
from sphaera_crdt.node import ConfigError, Node, NodeConfig

pytestmark = pytest.mark.asyncio

SKEW = 30.0
#: What ``/healthz`` says of a node without signed mode.
UNSIGNED = {"signed": False, "trust_digest": None}


class OffsetClock:
    """A node's clock: the shared fake time plus an offset that a test may change."""

    def __init__(self, base: FakeClock, offset: float = 0.0) -> None:
        self.base = base
        self.offset = offset

    def __call__(self) -> float:
        return self.base() + self.offset


Start = Callable[..., Awaitable[Node]]


@pytest.fixture
def base() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def start(base: FakeClock) -> AsyncIterator[Start]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(name: str, *, offset: float = 0.0, **config: Any) -> Node:
            settings: dict[str, Any] = {
                "port": 0,
                "gossip_interval": INTERVAL,
                "liveness": LIVENESS,
                **config,
            }
            node = Node(NodeConfig(replica_id=name, **settings), clock=OffsetClock(base, offset))
            return await stack.enter_async_context(node)

        yield start


async def rounds(nodes: list[Node], count: int = 2) -> None:
    for _ in range(count):
        for node in nodes:
            await node.gossip.round()
        await quiesce(nodes)


async def get(node: Node, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(node.url + path) as response:
        body = await response.read()
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, body.decode()


async def post_observation(node: Node, subject: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(node.url + "/v1/observations", json={"subject": subject}) as response,
    ):
        return response.status, await response.json()


def gauge(node: Node, name: str, labels: dict[str, str] | None = None) -> float | None:
    return node.metrics.registry.get_sample_value(name, labels or {})


async def trio(start: Start, *, c_offset: float) -> tuple[Node, Node, Node]:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url, b.url], offset=c_offset)
    await rounds([a, b, c])
    # a and b reach c only if c is live for them; exchange with it directly
    await a.gossip.exchange(c.url)
    await b.gossip.exchange(c.url)
    return a, b, c


async def test_offsets_are_shown_in_replicas_and_metrics(start: Start) -> None:
    a, b, c = await trio(start, c_offset=2.0)
    status, answer = await get(a, "/v1/replicas")
    assert status == 200
    offsets = {rid: r["clock_offset"] for rid, r in answer["replicas"].items()}
    assert offsets == {"a": 0.0, "b": 0.0, "c": 2.0}
    _, answer = await get(c, "/v1/replicas")
    assert {rid: r["clock_offset"] for rid, r in answer["replicas"].items()} == {
        "a": -2.0,
        "b": -2.0,
        "c": 0.0,
    }
    status, text = await get(a, "/metrics")
    assert status == 200
    assert 'sphaera_peer_clock_offset_seconds{peer="c"} 2.0' in text
    assert "sphaera_clock_outlier 0.0" in text
    assert gauge(c, "sphaera_clock_offset_seconds") == 2.0
    assert gauge(a, "sphaera_clock_offset_seconds") == -1.0  # the median of b (0) and c (2)
    # 2 s is within the allowed 5 s: everyone is healthy
    for node in (a, b, c):
        assert await get(node, "/healthz") == (
            200,
            {"status": "ok", "replica": node.replica.id, **UNSIGNED},
        )


async def test_an_offset_is_null_until_measured(start: Start) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await b.gossip.round()  # b measured a; a has only been called by b
    _, answer = await get(a, "/v1/replicas")
    assert answer["replicas"]["b"]["clock_offset"] is None
    _, answer = await get(b, "/v1/replicas")
    assert answer["replicas"]["a"]["clock_offset"] == 0.0


async def test_exchanges_carry_the_senders_clock(start: Start) -> None:
    a = await start("a", offset=12.5)
    body = sync.sync_request(a.replica)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            a.url + "/v1/sync", data=body, headers={"Content-Type": "application/octet-stream"}
        ) as response,
    ):
        assert response.status == 200
        assert float(response.headers["Sphaera-Time"]) == a.clock()
    assert float(a.client._headers()["Sphaera-Time"]) == a.clock()


async def test_the_outlier_refuses_observations_until_its_clock_is_back(
    start: Start, base: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sphaera_crdt")
    a, b, c = await trio(start, c_offset=SKEW)
    # c sees both peers 30 s behind it: it is the outlier
    status, health = await get(c, "/healthz")
    assert status == 503
    assert health["status"] == "clock-skew" and health["replica"] == "c"
    assert health["clock_offset"] == SKEW and health["max_clock_skew"] == 5.0
    assert health["error"]["code"] == "clock_skew"
    assert "30.000s ahead" in health["error"]["message"]
    status, error = await post_observation(c, "db")
    assert status == 503
    assert error["error"]["code"] == "clock_skew"
    assert "30.000s ahead" in error["error"]["message"]
    assert c.replica.observations("db") == []
    assert gauge(c, "sphaera_clock_outlier") == 1.0
    assert gauge(c, "sphaera_clock_offset_seconds") == SKEW
    # ... and its own evidence stops: no heartbeat, no observation of the peers it talks to
    heartbeat = c.replica.observations("replica:c")
    assert c.beat() is False
    assert c.replica.observations("replica:c") == heartbeat
    seen = c.replica.observations("replica:a")
    base.advance(LIVENESS / 2)  # past the rate limit of observing a peer, within the window
    await rounds([c])
    assert c.replica.observations("replica:a") == seen
    # a and b see one peer away of two: not the outlier, and they keep working
    for node in (a, b):
        assert await get(node, "/healthz") == (
            200,
            {"status": "ok", "replica": node.replica.id, **UNSIGNED},
        )
        assert (await post_observation(node, "db"))[0] == 200
        assert gauge(node, "sphaera_peer_clock_offset_seconds", {"peer": "c"}) == SKEW
        assert gauge(node, "sphaera_clock_outlier") == 0.0
    assert "refusing to record observations" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings.count("the clock of c is +30.000s from this node's, more than the 5s allowed")
    # once per peer, however many exchanges show it
    await rounds([a, b])
    await a.gossip.exchange(c.url)
    await a.gossip.exchange(c.url)
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("node")]
    assert sum("the clock of c is +30.000s" in w for w in warnings) == 2  # from a and b
    # c's clock is fixed: its next exchanges show it, and it records observations again
    c.clock.offset = 0.0  # type: ignore[attr-defined]
    await rounds([c])
    assert await get(c, "/healthz") == (200, {"status": "ok", "replica": "c", **UNSIGNED})
    assert (await post_observation(c, "db"))[0] == 200
    assert "c" in [o.observer for o in c.replica.observations("db")]
    assert c.beat() is True
    assert gauge(c, "sphaera_clock_outlier") == 0.0
    assert "agrees with its live peers again" in caplog.text
    await a.gossip.exchange(c.url)
    assert "the clock of c is back within 5s" in caplog.text
    # and it comes back as a warning if it runs away again
    c.clock.offset = -SKEW  # type: ignore[attr-defined]
    await a.gossip.exchange(c.url)
    assert "the clock of c is -30.000s" in caplog.text


async def test_a_forged_inbound_time_does_not_make_a_node_the_outlier(start: Start) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await rounds([a, b])
    body = sync.sync_request(b.replica)
    for _ in range(3):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                a.url + "/v1/sync",
                data=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Sphaera-Replica": "b",
                    "Sphaera-Url": b.url,
                    "Sphaera-Time": repr(a.clock() + 1000.0),
                },
            ) as response,
        ):
            assert response.status == 200
    assert a.clock_watch.offset("b") != 1000.0
    assert await get(a, "/healthz") == (200, {"status": "ok", "replica": "a", **UNSIGNED})


async def test_an_answer_from_an_undeclared_url_is_not_a_measurement(start: Start) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url], offset=SKEW)
    await rounds([a, b])
    assert b.clock_watch.offset("a") == -SKEW  # a seed: its answers count
    before = a.clock_watch.offset("b")
    # a reaches b at an address b never declared (a proxy, an alias): not counted
    b.clock.offset = 2 * SKEW  # type: ignore[attr-defined]
    alias = b.url.replace("127.0.0.1", "localhost")
    assert (await a.gossip.exchange(alias)).ok
    assert a.clock_watch.offset("b") == before != 2 * SKEW
    await a.gossip.exchange(b.url)
    assert a.clock_watch.offset("b") == 2 * SKEW


async def test_max_clock_skew_is_configured(start: Start) -> None:
    a = await start("a", max_clock_skew=60.0)
    assert a.replica.max_skew == 60.0
    b = await start("b", peers=[a.url], offset=SKEW, max_clock_skew=60.0)
    await rounds([a, b])
    assert b.clock_watch.offset("a") == -SKEW
    assert (await get(b, "/healthz"))[0] == 200
    with pytest.raises(ConfigError):
        NodeConfig(replica_id="x", max_clock_skew=0.0)


@pytest.mark.slow
async def test_a_fast_clock_no_longer_keeps_a_dead_peer_alive() -> None:
    """Real time, a 3 s liveness window and a node 12 s ahead: a stopped peer disappears
    once its own evidence ages out, and stays gone (it stayed alive about 15 s before: the
    fast node's observations of it counted until they were 3 s old on that node's clock)."""
    skew = 12.0
    settings: dict[str, Any] = {"port": 0, "gossip_interval": 0.2, "liveness": 3.0}
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(Node(NodeConfig(replica_id="a", **settings)))
        b = Node(NodeConfig(replica_id="b", peers=(a.url,), **settings))
        await b.__aenter__()
        c = Node(
            NodeConfig(replica_id="c", peers=(a.url, b.url), **settings),
            clock=lambda: time.time() + skew,
        )
        await stack.enter_async_context(c)
        await eventually(
            lambda: a.replica.exists("replica:b") and c.clock_watch.current is not None
        )
        await b.close()
        stopped = time.monotonic()
        await eventually(lambda: not a.replica.exists("replica:b"), seconds=3.0 + 3.0)
        gone = time.monotonic() - stopped
        for _ in range(int((skew + 3.0) / 0.2)):
            assert not a.replica.exists("replica:b"), f"b alive again after {gone:.1f}s"
            await asyncio.sleep(0.2)


async def eventually(predicate: Callable[[], bool], *, seconds: float = 10.0) -> None:
    """Poll ``predicate`` (real time, slow tests only) until it holds."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds}s")
