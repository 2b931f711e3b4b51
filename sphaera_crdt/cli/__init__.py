"""The ``sphaera`` command: serve a node, talk to a running one, watch a demo, or benchmark.

A thin layer over the library: ``serve`` builds a :class:`~sphaera_crdt.node.NodeConfig`
from its flags and runs a :class:`~sphaera_crdt.node.Node` until SIGINT or SIGTERM; the
client commands are one :class:`~sphaera_crdt.net.blocking_client.BlockingApiClient` call
each to a node's REST API, each with ``--json``.
Errors the library raises (bad configuration, an unreachable node, a refused request)
become one line on stderr, ``sphaera: error: ...``, and a non-zero exit status: 2 for a
configuration that cannot work, 1 for a failure while running; a usage error is one line
too, status 2.

Each command's module is imported when the command runs (see ``app.COMMANDS``), so that
the client commands start quickly: they load neither aiohttp, asyncio nor pycrdt.
"""

from .app import cli, main

__all__ = ["cli", "main"]
