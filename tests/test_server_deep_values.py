"""No value produces a 5xx: deep values are refused on the way in with a 422 that changes
nothing, and deep or unreadable entries that arrive from a peer (bypassing the API) are
read as unreadable, so every route still answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from rawpeer import entry, field, raw_write

from sphaera_crdt import Replica
from sphaera_crdt.core.codec import MAX_DEPTH
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]
OCTETS = {"Content-Type": "application/octet-stream"}
NOW = 1000.0


def nested(depth: int, leaf: Any = 0) -> Any:
    """``leaf`` inside ``depth`` levels of lists and objects, alternately."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.fixture
def node() -> Node:
    return Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600), clock=lambda: NOW)


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(node))) as client:
        yield client


async def state(client: Client) -> bytes:
    response = await client.get("/v1/entities")
    assert response.status == 200
    return await response.read()


async def every_route_answers(client: Client, entity: str) -> None:
    """Every reading route answers below 500."""
    for path in (
        "/v1/entities",
        f"/v1/entities/{entity}",
        f"/v1/entities/{entity}/why?depth=32",
        f"/v1/entities/{entity}/why?depth=0",
        "/v1/replicas",
        "/metrics",
        "/healthz",
        "/",
    ):
        response = await client.get(path)
        assert response.status < 500, (path, await response.text())
        await response.read()
    async with client.get("/v1/events") as response:
        assert response.status == 200
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"event: snapshot\ndata: ")
        orjson.loads(first.split(b"data: ", 1)[1])


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 250, 251, 254, 255, 256, 300, 2000])
async def test_a_deep_attribute_is_refused_and_changes_nothing(client: Client, depth: int) -> None:
    await client.put("/v1/entities/db", json={"attrs": {"port": 1}})
    before = await state(client)
    body = b'{"attrs":{"v":' + b"[" * depth + b"]" * depth + b"}}"
    for method, path in (("PUT", "/v1/entities/db"), ("PUT", "/v1/entities/new")):
        response = await client.request(
            method, path, data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status in (400, 422), await response.text()
        error = (await response.json())["error"]
        assert error["code"] in ("invalid_value", "invalid_json")
    patch = await client.patch(
        "/v1/entities/db", data=body, headers={"Content-Type": "application/json"}
    )
    assert patch.status in (400, 422)
    assert await state(client) == before
    await every_route_answers(client, "db")


async def test_a_value_at_the_limit_is_accepted_and_served_everywhere(client: Client) -> None:
    value = nested(MAX_DEPTH)
    response = await client.put(
        "/v1/entities/db", json={"attrs": {"v": value}, "requires": {"exists": "replica:a"}}
    )
    assert response.status == 201
    assert (await response.json())["attrs"]["v"] == value
    clause = {"attr": ["db", "v"], "op": "eq", "value": nested(MAX_DEPTH - 2)}
    response = await client.put("/v1/entities/api", json={"requires": clause})
    assert response.status == 201
    observed = await client.post("/v1/observations", json={"subject": "db", "value": value})
    assert observed.status == 200
    await every_route_answers(client, "api")
    await every_route_answers(client, "db")


async def test_a_deep_observation_or_requires_is_refused(client: Client) -> None:
    before = await state(client)
    response = await client.post(
        "/v1/observations", json={"subject": "db", "value": nested(MAX_DEPTH + 1)}
    )
    assert response.status == 422
    # Each clause is within the limits, but the requires as a whole nests too deep.
    clause: Any = {"attr": ["db", "v"], "op": "eq", "value": nested(MAX_DEPTH - 2)}
    for _ in range(10):
        clause = {"not": clause}
    response = await client.put("/v1/entities/api", json={"requires": clause})
    assert response.status == 422
    assert await state(client) == before
    assert (await client.get("/v1/entities/api")).status == 404


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 252, 256, 400, 100_000])
async def test_deep_entries_from_a_peer_break_no_route(
    client: Client, node: Node, depth: int
) -> None:
    peer = Replica("p", clock=lambda: NOW)
    peer.declare("db", attrs={"port": 1})
    peer.declare("api", requires={"exists": "db"})
    deep = "[" * depth + "]" * depth
    raw_write(
        peer,
        {
            field("db", "a\x1fv"): entry(2_000_000, deep),
            field("db", "k"): entry(2_000_000, deep),
            field("api", "q"): entry(2_000_000, deep),
            "s\x1fdb": entry(2_000_000, f"[true,{deep},999.0,null]"),
        },
    )
    response = await client.post("/v1/updates", data=peer.delta(), headers=OCTETS)
    assert response.status == 204
    await every_route_answers(client, "api")
    await every_route_answers(client, "db")
    assert node.replica.unreadable == 4
    api = await (await client.get("/v1/entities/api")).json()
    assert api["status"] == "undetermined"
    assert api["reason"] == f"unreadable requires: nested deeper than {MAX_DEPTH} levels"
    why = await (await client.get("/v1/entities/db/why")).json()
    assert set(why["unreadable"]) == {"kind", "attrs.v", "observation by mallory"}
    metrics = await (await client.get("/metrics")).text()
    assert "sphaera_unreadable_entries_total 4.0" in metrics


async def test_lone_surrogates_from_a_peer_break_no_route(client: Client, node: Node) -> None:
    peer = Replica("p", clock=lambda: NOW)
    peer.declare("db", attrs={"smile": "\U0001f600"})
    raw_write(
        peer,
        {
            field("db", "a\x1fv"): entry(2_000_000, '"\\ud800"'),
            field("db", "a\x1fw"): entry(2_000_000, '{"\\udfff":1}'),
            field("db", "a\x1fpair"): entry(2_000_000, '"\\ud83d\\ude00"'),
            "s\x1fdb": entry(2_000_000, '[true,"\\udc00",999.0,null]'),
        },
    )
    response = await client.post("/v1/updates", data=peer.delta(), headers=OCTETS)
    assert response.status == 204
    await every_route_answers(client, "db")
    db = await (await client.get("/v1/entities/db")).json()
    assert db["attrs"] == {"smile": "\U0001f600", "pair": "\U0001f600"}
    assert node.replica.unreadable == 3
