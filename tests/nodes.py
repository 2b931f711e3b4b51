"""In-process nodes on loopback for the gossip tests: a fake clock and a node factory.

Nodes get a gossip interval of an hour, so nothing happens on its own but eager pushes
after local writes; the tests drive rounds with ``await node.gossip.round()`` and wait for
pushes with ``await node.gossip.flush()``, which makes every step deterministic.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, Protocol

from sphaera_crdt.core.lib0 import decode_state_vector
from sphaera_crdt.node import Node, NodeConfig

#: Long enough that no timer fires during a test.
INTERVAL = 3600.0
LIVENESS = 60.0


class FakeClock:
    """Seconds that only :meth:`advance` moves."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StartNode(Protocol):
    def __call__(self, name: str, *, peers: Iterable[str] = (), **config: Any) -> Awaitable[Node]:
        """Start a node named ``name`` that stops at the end of the test."""


@contextlib.asynccontextmanager
async def node_factory(clock: FakeClock) -> AsyncIterator[StartNode]:
    """Start nodes on 127.0.0.1, port 0, sharing ``clock``; all close on exit."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(name: str, *, peers: Iterable[str] = (), **config: Any) -> Node:
            settings: dict[str, Any] = {
                "port": 0,
                "gossip_interval": INTERVAL,
                "liveness": LIVENESS,
                **config,
            }
            node = Node(NodeConfig(replica_id=name, peers=tuple(peers), **settings), clock=clock)
            return await stack.enter_async_context(node)

        yield start


def converged(nodes: Iterable[Node]) -> bool:
    """Same state vectors and the same entities (records and statuses) everywhere."""
    views = [
        (
            decode_state_vector(node.replica.state_vector()),
            {key: view.to_json() for key, view in node.replica.entities().items()},
        )
        for node in nodes
    ]
    return all(view == views[0] for view in views[1:])


async def quiesce(nodes: Iterable[Node]) -> None:
    """Wait until no node has a push scheduled or in flight (a push may cause another)."""
    nodes = list(nodes)
    while any(node.gossip.pushing for node in nodes):
        for node in nodes:
            await node.gossip.flush()


async def settle(nodes: list[Node], *, rounds: int = 10) -> int:
    """Run gossip rounds on every node until a whole round changes nothing anywhere.

    A round may change state although the nodes had converged: a first exchange between
    two nodes makes each observe the other. Settled means converged *and* quiet.

    Returns:
        The rounds it took.
    """
    for done in range(1, rounds + 1):
        before = [node.replica.state_vector() for node in nodes]
        for node in nodes:
            await node.gossip.round()
        await quiesce(nodes)
        after = [node.replica.state_vector() for node in nodes]
        if before == after and converged(nodes):
            return done
    raise AssertionError(f"not settled after {rounds} rounds")
