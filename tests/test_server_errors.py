"""The HTTP server refuses bad input with the right status and JSON, and changes nothing.

Every case checks the error shape ``{"error": {"code", "message"}}``, that the replica's
whole readable state (state vector, entities, observations, encoded document) is the same
before and after, and that the node keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pycrdt import create_sync_message, create_update_message
from support import snapshot

from sphaera_crdt import Replica
from sphaera_crdt.core.lib0 import write_varuint
from sphaera_crdt.net.openapi import ERROR_CODES
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]
TOKEN = "s3cret-t0ken"
OCTETS = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}


def _clock() -> float:
    return 1000.0


def make_node(**config: Any) -> Node:
    options: dict[str, Any] = {"replica_id": "a", "port": 0, "gossip_interval": 3600}
    options.update(config)
    node = Node(NodeConfig(**options), clock=_clock)
    node.replica.declare("db", kind="pg", attrs={"port": 5432})
    node.replica.declare("api", requires={"exists": "db"})
    node.replica.observe("db", ok=True, ttl=10)
    return node


@pytest_asyncio.fixture
async def node_client() -> AsyncIterator[tuple[Node, Client]]:
    node = make_node(max_body=2048)
    async with TestClient(TestServer(create_app(node))) as client:
        yield node, client


def source_delta() -> bytes:
    """A valid update from another replica (fixed ids, so the bytes are the same each run)."""
    source = Replica("src", clock=_clock, client_id=4242, nonce="5eed")
    source.declare("other", attrs={"x": 1})
    return source.delta()


def sync(*messages: bytes) -> bytes:
    return b"".join(messages)


def step1(payload: bytes) -> bytes:
    return b"\x00\x00" + write_varuint(len(payload)) + payload


def update_message(payload: bytes) -> bytes:
    return b"\x00\x02" + write_varuint(len(payload)) + payload


DELTA = source_delta()
VALID_STEP1 = step1(Replica("x", client_id=7, nonce="ab").state_vector())

#: (name, method, path, headers, body, status, code)
CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    # sync bodies
    ("sync empty", "POST", "/v1/sync", OCTETS, b"", 400, "invalid_message"),
    ("sync awareness", "POST", "/v1/sync", OCTETS, b"\x01\x00\x00", 400, "invalid_message"),
    ("sync unknown type", "POST", "/v1/sync", OCTETS, b"\x00\x07\x00", 400, "invalid_message"),
    ("sync truncated varint", "POST", "/v1/sync", OCTETS, b"\x00\x00\xff", 400, "invalid_message"),
    ("sync past end", "POST", "/v1/sync", OCTETS, b"\x00\x00\x05ab", 400, "invalid_message"),
    ("sync garbage", "POST", "/v1/sync", OCTETS, b"\x05garbage", 400, "invalid_message"),
    ("sync many", "POST", "/v1/sync", OCTETS, VALID_STEP1 * 65, 400, "invalid_message"),
    ("sync bad sv", "POST", "/v1/sync", OCTETS, step1(b"\x05\x01"), 400, "invalid_update"),
    (
        "sync sv trailing",
        "POST",
        "/v1/sync",
        OCTETS,
        step1(b"\x00\x00\x00"),
        400,
        "invalid_update",
    ),
    (
        "sync bad update after good",
        "POST",
        "/v1/sync",
        OCTETS,
        sync(VALID_STEP1, update_message(DELTA), update_message(DELTA[: len(DELTA) // 2])),
        400,
        "invalid_update",
    ),
    (
        "sync pycrdt bad update",
        "POST",
        "/v1/sync",
        OCTETS,
        create_update_message(b"\xff\xff\xff\xff"),
        400,
        "invalid_update",
    ),
    # raw updates
    ("update empty", "POST", "/v1/updates", OCTETS, b"", 400, "invalid_update"),
    ("update garbage", "POST", "/v1/updates", OCTETS, b"\xff\xff\xff\xff", 400, "invalid_update"),
    ("update truncated", "POST", "/v1/updates", OCTETS, DELTA[:7], 400, "invalid_update"),
    (
        "update half",
        "POST",
        "/v1/updates",
        OCTETS,
        DELTA[: len(DELTA) // 2],
        400,
        "invalid_update",
    ),
    # invalid JSON
    ("json truncated", "PUT", "/v1/entities/x", JSON, b"{", 400, "invalid_json"),
    ("json empty", "PUT", "/v1/entities/x", JSON, b"", 400, "invalid_json"),
    ("json nan", "PUT", "/v1/entities/x", JSON, b'{"attrs": {"v": NaN}}', 400, "invalid_json"),
    ("json utf8", "PUT", "/v1/entities/x", JSON, b'{"kind": "\xff"}', 400, "invalid_json"),
    ("json trailing", "PATCH", "/v1/entities/db", JSON, b'{"attrs": {}} x', 400, "invalid_json"),
    ("json obs", "POST", "/v1/observations", JSON, b"[1,", 400, "invalid_json"),
    (
        "json big int infinity",
        "PUT",
        "/v1/entities/x",
        JSON,
        b'{"attrs": {"n": 12345678901234567890, "v": Infinity}}',
        400,
        "invalid_json",
    ),
    # valid JSON, wrong shape or values
    ("not an object", "PUT", "/v1/entities/x", JSON, b"[]", 422, "invalid_request"),
    ("unknown key", "PUT", "/v1/entities/x", JSON, b'{"kinds": "a"}', 422, "invalid_request"),
    ("kind not str", "PUT", "/v1/entities/x", JSON, b'{"kind": 5}', 422, "invalid_value"),
    ("attrs list", "PUT", "/v1/entities/x", JSON, b'{"attrs": [1]}', 422, "invalid_value"),
    (
        "attr key empty",
        "PUT",
        "/v1/entities/x",
        JSON,
        b'{"attrs": {"": 1}}',
        422,
        "invalid_identifier",
    ),
    (
        "bad constraint",
        "PUT",
        "/v1/entities/x",
        JSON,
        b'{"requires": {"exist": "db"}}',
        422,
        "invalid_constraint",
    ),
    (
        "bad constraint deep",
        "PUT",
        "/v1/entities/x",
        JSON,
        b'{"requires": {"all": [true, {"observed": "db", "within": -1}]}}',
        422,
        "invalid_constraint",
    ),
    ("bad id", "PUT", "/v1/entities/a%01b", JSON, b"{}", 422, "invalid_identifier"),
    ("long id", "PUT", "/v1/entities/" + "x" * 300, JSON, b"{}", 422, "invalid_identifier"),
    ("replica record", "PUT", "/v1/entities/replica:a", JSON, b"{}", 422, "invalid_identifier"),
    ("retract replica", "DELETE", "/v1/entities/replica:a", {}, b"", 422, "invalid_identifier"),
    ("patch no attrs", "PATCH", "/v1/entities/db", JSON, b"{}", 422, "invalid_request"),
    (
        "patch attrs null",
        "PATCH",
        "/v1/entities/db",
        JSON,
        b'{"attrs": null}',
        422,
        "invalid_value",
    ),
    (
        "patch infinite number",
        "PATCH",
        "/v1/entities/db",
        JSON,
        b'{"attrs": {"ok": 1, "bad": 1e400}}',
        400,
        "invalid_json",
    ),
    (
        "patch too deep",
        "PATCH",
        "/v1/entities/db",
        JSON,
        b'{"attrs": {"ok": 1, "deep": ' + b"[" * 300 + b"]" * 300 + b"}}",
        422,
        "invalid_value",
    ),
    ("obs no subject", "POST", "/v1/observations", JSON, b'{"ok": true}', 422, "invalid_request"),
    (
        "obs ok str",
        "POST",
        "/v1/observations",
        JSON,
        b'{"subject": "db", "ok": "yes"}',
        422,
        "invalid_value",
    ),
    (
        "obs ttl negative",
        "POST",
        "/v1/observations",
        JSON,
        b'{"subject": "db", "ttl": -1}',
        422,
        "invalid_value",
    ),
    (
        "obs subject empty",
        "POST",
        "/v1/observations",
        JSON,
        b'{"subject": ""}',
        422,
        "invalid_identifier",
    ),
    ("why depth", "GET", "/v1/entities/db/why?depth=x", {}, b"", 422, "invalid_request"),
    # unknown entities and routes
    ("get unknown", "GET", "/v1/entities/nope", {}, b"", 404, "not_found"),
    ("patch unknown", "PATCH", "/v1/entities/nope", JSON, b'{"attrs": {}}', 404, "not_found"),
    ("delete unknown", "DELETE", "/v1/entities/nope", {}, b"", 404, "not_found"),
    ("why unknown", "GET", "/v1/entities/nope/why", {}, b"", 404, "not_found"),
    ("no route", "GET", "/v2/anything", {}, b"", 404, "not_found"),
    ("no v1 route", "POST", "/v1/nothing", JSON, b"{}", 404, "not_found"),
    ("wrong method", "POST", "/v1/entities", JSON, b"{}", 405, "method_not_allowed"),
    # media types
    ("json as text", "PUT", "/v1/entities/x", {"Content-Type": "text/plain"}, b"{}", 415, ""),
    ("json untyped", "POST", "/v1/observations", {}, b'{"subject": "db"}', 415, ""),
    ("sync as json", "POST", "/v1/sync", JSON, VALID_STEP1, 415, ""),
    ("update as text", "POST", "/v1/updates", {"Content-Type": "text/plain"}, DELTA, 415, ""),
    # peer headers
    (
        "long peer id",
        "POST",
        "/v1/sync",
        {**OCTETS, "Sphaera-Replica": "p" * 200},
        VALID_STEP1,
        400,
        "invalid_header",
    ),
    (
        "bad peer url",
        "POST",
        "/v1/updates",
        {**OCTETS, "Sphaera-Replica": "p", "Sphaera-Url": "ftp://x"},
        DELTA,
        400,
        "invalid_header",
    ),
    # sizes (max_body is 2048 here)
    ("too large", "PUT", "/v1/entities/x", JSON, b" " * 3000 + b"{}", 413, "body_too_large"),
    ("too large sync", "POST", "/v1/sync", OCTETS, b"\x00" * 5000, 413, "body_too_large"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_refused_input_changes_nothing(
    node_client: tuple[Node, Client],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    node, client = node_client
    before = snapshot(node.replica)
    response = await client.request(
        method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == (code or "unsupported_media_type")
    assert error["code"] in ERROR_CODES  # documented
    assert error["message"]
    assert snapshot(node.replica) == before
    health = await client.get("/healthz")
    assert health.status == 200
    # The refusal is counted by its code.
    counted = node.metrics.registry.get_sample_value(
        "sphaera_rejected_requests_total", {"reason": error["code"]}
    )
    assert counted == 1


async def test_method_not_allowed_names_the_allowed_methods(
    node_client: tuple[Node, Client],
) -> None:
    _, client = node_client
    response = await client.post("/healthz")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]


async def test_chunked_body_over_the_cap_is_refused(node_client: tuple[Node, Client]) -> None:
    node, client = node_client
    before = snapshot(node.replica)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"\x00" * 512

    response = await client.post("/v1/updates", data=chunks(), headers=OCTETS)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"
    assert snapshot(node.replica) == before
    assert (await client.get("/healthz")).status == 200


# -- authentication ------------------------------------------------------------------------

PROTECTED: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/v1/sync", OCTETS, VALID_STEP1),
    ("POST", "/v1/updates", OCTETS, DELTA),
    ("GET", "/v1/entities", {}, b""),
    ("GET", "/v1/entities/db", {}, b""),
    ("PUT", "/v1/entities/x", JSON, b"{}"),
    ("PATCH", "/v1/entities/db", JSON, b'{"attrs": {"port": 1}}'),
    ("DELETE", "/v1/entities/db", {}, b""),
    ("GET", "/v1/entities/db/why", {}, b""),
    ("POST", "/v1/observations", JSON, b'{"subject": "db"}'),
    ("GET", "/v1/replicas", {}, b""),
    ("GET", "/v1/events", {}, b""),
    ("GET", "/v1/openapi.json", {}, b""),
    ("GET", "/v1/unknown", {}, b""),
    ("GET", "/elsewhere", {}, b""),
]
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer \u00e9t\u00e9"},
]


@pytest_asyncio.fixture
async def guarded() -> AsyncIterator[tuple[Node, Client]]:
    node = make_node(token=TOKEN)
    async with TestClient(TestServer(create_app(node))) as client:
        yield node, client


@pytest.mark.parametrize(("method", "path", "headers", "body"), PROTECTED)
async def test_token_is_required_on_v1(
    guarded: tuple[Node, Client],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node, client = guarded
    caplog.set_level(logging.DEBUG)
    before = snapshot(node.replica)
    for credentials in BAD_CREDENTIALS:
        response = await client.request(method, path, data=body, headers={**headers, **credentials})
        assert response.status == 401, (credentials, await response.text())
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "unauthorized"
    assert snapshot(node.replica) == before
    if path == "/v1/events":
        return  # an endless stream; the authorised case is in test_server_events
    for scheme in ("Bearer", "bearer"):
        response = await client.request(
            method, path, data=body, headers={**headers, "Authorization": f"{scheme} {TOKEN}"}
        )
        expected = 404 if path in ("/v1/unknown", "/elsewhere") else None
        if expected is None:
            assert response.status < 300, await response.text()
        else:
            assert response.status == expected
    assert TOKEN not in caplog.text


async def test_public_routes_need_no_token(guarded: tuple[Node, Client]) -> None:
    _, client = guarded
    for path in ("/healthz", "/", "/metrics"):
        response = await client.get(path)
        assert response.status == 200, path


async def test_metrics_auth_guards_metrics() -> None:
    node = make_node(token=TOKEN, metrics_auth=True)
    async with TestClient(TestServer(create_app(node))) as client:
        assert (await client.get("/metrics")).status == 401
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200
        assert (await client.get("/healthz")).status == 200


# -- read deadline -------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_a_client_that_drips_its_body_is_cut_off() -> None:
    node = make_node(read_timeout=0.3)
    before = snapshot(node.replica)
    async with TestServer(create_app(node)) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        body = b'{"attrs": {"dripped": true}}'
        writer.write(
            b"PUT /v1/entities/slow HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        await writer.drain()

        async def drip() -> None:
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        try:
            status, headers, payload = await asyncio.wait_for(_read_response(reader), 5)
        finally:
            dripping.cancel()
            writer.close()
        assert status == 408
        assert headers["connection"] == "close"
        assert b'"request_timeout"' in payload
        assert snapshot(node.replica) == before
        assert node.replica.entity("slow") is None
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/healthz")) as health,
        ):
            assert health.status == 200


async def test_a_slow_but_timely_client_is_served() -> None:
    node = make_node(read_timeout=5)
    async with TestServer(create_app(node)) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        body = b'{"kind": "k"}'
        writer.write(
            b"PUT /v1/entities/ok HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.01)
        status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
        writer.close()
        assert status == 201
        assert node.replica.entity("ok") is not None


async def test_sync_of_a_valid_message_still_works_after_refusals(
    node_client: tuple[Node, Client],
) -> None:
    _, client = node_client
    for body in (b"", b"\x05x", create_update_message(b"\xff")):
        response = await client.post("/v1/sync", data=body, headers=OCTETS)
        assert response.status == 400
    from pycrdt import Doc

    response = await client.post("/v1/sync", data=create_sync_message(Doc()), headers=OCTETS)
    assert response.status == 200
    assert response.content_type == "application/octet-stream"
