"""The HTTP clients against small stand-in servers: headers, errors, timeouts, streams."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from sphaera_crdt.net.client import ApiClient, ApiError, PeerClient, PeerUnavailable
from sphaera_crdt.node import NodeConfig

pytestmark = pytest.mark.asyncio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[str, str, Handler], Awaitable[str]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve one handler on a free loopback port; returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(method: str, path: str, handler: Handler) -> str:
        app = web.Application()
        app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def peer_client(**config: Any) -> PeerClient:
    return PeerClient(
        NodeConfig(replica_id="me", **config),
        replica_id="me",
        url="http://127.0.0.1:9999",
        clock=time.time,
    )


async def test_sync_sends_identity_and_token_in_headers(serve: Serve) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(headers=dict(request.headers), url=str(request.url))
        seen["body"] = await request.read()
        return web.Response(
            body=b"answer",
            content_type="application/octet-stream",
            headers={"Sphaera-Replica": "peer", "Sphaera-Url": "http://peer:1"},
        )

    url = await serve("POST", "/v1/sync", handler)
    client = peer_client(token="s3cret")
    try:
        answer = await client.sync(url + "/", b"body")
    finally:
        await client.close()
    assert answer.body == b"answer"
    assert (answer.replica_id, answer.url) == ("peer", "http://peer:1")
    headers = seen["headers"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Sphaera-Replica"] == "me"
    assert headers["Sphaera-Url"] == "http://127.0.0.1:9999"
    assert headers["Content-Type"] == "application/octet-stream"
    assert seen["body"] == b"body"
    assert "s3cret" not in seen["url"] and seen["url"].endswith("/v1/sync")


async def test_sync_without_token_sends_no_authorization(serve: Serve) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.Response(body=b"")

    url = await serve("POST", "/v1/sync", handler)
    client = peer_client()
    try:
        answer = await client.sync(url, b"x")
    finally:
        await client.close()
    assert "Authorization" not in seen
    assert answer.replica_id is None


async def test_refusal_carries_status_and_message(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": "unauthorized", "message": "a bearer token is required"}},
            status=401,
        )

    url = await serve("POST", "/v1/sync", handler)
    client = peer_client(token="wrong")
    try:
        with pytest.raises(PeerUnavailable) as caught:
            await client.sync(url, b"x")
    finally:
        await client.close()
    assert caught.value.status == 401
    assert "a bearer token is required" in str(caught.value)
    assert "wrong" not in str(caught.value)


async def test_timeout_and_closed_port_are_unavailable(serve: Serve) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    url = await serve("POST", "/v1/sync", slow)
    client = peer_client(client_timeout=0.2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with pytest.raises(PeerUnavailable, match="timed out") as timed_out:
            await client.sync(url, b"x")
        assert timed_out.value.status is None
        with pytest.raises(PeerUnavailable, match="unreachable"):
            await client.sync(closed, b"x")
    finally:
        release.set()
        await client.close()
    await client.close()  # idempotent


async def test_client_ssl_must_be_a_context() -> None:
    with pytest.raises(TypeError):
        peer_client(client_ssl="not a context")


async def test_api_errors_carry_the_node_code(serve: Serve) -> None:
    async def missing(request: web.Request) -> web.Response:
        assert request.match_info["id"] == "a/b"
        return web.json_response(
            {"error": {"code": "not_found", "message": "no entity 'a/b'"}}, status=404
        )

    url = await serve("GET", "/v1/entities/{id}", missing)
    async with ApiClient(url) as api:
        with pytest.raises(ApiError) as caught:
            await api.get("a/b")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert str(caught.value) == "404 not_found: no entity 'a/b'"


async def test_api_sends_json_and_token(serve: Serve) -> None:
    seen: dict[str, Any] = {}

    async def put(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["body"] = await request.json()
        return web.json_response({"id": request.match_info["id"], **seen["body"]})

    url = await serve("PUT", "/v1/entities/{id}", put)
    async with ApiClient(url, token="t0k") as api:
        answer = await api.put("db", kind="postgres", attrs={"port": 5432})
    assert seen == {"auth": "Bearer t0k", "body": {"kind": "postgres", "attrs": {"port": 5432}}}
    assert answer["id"] == "db"


async def test_events_are_parsed_from_the_stream(serve: Serve) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": hello\n\n")
        await response.write(b'event: change\ndata: {"entity": "db"}\n\n')
        await response.write(b"data: plain\ndata: text\n\n")
        await response.write_eof()
        return response

    url = await serve("GET", "/v1/events", stream)
    async with ApiClient(url) as api:
        received = [event async for event in api.events()]
    assert received == [("change", {"entity": "db"}), ("message", "plain\ntext")]


async def test_unreachable_node_is_one_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with ApiClient(url, timeout=2) as api:
        with pytest.raises(PeerUnavailable, match="unreachable"):
            await api.entities()
