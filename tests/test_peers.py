"""Hostile peers: what counts as evidence that a peer lives, who gets the token, and a
node's own membership record, which synced writes cannot take away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from nodes import LIVENESS, FakeClock, StartNode, node_factory, settle
from procs import Processes
from test_gossip import front, stand_in

from sphaera_crdt.core.constraints import observed
from sphaera_crdt.core.replica import Replica
from sphaera_crdt.net.client import ApiClient, PeerNotAllowed
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def start(clock: FakeClock) -> AsyncIterator[StartNode]:
    async with node_factory(clock) as factory:
        yield factory


def observed_at(node: Node, subject: str) -> float | None:
    """When ``node`` last observed ``subject`` itself (``None``: never)."""
    mine = [o.at for o in node.replica.observations(subject) if o.observer == node.replica.id]
    return mine[0] if mine else None


# -- liveness evidence ---------------------------------------------------------------------


async def test_a_spoofed_header_does_not_keep_a_dead_peer_alive(
    start: StartNode, clock: FakeClock
) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    await b.close()  # b is gone for good
    last = observed_at(a, "replica:b")
    body = b"\x00\x00\x01\x00"  # a STEP1 with an empty state vector
    headers = {
        "Content-Type": "application/octet-stream",
        "Sphaera-Replica": "b",
        "Sphaera-Url": b.url,
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(4):  # someone keeps claiming to be b, every half window
            clock.advance(LIVENESS / 2)
            async with session.post(f"{a.url}/v1/sync", data=body, headers=headers) as answer:
                assert answer.status == 200
            a.replica.tick()
    assert observed_at(a, "replica:b") == last
    assert not a.replica.exists("replica:b")
    assert a.live_peers() == {}


async def test_only_an_answer_from_the_declared_url_is_evidence(
    start: StartNode, clock: FakeClock
) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    await settle([a, b, c])
    before = observed_at(c, "replica:b")
    assert before is not None
    clock.advance(LIVENESS / 2)  # past the rate limit of observations
    # A URL that answers in b's name but is not the URL b declares: no evidence of b.
    alias, runner = await front(a, claim="b")
    try:
        assert (await c.gossip.exchange(alias)).ok
    finally:
        await runner.cleanup()
    assert observed_at(c, "replica:b") == before
    # b's declared URL answering as b is.
    assert (await c.gossip.exchange(b.url)).ok
    assert observed_at(c, "replica:b") == clock.now


# -- the own record ------------------------------------------------------------------------


async def test_a_synced_retraction_of_the_own_record_is_answered(start: StartNode) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    await settle([a, b])
    b.replica.retract("replica:a")  # pushed to a at once
    await b.gossip.flush()
    view = a.replica.entity("replica:a")
    assert view is not None and view.reason != "retracted" and a.replica.exists("replica:a")
    await settle([a, b])
    assert b.replica.exists("replica:a") and b.live_peers() == {"a": a.url}


async def test_a_far_future_overwrite_of_the_own_record_is_answered(start: StartNode) -> None:
    a = await start("a")
    # A replica whose clock is ten years ahead rewrites a's record with another URL.
    ahead = Replica("z", clock=lambda: a.clock() + 10 * 365 * 86400.0)
    ahead.merge(a.replica.delta())
    ahead.declare("replica:a", kind="replica", attrs={"url": "http://203.0.113.9:1"})
    a.handle_update(ahead.delta(), "z")
    view = a.replica.entity("replica:a")
    assert view is not None and view.owner == "a" and view.attrs == {"url": a.url}
    # The re-declaration is stamped past the far-future write: z agrees once it merges it.
    ahead.merge(a.replica.delta())
    theirs = ahead.entity("replica:a")
    assert theirs is not None and theirs.owner == "a" and theirs.attrs == {"url": a.url}


@pytest.mark.parametrize("change", ["retracted", "overwritten"])
async def test_a_node_reasserts_its_record_at_start(clock: FakeClock, change: str) -> None:
    replica = Replica("a", clock=clock)
    config = NodeConfig(
        replica_id="a", port=0, public_url="http://127.0.0.1:1", gossip_interval=3600.0
    )
    async with Node(config, replica=replica, clock=clock):
        pass
    declared = replica.entity("replica:a")
    assert declared is not None
    # While it is down, a synced write reaches its state: a retraction, or the very same
    # record declared by another replica whose clock is ten years ahead.
    other = Replica("x", clock=lambda: clock() + 10 * 365 * 86400.0)
    other.merge(replica.delta())
    if change == "retracted":
        other.retract("replica:a")
    else:
        other.declare("replica:a", kind="replica", attrs=declared.attrs, requires=declared.requires)
    replica.merge(other.delta())
    lost = replica.entity("replica:a")
    assert lost is not None and (lost.reason == "retracted" or lost.owner == "x")
    async with Node(config, replica=replica, clock=clock):
        view = replica.entity("replica:a")
        assert view is not None and view.owner == "a" and replica.exists("replica:a")
        assert view.attrs == {"url": "http://127.0.0.1:1"}
    other.merge(replica.delta())
    theirs = other.entity("replica:a")
    assert theirs is not None and (theirs.owner, theirs.attrs) == ("a", view.attrs)


# -- who gets the token --------------------------------------------------------------------


async def test_a_url_from_the_merged_state_gets_the_token_only_if_allowed(
    start: StartNode, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A record names a URL on a host nobody allowed (here a name that resolves to the
    loopback stand-in): it is not contacted, so the token never reaches it."""
    seen: list[str | None] = []

    async def recording(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=503)

    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def resolving(host: Any, *args: Any, **kwargs: Any) -> Any:
        return await real_getaddrinfo(
            "127.0.0.1" if host == "peer.example" else host, *args, **kwargs
        )

    monkeypatch.setattr(loop, "getaddrinfo", resolving)
    local, runner = await stand_in(recording)
    try:
        url = local.replace("127.0.0.1", "peer.example")
        stranger = Replica("stranger", clock=clock)
        entity = "replica:stranger"
        stranger.declare(
            entity, kind="replica", attrs={"url": url}, requires=observed(entity, within=LIVENESS)
        )
        stranger.observe(entity, ok=True, ttl=LIVENESS)
        a = await start("a", token="secret-token")
        a.handle_update(stranger.delta(), "stranger")
        assert a.live_peers() == {"stranger": url}
        with caplog.at_level(logging.WARNING, logger="sphaera_crdt"):
            assert a.gossip.targets() == {}
            assert await a.gossip.round() == []
            with pytest.raises(PeerNotAllowed):
                await a.gossip.exchange(url)
        assert seen == []
        assert [r.getMessage() for r in caplog.records if url in r.getMessage()] != []
        # Allowed by name, the same URL is a peer like any other.
        b = await start("b", token="secret-token", allow_peers=("peer.example",))
        b.handle_update(stranger.delta(), "stranger")
        assert b.gossip.targets() == {url: "stranger"}
        (exchange,) = await b.gossip.round()
        assert not exchange.ok and seen == ["Bearer secret-token"]
    finally:
        await runner.cleanup()


