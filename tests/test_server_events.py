"""``GET /v1/events``: a snapshot first, then one ``change`` event per status change.

Most tests run a full node (``async with Node(...)``: the replica's changes reach the
event hub as they do in production) and read the stream over loopback HTTP; waiting on
a stream read with a timeout is the only waiting there is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sphaera_crdt.net.events import EventHub, Subscriber
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

TOKEN = "ev3nts-t0ken"
#: Seconds to wait for the next line of a stream before failing.
READ_TIMEOUT = 5.0


class EventReader:
    """Parses a server-sent event stream; comment lines are kept in ``comments``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.content = response.content
        self.comments: list[str] = []

    async def next(self, *, keep_time: bool = False) -> tuple[str, Any]:
        """The next event; a change's time (``at``, which a node's changes carry) is
        checked and left out unless ``keep_time``, so tests can compare the rest exactly."""
        name, data = await self._next()
        if name == "change" and "at" in data and not keep_time:
            assert isinstance(data["at"], float), data
            return name, {key: value for key, value in data.items() if key != "at"}
        return name, data

    async def _next(self) -> tuple[str, Any]:
        name = "message"
        data: list[bytes] = []
        while True:
            async with asyncio.timeout(READ_TIMEOUT):
                line = await self.content.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    return name, orjson.loads(b"\n".join(data))
                continue
            if line.startswith(b":"):
                self.comments.append(line[1:].strip().decode())
                continue
            field, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)

    async def comment(self) -> str:
        line = b"\n"
        while line == b"\n":
            async with asyncio.timeout(READ_TIMEOUT):
                line = await self.content.readline()
        assert line.startswith(b":"), line
        return line[1:].strip().decode()

    async def at_end(self) -> bool:
        try:
            await self.next()
        except EOFError:
            return True
        return False


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        yield node


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_snapshot_then_changes(node: Node, session: aiohttp.ClientSession) -> None:
    node.replica.declare("db", kind="pg")
    node.replica.declare("loop", requires={"not": {"exists": "loop"}})
    async with session.get(node.url + "/v1/events") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        events = EventReader(response)
        name, snapshot = await events.next()
        assert name == "snapshot"
        assert set(snapshot) == {"entities", "at"}
        assert abs(snapshot["at"] - node.now()) < 60
        entities = snapshot["entities"]
        assert set(entities) == {"db", "loop", "replica:a"}
        assert entities["db"]["status"] == "exists"
        assert entities["loop"]["status"] == "undetermined"
        for entry in entities.values():
            assert set(entry) == {"status", "reason"}

        put = await session.put(node.url + "/v1/entities/api", json={"requires": {"exists": "db"}})
        assert put.status == 201
        assert await events.next() == (
            "change",
            {"entity": "api", "before": "absent", "after": "exists", "reason": put_reason(node)},
        )

        assert (await session.delete(node.url + "/v1/entities/db")).status == 200
        first = await events.next(keep_time=True)
        second = await events.next(keep_time=True)
        assert [first[0], second[0]] == ["change", "change"]
        # Dependencies first.
        assert (first[1]["entity"], first[1]["before"], first[1]["after"]) == (
            "db",
            "exists",
            "absent",
        )
        assert (second[1]["entity"], second[1]["after"]) == ("api", "absent")
        assert set(second[1]) == {"entity", "before", "after", "reason", "at"}


def put_reason(node: Node) -> str:
    view = node.replica.entity("api")
    assert view is not None
    return view.reason


async def test_a_late_client_starts_from_the_current_state(
    node: Node, session: aiohttp.ClientSession
) -> None:
    async with session.get(node.url + "/v1/events") as early:
        early_events = EventReader(early)
        await early_events.next()
        node.replica.declare("x")
        assert (await early_events.next())[1]["entity"] == "x"
        node.replica.retract("x")
        assert (await early_events.next())[1]["after"] == "absent"
        async with session.get(node.url + "/v1/events") as late:
            name, snapshot = await EventReader(late).next()
            assert name == "snapshot"
            assert snapshot["entities"]["x"]["status"] == "absent"


async def test_events_need_the_token_when_there_is_one(session: aiohttp.ClientSession) -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600, token=TOKEN)
    async with Node(config) as node:
        async with session.get(node.url + "/v1/events") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(node.url + "/v1/events", headers=headers) as response:
            assert response.status == 200
            assert (await EventReader(response).next())[0] == "snapshot"


async def test_closing_the_node_ends_open_streams(session: aiohttp.ClientSession) -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        response = await session.get(node.url + "/v1/events")
        events = EventReader(response)
        assert (await events.next())[0] == "snapshot"
        await asyncio.wait_for(node.close(), 5)
        assert await events.at_end()
        assert len(node.events) == 0
        response.release()


# -- with the application alone ------------------------------------------------------------


@pytest_asyncio.fixture
async def bare() -> AsyncIterator[tuple[Node, TestClient[web.Request, web.Application]]]:
    """A node that is not entered: its hub is fed by the test, heartbeats are fast."""
    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600))
    async with TestClient(TestServer(create_app(node, heartbeat=0.05))) as client:
        yield node, client


async def test_idle_streams_carry_heartbeats(
    bare: tuple[Node, TestClient[web.Request, web.Application]],
) -> None:
    _, client = bare
    async with client.get("/v1/events") as response:
        events = EventReader(response)
        assert (await events.next())[0] == "snapshot"
        assert await events.comment() == "keep-alive"
        assert await events.comment() == "keep-alive"


async def test_a_client_too_slow_to_keep_up_is_cut_off(
    bare: tuple[Node, TestClient[web.Request, web.Application]],
) -> None:
    node, client = bare
    node.events = EventHub(queue_size=4)
    async with client.get("/v1/events") as response:
        events = EventReader(response)
        assert (await events.next())[0] == "snapshot"
        assert len(node.events) == 1
        # Published without yielding: the stream cannot drain in between.
        for index in range(10):
            node.events.publish("change", {"entity": f"e{index}"})
        received = [await events.next() for _ in range(4)]
        assert [name for name, _ in received] == ["change"] * 3 + ["overflow"]
        assert [data["entity"] for _, data in received[:3]] == ["e0", "e1", "e2"]
        assert received[3][1] == {"dropped": True}
        assert await events.at_end()
    assert len(node.events) == 0


async def test_a_client_that_goes_away_is_unsubscribed(
    bare: tuple[Node, TestClient[web.Request, web.Application]],
) -> None:
    node, client = bare
    hub = node.events = WatchedHub()
    response = await client.get("/v1/events")
    assert (await EventReader(response).next())[0] == "snapshot"
    assert len(hub) == 1
    response.close()
    # The next heartbeat write fails on the closed connection and ends the stream.
    await asyncio.wait_for(hub.gone.wait(), READ_TIMEOUT)
    assert len(hub) == 0


class WatchedHub(EventHub):
    """An event hub that says when a subscriber leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = asyncio.Event()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        super().unsubscribe(subscriber)
        self.gone.set()
