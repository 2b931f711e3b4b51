"""Requests that aiohttp cannot parse cost one DEBUG line each, not an ERROR traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

GARBAGE = [
    b"\x00\x01garbage\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
    b"POST /v1/sync HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
]


async def _send(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_malformed_request_heads_are_one_debug_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        for data in GARBAGE:
            answer = await _send(node.port, data)
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
        health = await _send(
            node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert b" 200 " in health.split(b"\r\n")[0]
    server = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert [record for record in server if record.levelno >= logging.WARNING] == []
    assert all(record.exc_info is None for record in server)
    assert all("\n" not in record.getMessage() for record in server)
    assert len(server) >= 3  # still there for whoever turns DEBUG on