async def test_the_token_never_follows_a_redirect(start: StartNode) -> None:
    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=503)

    target, target_runner = await stand_in(elsewhere)

    async def redirecting(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{target}/v1/sync")

    url, runner = await stand_in(redirecting)
    try:
        a = await start("a", token="secret-token", peers=[url])
        (exchange,) = await a.gossip.round()
        assert not exchange.ok and "307" in (exchange.error or "")
        assert seen == []
    finally:
        await runner.cleanup()
        await target_runner.cleanup()


@pytest.mark.slow
async def test_a_killed_process_dies_whatever_its_name_claims() -> None:
    """Real processes: b is SIGKILLed while a caller keeps sending a's sync route b's
    headers; a finds b absent once its liveness window has passed."""
    procs = Processes()
    try:
        gossip = ["--gossip-interval", "0.1", "--liveness", "1"]
        a = procs.start("a", args=gossip)
        b = procs.start("b", peers=[a.url], args=gossip)

        async def status_of_b() -> str:
            async with ApiClient(a.url, timeout=2) as api:
                return str((await api.replicas())["replicas"].get("b", {}).get("status"))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await status_of_b() != "exists":
            assert loop.time() < deadline, "b never joined"
            await asyncio.sleep(0.05)
        b.kill()
        headers = {
            "Content-Type": "application/octet-stream",
            "Sphaera-Replica": "b",
            "Sphaera-Url": b.url,
        }
        deadline = loop.time() + 10
        async with aiohttp.ClientSession() as session:
            while await status_of_b() == "exists":
                assert loop.time() < deadline, "a spoofed header kept b alive"
                async with session.post(
                    f"{a.url}/v1/sync", data=b"\x00\x00\x01\x00", headers=headers
                ) as answer:
                    assert answer.status == 200
                await asyncio.sleep(0.05)
        assert await status_of_b() == "absent"
    finally:
        procs.close()
