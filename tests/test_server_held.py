"""Held updates over HTTP: a request answered 4xx changes nothing, a valid request is never
failed by a held update it releases, held bytes are bounded, and allocation bombs get a 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import bombs
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import snapshot

from sphaera_crdt import Replica
from sphaera_crdt.core.lib0 import decode_state_vector, write_varuint
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]
OCTETS = {"Content-Type": "application/octet-stream"}


def _clock() -> float:
    return 1000.0


def _sync(kind: int, payload: bytes) -> bytes:
    return bytes((0, kind)) + write_varuint(len(payload)) + payload


def _held_metrics(node: Node) -> dict[str, float | None]:
    value = node.metrics.registry.get_sample_value
    return {
        "held": value("sphaera_held_updates"),
        "held_bytes": value("sphaera_held_update_bytes"),
        **{
            f"dropped_{reason}": value("sphaera_held_updates_dropped_total", {"reason": reason})
            for reason in ("count", "bytes", "invalid")
        },
    }


@pytest_asyncio.fixture
async def node_client(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, Client]]:
    options: dict[str, Any] = {"replica_id": "a", "port": 0, "gossip_interval": 3600}
    options.update(getattr(request, "param", {}))
    node = Node(NodeConfig(**options), clock=_clock)
    node.replica.declare("db", kind="pg", attrs={"port": 5432})
    async with TestClient(TestServer(create_app(node))) as client:
        yield node, client


async def _post(client: Client, route: str, update: bytes, *, pull: bool = False) -> int:
    if route == "/v1/updates":
        body = update
    else:
        body = (_sync(0, b"\x00") if pull else b"") + _sync(2, update)
    response = await client.post(route, data=body, headers=OCTETS)
    return response.status


ROUTES = pytest.mark.parametrize("route", ["/v1/updates", "/v1/sync"])


@ROUTES
async def test_a_held_update_refused_on_release_never_fails_the_request_that_releases_it(
    node_client: tuple[Node, Client], route: str
) -> None:
    node, client = node_client
    predecessor, held = bombs.non_type_parent()
    assert await _post(client, route, held) in (200, 204)  # held: it may yet be valid
    assert _held_metrics(node)["held"] == 1
    status = await _post(client, route, predecessor, pull=True)
    assert status in (200, 204)
    assert decode_state_vector(node.replica.state_vector())[bombs.STRANGER] == 5
    held_now = _held_metrics(node)
    assert (held_now["held"], held_now["held_bytes"], held_now["dropped_invalid"]) == (0, 0, 1)


@ROUTES
@pytest.mark.parametrize("make", [bombs.broken_delete_set, bombs.deep_json])
async def test_an_update_refused_with_400_is_not_held(
    node_client: tuple[Node, Client], route: str, make: Callable[[], tuple[bytes, ...]]
) -> None:
    node, client = node_client
    predecessor, held, *_ = make()
    before = snapshot(node.replica)
    assert await _post(client, route, held) == 400
    assert snapshot(node.replica) == before
    assert _held_metrics(node)["held"] == 0
    # The update it seemed to wait for is answered 2xx: nothing held fails it.
    assert await _post(client, route, predecessor, pull=True) in (200, 204)
    assert node.replica.held_stats.dropped["invalid"] == 0


@pytest.mark.parametrize(
    "node_client", [{"max_body": 256 * 1024, "max_held_bytes": 1_000_000}], indirect=True
)
async def test_held_bytes_are_bounded_on_a_node(node_client: tuple[Node, Client]) -> None:
    node, client = node_client
    for index in range(40):
        source = Replica(f"s{index}", clock=_clock)
        state = source.state_vector()
        source.declare("big", attrs={"blob": "x" * 200_000})
        assert await _post(client, "/v1/updates", source.delta(state)) == 204
    held = _held_metrics(node)
    assert held["held"] == 4  # the newest four; a fifth would pass 1 MB
    assert held["held_bytes"] == node.replica.held_stats.bytes
    assert held["held_bytes"] is not None and 4 * 200_000 < held["held_bytes"] <= 1_000_000
    assert (held["dropped_bytes"], held["dropped_count"], held["dropped_invalid"]) == (36, 0, 0)
    text = await (await client.get("/metrics")).text()
    assert 'sphaera_held_updates_dropped_total{reason="bytes"} 36.0' in text


async def test_held_bytes_default_to_four_bodies() -> None:
    config = NodeConfig(replica_id="a", max_body=1024 * 1024)
    assert config.held_bytes_limit == 4 * 1024 * 1024
    assert NodeConfig(replica_id="a", max_held_bytes=10).held_bytes_limit == 10
    node = Node(NodeConfig(replica_id="a", max_body=4096, max_held_bytes=100), clock=_clock)
    source = Replica("s", clock=_clock)
    state = source.state_vector()
    source.declare("x", attrs={"v": "y" * 200})
    node.replica.merge(source.delta(state))
    assert node.replica.held_stats.dropped["bytes"] == 1


BOMBS = [("/v1/updates", name, body) for name, body in bombs.UPDATE_BOMBS] + [
    ("/v1/sync", name, body) for name, body in bombs.SYNC_BOMBS
]


@pytest.mark.parametrize(
    ("route", "name", "body"), BOMBS, ids=[f"{route} {name}" for route, name, _ in BOMBS]
)
async def test_allocation_bombs_get_400_and_change_nothing(
    node_client: tuple[Node, Client], route: str, name: str, body: bytes
) -> None:
    node, client = node_client
    before = snapshot(node.replica)
    response = await client.post(route, data=body, headers=OCTETS)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"]
    assert snapshot(node.replica) == before
    assert _held_metrics(node)["held"] == 0
