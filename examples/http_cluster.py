"""Three nodes in one process syncing over HTTP, and a bare pycrdt ``Doc`` syncing with them.

Each :class:`~sphaera_crdt.node.Node` is one replica served over HTTP on 127.0.0.1 (port 0:
the system picks a free one) with its gossip loop; the second and third know only the
first's URL and find each other through the replica records they merge. A write through
the REST API of one node is seen on the others.

Then a plain pycrdt ``Doc``, which knows nothing of this library, syncs with a node
through ``POST /v1/sync`` (y-protocols SYNC messages, exactly as pycrdt writes them): it
pulls the whole shared state, and pushes it on to a fourth node that has no peers at all,
which then sees everything the cluster holds.

Every node, connection and task the example starts is stopped before it returns.

Run: python examples/http_cluster.py
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from pycrdt import (
    Decoder,
    Doc,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    handle_sync_message,
    write_message,
)

from sphaera_crdt import Replica
from sphaera_crdt.node import Node, NodeConfig

OCTETS = {"Content-Type": "application/octet-stream"}
#: Seconds between gossip rounds (short, so that the example is quick).
GOSSIP_INTERVAL = 0.2


def config(replica_id: str, *peers: str) -> NodeConfig:
    """A node on a free loopback port, in memory, seeded with ``peers``."""
    return NodeConfig(
        replica_id=replica_id,
        host="127.0.0.1",
        port=0,  # the system picks a free port; the node's url says which
        peers=peers,
        gossip_interval=GOSSIP_INTERVAL,
    )


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds (at most 10 s, then TimeoutError)."""
    async with asyncio.timeout(10):
        # Polling the HTTP API, as a client of the nodes would (GET /v1/events streams the
        # changes to a client that would rather not poll).
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def sync_messages(body: bytes) -> Iterator[tuple[YSyncMessageType, bytes]]:
    """The y-protocols SYNC messages of a body, each as ``handle_sync_message`` takes it
    (without its leading message-type byte)."""
    decoder = Decoder(body)
    while decoder.length > 0:
        if decoder.read_var_uint() != YMessageType.SYNC:
            raise ValueError("not a SYNC message")
        sync_type = YSyncMessageType(decoder.read_var_uint())
        payload = decoder.read_message()
        if payload is None:
            raise ValueError("truncated message")
        yield sync_type, bytes([sync_type]) + write_message(payload)


async def bare_sync(http: aiohttp.ClientSession, url: str, doc: Doc[Any]) -> str:
    """Sync ``doc`` with the node at ``url`` as any y-protocols peer would, in two round trips.

    1. Send our state vector (STEP1). The node answers STEP2 (what we lack), which we
       apply, then STEP1 (its state vector), which we answer with STEP2 (what it lacks).
    2. Send that STEP2. The node merges it and answers STEP1 (acknowledging it).

    Returns what the node answered, for the printout.
    """
    answered = []
    body = create_sync_message(doc)
    for _ in range(2):
        async with http.post(f"{url}/v1/sync", data=body, headers=OCTETS) as response:
            response.raise_for_status()
            answer = await response.read()
        replies = []
        for _, message in sync_messages(answer):
            reply = handle_sync_message(message, doc)  # applies a STEP2, answers a STEP1
            if reply is not None:
                replies.append(reply)
        answered.append("+".join(sync_type.name for sync_type, _ in sync_messages(answer)))
        body = b"".join(replies)
    return ", then ".join(answered)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        return await response.json() if response.status == 200 else None


async def run() -> None:
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        n1 = await stack.enter_async_context(Node(config("n1")))
        n2 = await stack.enter_async_context(Node(config("n2", n1.url)))
        n3 = await stack.enter_async_context(Node(config("n3", n1.url)))
        nodes = {node.replica_id: node.url for node in (n1, n2, n3)}
        for replica_id, url in nodes.items():
            print(f"{replica_id} listening on {url}")

        async def all_live() -> bool:
            for url in nodes.values():
                answer = await get_json(http, f"{url}/v1/replicas")
                statuses = {r: info["status"] for r, info in answer["replicas"].items()}
                if [statuses.get(r) for r in nodes] != ["exists"] * len(nodes):
                    return False
            return True

        started = time.monotonic()
        await eventually(all_live)
        took = time.monotonic() - started
        print(f"every node sees n1, n2 and n3 live after {took:.1f} s (GET /v1/replicas)")

        print("PUT /v1/entities/db on n1")
        body = {"kind": "postgres", "attrs": {"port": 5432}}
        async with http.put(f"{n1.url}/v1/entities/db", json=body) as response:
            response.raise_for_status()
        written = time.monotonic()
        print("PUT /v1/entities/api on n2, requiring db to exist")
        body = {"kind": "service", "requires": {"exists": "db"}}
        async with http.put(f"{n2.url}/v1/entities/api", json=body) as response:
            response.raise_for_status()

        for replica_id, url in nodes.items():

            async def api_exists(url: str = url) -> bool:
                api = await get_json(http, f"{url}/v1/entities/api")
                return api is not None and api["status"] == "exists"

            await eventually(api_exists)
            took = time.monotonic() - written
            db = await get_json(http, f"{url}/v1/entities/db")
            port = db["attrs"]["port"]
            print(
                f"  {replica_id}: db {db['status']} (kind={db['kind']}, port={port}),"
                f" api exists, {took:.1f} s after the write"
            )

        print("a bare pycrdt Doc syncs with n3 through POST /v1/sync")
        doc: Doc[Any] = Doc()
        print(f"  n3 answered {await bare_sync(http, n3.url, doc)}")
        reader = Replica("reader")  # any replica can read the state the doc carries
        reader.merge(doc.get_update())
        found = sorted(e for e in reader.entities() if e != reader.replica_entity)
        print(f"  the doc holds {len(doc.get_update())} bytes, carrying {', '.join(found)}")

        n4 = await stack.enter_async_context(Node(config("n4")))
        async with http.get(f"{n4.url}/v1/entities/db") as response:
            print(f"n4 listening on {n4.url}, with no peers: GET db answers {response.status}")
        print("the bare Doc syncs with n4 through POST /v1/sync")
        print(f"  n4 answered {await bare_sync(http, n4.url, doc)}")
        api = await get_json(http, f"{n4.url}/v1/entities/api")
        print(f"  n4: api {api['status']}, owner {api['owner']}, requires {api['requires']}")
        print("stopping every node")
    print("stopped")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
