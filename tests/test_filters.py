"""Filtered questions: ``GET /v1/entities?prefix=&kind=&status=`` and
``GET /v1/events?entity=&prefix=&kind=`` answer what the unfiltered read answers, filtered
on the client; bad filters are refused with a JSON 400; a filtered stream shares the hub's
one serialisation and is never cut off for events it skips.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from sphaera_crdt.core.views import EntityView, Status
from sphaera_crdt.net.events import EventHub, encode_event
from sphaera_crdt.net.filters import EntityFilter
from sphaera_crdt.net.openapi import openapi_document
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig
from tests.test_server_events import EventReader

Client = TestClient[web.Request, web.Application]

PREFIXES = (None, "api", "api-", "db", "replica:", "zzz")
KINDS = (None, "svc", "pg", "replica", "nope")
STATUSES = (None, "exists", "absent", "undetermined")


def populate(node: Node) -> None:
    """Entities of several kinds, prefixes and all three statuses."""
    replica = node.replica
    replica.declare("db", kind="pg")
    replica.declare("db-old", kind="pg")
    replica.retract("db-old")
    replica.declare("api-1", kind="svc", requires={"exists": "db"})
    replica.declare("api-2", kind="svc", requires={"exists": "cache"})
    replica.declare("api-loop", kind="svc", requires={"not": {"exists": "api-loop"}})
    replica.declare("apiary", requires={"exists": "api-1"})
    replica.declare("worker", kind="svc")


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Client]:
    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600))
    populate(node)
    async with TestClient(TestServer(create_app(node))) as client:
        yield client


def kept(entity: dict[str, Any], prefix: str | None, kind: str | None, status: str | None) -> bool:
    """The filter as a client applies it to an unfiltered read."""
    return (
        (prefix is None or entity["id"].startswith(prefix))
        and (kind is None or entity["kind"] == kind)
        and (status is None or entity["status"] == status)
    )


@pytest.mark.asyncio
async def test_filtered_entities_match_the_unfiltered_read_filtered(client: Client) -> None:
    everything = (await (await client.get("/v1/entities")).json())["entities"]
    assert {entity["status"] for entity in everything.values()} == {
        "exists",
        "absent",
        "undetermined",
    }
    for prefix, kind, status in itertools.product(PREFIXES, KINDS, STATUSES):
        query = {
            name: value
            for name, value in (("prefix", prefix), ("kind", kind), ("status", status))
            if value is not None
        }
        response = await client.get("/v1/entities", params=query)
        assert response.status == 200, query
        expected = {
            entity_id: entity
            for entity_id, entity in everything.items()
            if kept(entity, prefix, kind, status)
        }
        assert (await response.json())["entities"] == expected, query


@pytest.mark.parametrize(
    ("path", "query", "needle"),
    [
        ("/v1/entities", "status=gone", "status must be one of"),
        ("/v1/entities", "status=", "is empty"),
        ("/v1/entities", "prefix=a&prefix=b", "given twice"),
        ("/v1/entities", "owner=a", "unknown filter 'owner'"),
        ("/v1/entities", "entity=db", "unknown filter 'entity'"),
        ("/v1/events", "status=exists", "unknown filter 'status'"),
        ("/v1/events", "kind=", "is empty"),
        ("/v1/events", "colour=red", "unknown filter 'colour'"),
    ],
)
@pytest.mark.asyncio
async def test_bad_filters_are_refused(client: Client, path: str, query: str, needle: str) -> None:
    response = await client.get(f"{path}?{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_filter"
    assert needle in error["message"]


EVENT_FILTERS: list[dict[str, str]] = [
    {"entity": "api-1"},
    {"prefix": "api"},
    {"kind": "svc"},
    {"prefix": "api-", "kind": "svc"},
    {"entity": "api-1", "kind": "svc"},
]


def event_kept(change: dict[str, Any], kinds: dict[str, str | None], query: dict[str, str]) -> bool:
    entity_id = change["entity"]
    return (
        ("entity" not in query or entity_id == query["entity"])
        and ("prefix" not in query or entity_id.startswith(query["prefix"]))
        and ("kind" not in query or kinds.get(entity_id) == query["kind"])
    )


@pytest.mark.asyncio
async def test_filtered_streams_match_the_unfiltered_stream_filtered() -> None:
    """Snapshots and changes alike; the last change (``api-1`` retracted) is one every
    filter keeps, so each stream is read up to it and compared whole."""
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600)
    async with Node(config) as node, aiohttp.ClientSession() as session:
        populate(node)
        kinds = {entity_id: view.kind for entity_id, view in node.replica.entities().items()}
        kinds.update(cache="pg", other="svc")
        responses = [await session.get(node.url + "/v1/events")]
        for query in EVENT_FILTERS:
            responses.append(await session.get(node.url + "/v1/events", params=query))
        readers = [EventReader(response) for response in responses]
        snapshots = [await reader.next() for reader in readers]

        await session.put(node.url + "/v1/entities/cache", json={"kind": "pg"})
        await session.delete(node.url + "/v1/entities/db")
        await session.put(node.url + "/v1/entities/db", json={"kind": "pg"})
        await session.put(node.url + "/v1/entities/other", json={"kind": "svc"})
        await session.delete(node.url + "/v1/entities/api-1")

        async def until_last(reader: EventReader) -> list[dict[str, Any]]:
            changes = []
            while True:
                name, data = await reader.next()
                assert name == "change"
                changes.append(data)
                if data["entity"] == "api-1" and data["reason"] == "retracted":
                    return changes

        streams = [await until_last(reader) for reader in readers]
        for response in responses:
            response.close()

    everything, *filtered = streams
    assert len(everything) >= 8
    (_, full_snapshot), *filtered_snapshots = snapshots
    for query, changes, (name, snapshot) in zip(
        EVENT_FILTERS, filtered, filtered_snapshots, strict=True
    ):
        assert name == "snapshot"
        assert snapshot["entities"] == {
            entity_id: entry
            for entity_id, entry in full_snapshot["entities"].items()
            if event_kept({"entity": entity_id}, kinds, query)
        }, query
        assert changes == [c for c in everything if event_kept(c, kinds, query)], query


def change_of(entity_id: str) -> dict[str, str]:
    return {"entity": entity_id, "before": "absent", "after": "exists", "reason": "r"}


@pytest.mark.asyncio
async def test_a_filtered_client_takes_only_its_events_and_is_not_cut_off_for_others() -> None:
    hub = EventHub(queue_size=10)
    everything = hub.subscribe()
    mine = hub.subscribe(EntityFilter(prefix="api"))
    by_kind = hub.subscribe(EntityFilter(kind="svc"))
    assert hub.wants_kind
    waiting = asyncio.ensure_future(mine.take())
    await asyncio.sleep(0)  # let it start waiting
    hub.publish("change", change_of("db"), entity="db", kind="pg")
    await asyncio.sleep(0)
    assert not waiting.done()  # skipped: not woken
    hub.publish("change", change_of("api"), entity="api", kind="svc")
    assert await waiting == encode_event("change", change_of("api"))
    assert await by_kind.take() == encode_event("change", change_of("api"))
    assert await everything.take() == encode_event("change", change_of("db")) + encode_event(
        "change", change_of("api")
    )

    # Many skipped events: the filtered clients keep up (none of those count against
    # them), the unfiltered one that reads nothing falls behind and is cut off.
    for index in range(30):
        hub.publish("change", change_of(f"db{index}"), entity=f"db{index}", kind="pg")
    hub.publish("change", change_of("api-2"), entity="api-2", kind="svc")
    assert hub.retained < 10  # the log was trimmed past what the filtered clients skip
    assert await mine.take() == encode_event("change", change_of("api-2"))
    assert await by_kind.take() == encode_event("change", change_of("api-2"))
    assert everything.finished
    assert (await everything.take()).endswith(encode_event("overflow", {"dropped": True}))

    # A filtered client that falls behind on events it keeps is cut off like any other.
    for index in range(12):
        hub.publish("change", change_of(f"api{index}"), entity=f"api{index}", kind="svc")
    assert mine.finished and by_kind.finished
    owed = await mine.take()
    assert owed.count(b"event: change") == 9 and owed.endswith(
        encode_event("overflow", {"dropped": True})
    )
    hub.unsubscribe(by_kind)
    assert not hub.wants_kind


@given(
    entity_id=st.sampled_from(["api", "api-1", "db", "apiary", ""]),
    kind=st.sampled_from([None, "svc", "pg"]),
    status=st.sampled_from(list(Status)),
    entity=st.sampled_from([None, "api", "db"]),
    prefix=st.sampled_from([None, "api", "a", "db-"]),
    want_kind=st.sampled_from([None, "svc", "pg"]),
    want_status=st.sampled_from([None, *Status]),
)
def test_keeps_is_the_conjunction_of_its_fields(
    entity_id: str,
    kind: str | None,
    status: Status,
    entity: str | None,
    prefix: str | None,
    want_kind: str | None,
    want_status: Status | None,
) -> None:
    keep = EntityFilter(entity=entity, prefix=prefix, kind=want_kind, status=want_status)
    view = EntityView(id=entity_id, kind=kind, status=status)
    assert keep.keeps(view) == (
        (entity is None or entity_id == entity)
        and (prefix is None or entity_id.startswith(prefix))
        and (want_kind is None or kind == want_kind)
        and (want_status is None or status is want_status)
    )
    assert keep.everything == (keep == EntityFilter())


def test_the_openapi_document_describes_the_filters_and_times() -> None:
    document = openapi_document()
    paths, schemas = document["paths"], document["components"]["schemas"]

    def names(path: str) -> set[str]:
        return {parameter["name"] for parameter in paths[path]["get"]["parameters"]}

    assert names("/v1/entities") == {"prefix", "kind", "status"}
    assert names("/v1/events") == {"entity", "prefix", "kind"}
    for path in ("/v1/entities", "/v1/events"):
        assert "400" in paths[path]["get"]["responses"]
    assert "at" in schemas["Change"]["required"] and "at" in schemas["Snapshot"]["required"]
    assert "at" in schemas["Observation"]["required"]
    replica = schemas["Replicas"]["properties"]["replicas"]["additionalProperties"]
    assert "last_seen_age" in replica["required"]
