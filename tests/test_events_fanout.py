"""Event fan-out serialises each event once, whatever the number of open streams.

Counted, not timed: ``orjson.dumps`` is wrapped to count the change events it serialises.
``benchmarks/bench_events.py`` measures what this saves a write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, TCPConnector
from aiohttp.test_utils import TestClient, TestServer

from sphaera_crdt.net import events
from sphaera_crdt.net.events import EventHub, Subscriber
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

STREAMS = 150
DEPENDENTS = 300
READ_TIMEOUT = 20.0


@pytest.fixture
def serialised(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The change events ``orjson.dumps`` serialises while the test runs."""
    calls: list[Any] = []
    dumps = orjson.dumps

    def counting(data: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(data, dict) and {"entity", "before", "after"} <= data.keys():
            calls.append(data)
        return dumps(data, *args, **kwargs)

    monkeypatch.setattr(orjson, "dumps", counting)
    yield calls


async def _read_until(response: ClientResponse, marker: bytes, count: int) -> int:
    """Read the stream until ``marker`` was seen ``count`` times; return how many."""
    seen = 0
    tail = b""
    async with asyncio.timeout(READ_TIMEOUT):
        while seen < count:
            chunk = await response.content.readany()
            if not chunk:
                break
            # The tail is too short to hold a whole marker, so none is counted twice.
            data = tail + chunk
            seen += data.count(marker)
            tail = data[-len(marker) + 1 :]
    return seen


async def test_a_write_that_changes_300_statuses_serialises_300_events_for_150_streams(
    serialised: list[Any],
) -> None:
    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600), clock=lambda: 1000.0)
    node.replica.declare("root")
    for index in range(DEPENDENTS):
        node.replica.declare(f"dep{index:03}", requires={"exists": "root"})
    # aiohttp's default connector opens 100 connections at most.
    connector = TCPConnector(limit=0)
    async with node, TestClient(TestServer(create_app(node)), connector=connector) as client:
        async with asyncio.timeout(READ_TIMEOUT):
            streams = [await client.get("/v1/events") for _ in range(STREAMS)]
        for response in streams:
            assert await _read_until(response, b"event: snapshot", 1) == 1
        assert len(node.events) == STREAMS
        serialised.clear()
        answer = await client.delete("/v1/entities/root")
        assert answer.status == 200
        changes = DEPENDENTS + 1
        for response in streams:
            assert await _read_until(response, b"event: change", changes) == changes
            response.close()
    assert len(serialised) == changes  # once per event, not once per event and stream
    assert {data["entity"] for data in serialised} == {"root"} | {
        f"dep{index:03}" for index in range(DEPENDENTS)
    }


async def test_every_subscriber_gets_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[bytes] = []
    encode = events.encode_event

    def counting(name: str, data: Any) -> bytes:
        encoded.append(encode(name, data))
        return encoded[-1]

    monkeypatch.setattr(events, "encode_event", counting)
    hub = EventHub()
    subscribers = [hub.subscribe() for _ in range(STREAMS)]
    for index in range(DEPENDENTS):
        hub.publish("change", {"entity": f"e{index}"})
    assert len(encoded) == DEPENDENTS
    expected = b"".join(encoded)
    for subscriber in subscribers:
        assert subscriber.backlog == DEPENDENTS
        assert await subscriber.take() == expected
        assert subscriber.backlog == 0


async def test_nothing_is_serialised_without_subscribers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str, data: Any) -> bytes:
        raise AssertionError("serialised an event nobody listens to")

    monkeypatch.setattr(events, "encode_event", refuse)
    EventHub().publish("change", {"entity": "e"})


async def test_a_finished_stream_sends_its_backlog_then_ends() -> None:
    hub = EventHub(queue_size=3)
    subscriber = hub.subscribe()
    for index in range(5):
        hub.publish("change", {"entity": f"e{index}"})
    assert len(hub) == 0  # cut off at the third event
    taken = await subscriber.take()
    assert taken.count(b"event: change") == 2
    assert taken.endswith(b'event: overflow\ndata: {"dropped":true}\n\n')
    assert subscriber.finished and await subscriber.take() == b""


async def test_a_burst_of_events_wakes_each_waiting_stream_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = EventHub()
    subscribers = [hub.subscribe() for _ in range(STREAMS)]
    takes = [asyncio.ensure_future(subscriber.take()) for subscriber in subscribers]
    await asyncio.sleep(0)  # every stream now waits for an event
    assert len(hub.waiting) == STREAMS
    wakes: list[Subscriber] = []
    wake = Subscriber.wake

    def counting(self: Subscriber) -> None:
        wakes.append(self)
        wake(self)

    monkeypatch.setattr(Subscriber, "wake", counting)
    for index in range(DEPENDENTS):
        hub.publish("change", {"entity": f"e{index}"})
    assert len(wakes) == STREAMS  # per burst and stream, not per event and stream
    for taken in await asyncio.gather(*takes):
        assert taken.count(b"event: change") == DEPENDENTS


async def test_the_shared_log_keeps_only_what_some_stream_has_not_taken() -> None:
    hub = EventHub(queue_size=8)
    fast, slow = hub.subscribe(), hub.subscribe()
    for index in range(40):
        hub.publish("change", {"entity": f"e{index}"})
        await fast.take()
    # The slow stream fell behind by more than 7 events: cut off with what it was owed.
    assert len(hub) == 1 and slow.finished
    owed = await slow.take()
    assert owed.count(b"event: change") == 7
    assert owed.endswith(b'event: overflow\ndata: {"dropped":true}\n\n')
    assert b'"e0"' in owed and b'"e6"' in owed and b'"e7"' not in owed
    assert await slow.take() == b""
    assert hub.retained <= 4  # trimmed: the fast stream took everything before
