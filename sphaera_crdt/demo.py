"""``sphaera demo``: three nodes in one process, converging over real HTTP on loopback.

The demo narrates what each replica derives by itself: membership (each node is the entity
``replica:<id>``), an entity that depends on another's existence and on fresh
observations of it, its disappearance when the dependency is retracted, and again when the
evidence ages out with no one acting, and finally a node that stops and drops out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

from .core.constraints import all_of, exists, observed
from .core.views import Change, Status
from .errors import DemoTimeout
from .node import Node, NodeConfig

__all__ = ["DemoTimeout", "run_demo"]

NAMES: Final = ("a", "b", "c")
#: Seconds any one step may take before the demo gives up.
STEP_TIMEOUT: Final = 20.0


async def run_demo(*, interval: float = 0.1, echo: Callable[[str], object] = print) -> None:
    """Run the demo, narrating through ``echo``.

    Raises:
        DemoTimeout: A step did not converge within :data:`STEP_TIMEOUT` seconds.
    """
    liveness = max(1.0, 10 * interval)
    async with _cluster(interval, liveness, echo) as nodes:
        a, b, c = nodes
        echo(f"three replicas: {', '.join(f'{n.replica.id} at {n.url}' for n in nodes)}")

        async def until(what: str, condition: Callable[[], bool]) -> None:
            await _wait(condition, interval)
            echo(f"-- {what}")

        def everywhere(entity: str, status: Status) -> Callable[[], bool]:
            return lambda: all(n.replica.status(entity) is status for n in nodes)

        await until(
            "every replica sees every replica alive",
            lambda: all(everywhere(m.replica.replica_entity, Status.EXISTS)() for m in nodes),
        )
        echo("a declares db; b declares api, which requires db and fresh observations of it")
        a.replica.declare("db", kind="postgres", attrs={"port": 5432})
        b.replica.declare(
            "api",
            kind="service",
            requires=all_of(exists("db"), observed("db", within=2 * liveness)),
        )
        await until(
            "api is known everywhere and absent: nobody has observed db",
            lambda: all(
                n.replica.entity("api") is not None and not n.replica.exists("api") for n in nodes
            ),
        )
        echo("c observes db as healthy")
        c.replica.observe("db", ok=True, value={"latency_ms": 3})
        await until("api exists on every replica", everywhere("api", Status.EXISTS))
        echo("a retracts db")
        a.replica.retract("db")
        await until("api is absent on every replica", everywhere("api", Status.ABSENT))
        echo("a declares db again; c's observation is still fresh")
        a.replica.declare("db", kind="postgres", attrs={"port": 5432})
        await until("api exists again everywhere", everywhere("api", Status.EXISTS))
        echo(f"nobody acts; c's observation ages out after {2 * liveness:g} s")
        await until("api is absent everywhere, by itself", everywhere("api", Status.ABSENT))
        echo("c stops")
        await c.close()
        survivors = (a, b)
        await until(
            "a and b see replica:c absent",
            lambda: all(n.replica.status("replica:c") is Status.ABSENT for n in survivors),
        )
    echo("demo done")


@contextlib.asynccontextmanager
async def _cluster(
    interval: float, liveness: float, echo: Callable[[str], object]
) -> AsyncIterator[list[Node]]:
    nodes: list[Node] = []
    async with contextlib.AsyncExitStack() as stack:
        seeds: tuple[str, ...] = ()
        for name in NAMES:
            config = NodeConfig(
                replica_id=name, port=0, peers=seeds, gossip_interval=interval, liveness=liveness
            )
            node = await stack.enter_async_context(Node(config))
            node.replica.subscribe(_narrator(name, echo))
            nodes.append(node)
            seeds = seeds or (node.url,)
        yield nodes


def _narrator(name: str, echo: Callable[[str], object]) -> Callable[[Change], None]:
    def narrate(change: Change) -> None:
        echo(f"   [{name}] {change.entity}: {change.before} -> {change.after} ({change.reason})")

    return narrate


async def _wait(condition: Callable[[], bool], interval: float) -> None:
    """Poll ``condition`` (the nodes run on this loop) until it holds or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise DemoTimeout(f"no convergence within {STEP_TIMEOUT:g} s")
        await asyncio.sleep(interval / 2)
