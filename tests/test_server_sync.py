"""``POST /v1/sync`` and ``POST /v1/updates`` over plain HTTP.

A bare pycrdt ``Doc`` syncs with a node using nothing but pycrdt's own y-protocols helpers
(``create_sync_message``, ``handle_sync_message``, ``Decoder``) and HTTP: it ends up
holding the node's entities, and the node ends up holding what the doc wrote.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from pycrdt import (
    Decoder,
    Doc,
    Map,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    write_message,
)

from sphaera_crdt import Replica, Status
from sphaera_crdt.core.lib0 import decode_state_vector
from sphaera_crdt.net.metrics import MAX_PEER_LABELS
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]
OCTETS = {"Content-Type": "application/octet-stream"}
SEP = "\x1f"


def _clock() -> float:
    return 2000.0


@pytest.fixture
def node() -> Node:
    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600), clock=_clock)
    node.replica.declare("db", kind="postgres", attrs={"port": 5432})
    node.replica.declare("api", requires={"exists": "db"})
    return node


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(node))) as client:
        yield client


def frame(sync_type: int, payload: bytes) -> bytes:
    """One y-protocols SYNC message, framed as pycrdt frames it."""
    return bytes((YMessageType.SYNC, sync_type)) + write_message(payload)


def split_messages(body: bytes) -> list[bytes]:
    """y-protocols messages back to back, each re-framed as pycrdt writes it."""
    decoder = Decoder(body)
    messages = []
    while decoder.length > 0:
        message_type = decoder.read_var_uint()
        assert message_type == YMessageType.SYNC
        sync_type = decoder.read_var_uint()
        payload = decoder.read_message()
        assert payload is not None
        messages.append(frame(sync_type, payload))
    return messages


def sync_types(messages: list[bytes]) -> list[YSyncMessageType]:
    return [YSyncMessageType(message[1]) for message in messages]


def write_entities(doc: Doc[Any], writer: str, entities: dict[str, tuple[str, Any]]) -> None:
    """Write ``{entity id: (kind, attrs)}`` the way a replica lays entities out (one
    container per writer), in the first entry layout (stamps in hex, then ``:``)."""
    stamp = f"{int(_clock() * 1000) + 5:x}:"
    entries = {}
    for entity_id, (kind, attrs) in entities.items():
        base = f"e{SEP}{entity_id}{SEP}"
        entries[base + "k"] = stamp + orjson.dumps(kind).decode()
        entries[base + "q"] = stamp + "null"
        entries[base + "o"] = stamp + orjson.dumps(writer).decode()
        entries[base + "x"] = stamp + "false"
        for key, value in attrs.items():
            entries[f"{base}a{SEP}{key}"] = stamp + orjson.dumps(value).decode()
    root = doc.get("w", type=Map)
    root[f"{writer}{SEP}d0c"] = Map(entries)


async def test_a_bare_pycrdt_doc_syncs_over_http(client: Client, node: Node) -> None:
    doc: Doc[Any] = Doc()
    write_entities(
        doc,
        "bare",
        {
            "from-doc": ("widget", {"color": "blue", "size": 3}),
            "replica:bare": ("replica", {}),  # it declares itself, so it is observed
        },
    )
    headers = {**OCTETS, "Sphaera-Replica": "bare", "Sphaera-Url": "http://127.0.0.1:1/"}

    # Round 1: the doc sends its state vector; the node answers STEP2 (what the doc
    # lacks) then STEP1 (its own state vector).
    response = await client.post("/v1/sync", data=create_sync_message(doc), headers=headers)
    assert response.status == 200
    assert response.content_type == "application/octet-stream"
    messages = split_messages(await response.read())
    assert sync_types(messages) == [YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_STEP1]
    replies = [reply for m in messages if (reply := handle_sync_message(m[1:], doc)) is not None]
    # The doc applied the node's state, and answers the node's STEP1 with its own STEP2.
    assert sync_types(replies) == [YSyncMessageType.SYNC_STEP2]

    # Round 2: the doc pushes that STEP2; the node merges it and answers its STEP1.
    response = await client.post("/v1/sync", data=b"".join(replies), headers=headers)
    assert response.status == 200
    messages = split_messages(await response.read())
    assert sync_types(messages) == [YSyncMessageType.SYNC_STEP1]
    assert handle_sync_message(messages[0][1:], doc) is not None
    # A last pull: the doc is level with the node (which did not observe the caller: an
    # inbound exchange is no evidence of it, so its state did not move on).
    response = await client.post("/v1/sync", data=create_sync_message(doc), headers=headers)
    for message in split_messages(await response.read()):
        handle_sync_message(message[1:], doc)

    assert decode_state_vector(doc.get_state()) == decode_state_vector(node.replica.state_vector())
    # The node holds what the doc wrote ...
    view = node.replica.entity("from-doc")
    assert view is not None
    assert view.kind == "widget" and view.owner == "bare"
    assert view.attrs == {"color": "blue", "size": 3}
    assert type(view.attrs["size"]) is int
    assert view.status is Status.EXISTS
    # ... and the doc holds the node's entities: a replica built from it sees them.
    reader = Replica("reader", clock=_clock)
    reader.merge(doc.get_update())
    assert {"db", "api", "replica:a", "from-doc", "replica:bare"} <= set(reader.entities())
    assert reader.entity("db") is not None
    assert reader.entity("db").attrs == {"port": 5432}  # type: ignore[union-attr]
    # The headers only claim who called: no observation of it, no URL learnt from them.
    assert "bare" not in node.directory
    assert node.replica.observations("replica:bare") == []


async def test_one_round_trip_push_pull(client: Client, node: Node) -> None:
    """STEP1 plus an UPDATE in one body: the node merges the push and answers the pull."""
    peer = Replica("p", clock=_clock)
    peer.declare("pushed", attrs={"n": 1})
    body = frame(YSyncMessageType.SYNC_STEP1, peer.state_vector())
    body += create_update_message(peer.delta())
    response = await client.post("/v1/sync", data=body, headers={**OCTETS, "Sphaera-Replica": "p"})
    assert response.status == 200
    messages = split_messages(await response.read())
    assert sync_types(messages) == [YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_STEP1]
    assert node.replica.entity("pushed") is not None
    peer.merge(Decoder(messages[0][2:]).read_message() or b"")
    assert peer.entity("db") is not None and peer.entity("api") is not None
    # The node learnt what p holds from its STEP1 and its push.
    assert peer.client_id in node.peers.peer("p").known


async def test_a_caller_that_lacks_nothing_gets_the_empty_update(
    client: Client, node: Node
) -> None:
    peer = Replica("p", clock=_clock)
    peer.merge(node.replica.delta())
    response = await client.post("/v1/sync", data=frame(0, peer.state_vector()), headers=OCTETS)
    messages = split_messages(await response.read())
    assert Decoder(messages[0][2:]).read_message() == b"\x00\x00"


async def test_updates_route_merges_a_raw_update(client: Client, node: Node) -> None:
    peer = Replica("p", clock=_clock)
    peer.declare("cache", kind="redis", requires={"exists": "db"})
    response = await client.post(
        "/v1/updates", data=peer.delta(), headers={**OCTETS, "Sphaera-Replica": "p"}
    )
    assert response.status == 204
    assert await response.read() == b""
    view = node.replica.entity("cache")
    assert view is not None and view.status is Status.EXISTS
    # The sender is known to hold what it sent, so it is never echoed back.
    assert peer.client_id in node.peers.peer("p").known
    # Duplicates are fine.
    again = await client.post("/v1/updates", data=peer.delta(), headers=OCTETS)
    assert again.status == 204


async def test_binary_routes_accept_a_body_without_content_type(client: Client) -> None:
    """RFC 9110: a body without Content-Type may be taken as application/octet-stream."""
    response = await client.post(
        "/v1/sync", data=create_sync_message(Doc()), skip_auto_headers=["Content-Type"]
    )
    assert response.status == 200


async def test_sync_counts_bytes_and_exchanges(client: Client, node: Node) -> None:
    body = create_sync_message(Doc())
    response = await client.post("/v1/sync", data=body, headers={**OCTETS, "Sphaera-Replica": "q"})
    assert response.status == 200
    answer = await response.read()
    bad = await client.post(
        "/v1/sync", data=b"\x00\x09", headers={**OCTETS, "Sphaera-Replica": "q"}
    )
    assert bad.status == 400
    text = await (await client.get("/metrics")).text()
    assert f'sphaera_sync_bytes_received_total{{peer="q"}} {float(len(body))}' in text
    assert f'sphaera_sync_bytes_sent_total{{peer="q"}} {float(len(answer))}' in text
    assert 'sphaera_sync_exchanges_total{direction="in",outcome="ok",peer="q"} 1.0' in text
    assert 'sphaera_sync_exchanges_total{direction="in",outcome="error",peer="q"} 1.0' in text


async def test_metric_labels_name_a_bounded_number_of_peers(node: Node) -> None:
    body = frame(YSyncMessageType.SYNC_STEP1, Doc().get_state())
    callers = [f"caller-{index}" for index in range(MAX_PEER_LABELS + 40)]
    for caller in callers:
        node.handle_sync(body, caller)
    node.handle_sync(body, None)
    exposition = generate_latest(node.metrics.registry).decode()
    labels = set(re.findall(r'sphaera_sync_bytes_received_total\{peer="([^"]+)"\}', exposition))
    assert labels == {*callers[:MAX_PEER_LABELS], "other", "anonymous"}
    # Every exchange is still counted.
    counted = re.findall(
        r'sphaera_sync_exchanges_total\{direction="in",outcome="ok",peer="[^"]+"\} (\S+)',
        exposition,
    )
    assert sum(float(count) for count in counted) == len(callers) + 1
    # Ids that callers only claim, without declaring a replica, are not observed.
    assert not any(o.subject.startswith("replica:caller-") for o in node.replica.observations())
