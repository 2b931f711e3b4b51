"""A client that drips its request head slowly is cut off by the read deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from sphaera_crdt.node import Node, NodeConfig


@pytest.mark.asyncio
async def test_a_request_head_dripped_slowly_is_cut_off() -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600, read_timeout=0.5)
    async with Node(config) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        started = time.monotonic()
        closed = False
        try:
            for _ in range(40):  # 40 x 0.1 s of dripping, far past the deadline
                await asyncio.sleep(0.1)
                writer.write(b"X-Drip: 1\r\n")
                await writer.drain()
                if reader.at_eof():
                    closed = True
                    break
            else:
                closed = await asyncio.wait_for(reader.read(), 2) == b""
        except ConnectionError:
            closed = True
        finally:
            writer.close()
        assert closed, "the server kept a connection whose request head never completed"
        assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_a_prompt_request_is_served_under_the_same_deadline() -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600, read_timeout=0.5)
    async with Node(config) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"replica":"a"' in answer
