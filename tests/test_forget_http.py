"""Forgetting through the HTTP route, on in-process nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]


def _node(replica_id: str) -> Node:
    return Node(
        NodeConfig(replica_id=replica_id, port=0, gossip_interval=3600), clock=lambda: 1000.0
    )


def _sync_all(nodes: list[Node]) -> None:
    for _ in range(2):
        for src in nodes:
            for dst in nodes:
                if src is not dst:
                    dst.replica.merge(src.replica.delta(dst.replica.state_vector()))


@pytest_asyncio.fixture
async def nodes() -> list[Node]:
    found = [_node(name) for name in ("a", "b", "c")]
    _sync_all(found)
    return found


@pytest_asyncio.fixture
async def client(nodes: list[Node]) -> AsyncIterator[Client]:
    async with TestClient(TestServer(_app(nodes[0]))) as client:
        yield client


def _app(node: Node) -> web.Application:
    return create_app(node)


async def test_delete_replica_forgets_it_on_every_node(client: Client, nodes: list[Node]) -> None:
    a, b, c = nodes
    c.replica.declare("svc")
    _sync_all([b, c])
    _sync_all([a, b])
    response = await client.delete("/v1/replicas/c")
    assert response.status == 200, await response.text()
    assert await response.json() == {"forgotten": ["c"]}
    _sync_all([a, b])
    for node in (a, b):
        assert node.replica.entity("svc") is None
        assert "c" not in node.replicas()
    answer = await (await client.get("/v1/replicas")).json()
    assert set(answer["replicas"]) == {"a", "b"}
    before = len(b.replica.delta())
    assert before == len(a.replica.delta())


async def test_delete_refuses_self_unknown_and_malformed(client: Client) -> None:
    response = await client.delete("/v1/replicas/a")
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_request"
    response = await client.delete("/v1/replicas/nobody")
    assert response.status == 404
    response = await client.delete("/v1/replicas/" + "x" * 300)
    assert response.status == 422


async def test_a_forgotten_node_still_running_declares_itself_again() -> None:
    config = NodeConfig(replica_id="b", port=0, gossip_interval=3600)
    async with Node(config) as b:
        a = _node("a")
        _sync_all([a, b])
        a.forget("b")
        b.replica.merge(a.replica.delta(b.replica.state_vector()))
        view = b.replica.entity("replica:b")
        assert view is not None and view.attrs.get("url") == b.url
        a.replica.merge(b.replica.delta(a.replica.state_vector()))
        assert "b" in a.replicas() and a.replicas()["b"].url == b.url
        async with aiohttp.ClientSession() as session:
            async with session.get(b.url + "/v1/replicas") as response:
                assert response.status == 200
