"""A loopback fault proxy in front of each node: drop, delay, one-way cut and partition.

Theory of operation
-------------------
Every node process is started with ``--public-url`` naming its own :class:`NodeProxy`, so
the URL in its ``replica:<id>`` record, and so the URL every peer gossips with, leads
through the proxy; the seeds (``--peer``) are proxy URLs as well. The test's own clients
(writers, readers) talk to the node's real port and never meet a fault.

**Who is talking.** Every connection comes from 127.0.0.1, so the address says nothing
about the sender. The proxy is HTTP-aware instead: a peer's request carries its replica id
in the ``Sphaera-Replica`` header, and the proxy in front of node ``B`` reads it, so each
request is a message ``A -> B`` and its answer a message ``B -> A``. The other choice, one
proxy port per ordered pair of nodes, does not fit the node: it announces one URL, and
every peer that learns it from the replicated state would use the same port. A request
without the header (a client, not a peer) is never faulted.

**What a fault does.** All proxies share one :class:`Faults` plan, which the test edits
while the cluster runs:

* ``cut(a, b)`` loses every message from ``a`` to ``b``: ``a``'s requests to ``b`` never
  reach ``b``, and ``a``'s answers to ``b``'s requests are lost after ``a`` processed
  them. That is the asymmetric case an HTTP exchange allows: ``b`` still pushes its
  changes to ``a``, but never learns that they arrived, and learns nothing from ``a``.
* ``partition(*groups)`` cuts every pair across groups in both directions.
* ``drop`` loses each message with this probability (a request before it reaches the
  node, or an answer after the node processed the request), ``delay`` holds each message
  for a uniform time in the range.

A lost message closes the connection without an answer (the sender sees the connection
reset, as after a lost packet and a timeout, only sooner: the suite's deadlines stay
short). Every lost message counts in :attr:`Faults.injected`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

__all__ = ["Faults", "NodeProxy"]

SENDER_HEADER: Final = "Sphaera-Replica"
#: Headers that describe one hop, not the message: never copied across the proxy.
HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
)
#: The longest the proxy waits for its node (a SIGSTOPped node never answers).
UPSTREAM_TIMEOUT: Final = 10.0


@dataclass
class Faults:
    """What the network does to messages between named nodes (shared by all proxies)."""

    rng: random.Random = field(default_factory=random.Random)
    #: (sender, receiver) pairs whose messages are lost
    cuts: set[tuple[str, str]] = field(default_factory=set)
    drop: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    #: messages lost so far (cut or dropped)
    injected: int = 0

    def cut(self, sender: str, receiver: str) -> None:
        """Lose every message from ``sender`` to ``receiver`` (one way)."""
        self.cuts.add((sender, receiver))

    def partition(self, *groups: list[str]) -> None:
        """Lose every message between nodes of different groups, both ways."""
        for first, second in itertools.permutations(groups, 2):
            self.cuts.update(itertools.product(first, second))

    def heal(self) -> None:
        """No more cuts, drops or delays."""
        self.cuts.clear()
        self.drop = 0.0
        self.delay = (0.0, 0.0)

    def lost(self, sender: str, receiver: str) -> bool:
        """Whether the next message from ``sender`` to ``receiver`` is lost (and count it)."""
        if (sender, receiver) in self.cuts or (self.drop and self.rng.random() < self.drop):
            self.injected += 1
            return True
        return False

    async def hold(self) -> None:
        low, high = self.delay
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))


class NodeProxy:
    """An HTTP proxy on 127.0.0.1 in front of the node named ``name``.

    Start it (``await proxy.start()``) before the node, give the node ``--public-url
    proxy.url``, then set :attr:`upstream` to the node's real URL (again after a restart).
    """

    def __init__(self, name: str, faults: Faults) -> None:
        self.name = name
        self.faults = faults
        self.upstream = ""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT), auto_decompress=False
        )
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        sender = request.headers.get(SENDER_HEADER)
        faults = self.faults
        body = await request.read()
        if sender is not None:
            if faults.lost(sender, self.name):
                return _lose(request)
            await faults.hold()
        if self._session is None:  # closing
            return _lose(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                status = answer.status
                answer_headers = {
                    k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS
                }
        except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError):
            # The node is down, stopped or gone (or the proxy is closing): no answer either.
            return _lose(request)
        if sender is not None:
            if faults.lost(self.name, sender):
                return _lose(request)
            await faults.hold()
        return web.Response(status=status, body=payload, headers=answer_headers)


def _lose(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp ends a handler cancelled this way quietly
