"""The fault scenarios, shared by the tests (one run each) and the long mode (many runs).

Each scenario starts a fresh cluster, has it write (see :mod:`faults.cluster`), injects
its fault, checks that the fault took effect (a partition is seen on both sides, a
stopped node drops out), heals, and returns the :class:`~faults.cluster.Outcome` of
:meth:`~faults.cluster.FaultCluster.converge`: the caller asserts it with
:meth:`~faults.cluster.Outcome.check` or adds it to the long run's table.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

from .cluster import LIVENESS, FaultCluster, Outcome
from .proxy import Faults

__all__ = ["SCENARIOS", "Scenario", "run"]

NAMES: Final = ("a", "b", "c", "d", "e")
#: Writes before the fault and after healing.
SETTLE: Final = 0.5
#: How long a fault lasts once it has shown (beyond the liveness window it took to show).
HOLD: Final = (0.3, 1.2)
CLOCK_OFFSET: Final = "SPHAERA_CLOCK_OFFSET"

Body = Callable[[FaultCluster, random.Random], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """One kind of fault: on how many nodes, with what the fault does."""

    name: str
    nodes: int
    body: Body
    data: bool = False
    #: node index -> environment (a skewed clock)
    env: dict[int, dict[str, str]] = field(default_factory=dict)
    #: run the nodes in signed mode (every node lists every other)
    signed: bool = False


async def run(scenario: Scenario, rng: random.Random, tmp: Path) -> Outcome:
    """Start a cluster, write, inject the fault, heal; what converge() found."""
    names = NAMES[: scenario.nodes]
    env = {names[index]: values for index, values in scenario.env.items()}
    faults = Faults(rng=random.Random(rng.random()))
    data = tmp if scenario.data else None
    keys = tmp / "keys" if scenario.signed else None
    async with FaultCluster(names, faults, data=data, env=env, keys=keys) as cluster:
        steady = [name for name in names if name not in env]
        await cluster.until(
            lambda: cluster.sees(steady, steady, "exists"), "the nodes see each other alive"
        )
        for name in names:
            assert await cluster.signed(name) is scenario.signed, name
        async with cluster.writing(rng):
            await asyncio.sleep(SETTLE)
            await scenario.body(cluster, rng)
            await asyncio.sleep(SETTLE)
        return await cluster.converge(scenario.name)


async def _hold(rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(*HOLD))


# -- network faults ------------------------------------------------------------------------


async def partition(cluster: FaultCluster, rng: random.Random) -> None:
    """Split the nodes into a minority and a majority until each sees the other gone."""
    names = list(cluster.names)
    rng.shuffle(names)
    minority, majority = names[: len(names) // 2], names[len(names) // 2 :]
    cluster.faults.partition(minority, majority)
    cluster.fault_events += 1
    await cluster.until(
        lambda: cluster.sees(majority, minority, "absent"), f"{majority} see {minority} absent"
    )
    await cluster.until(
        lambda: cluster.sees(minority, majority, "absent"), f"{minority} see {majority} absent"
    )
    await _hold(rng)
    cluster.faults.heal()


async def one_way(cluster: FaultCluster, rng: random.Random) -> None:
    """Lose every message from one node to another: writes still reach every node (through
    the others), before and after healing."""
    sender, receiver = rng.sample(cluster.names, 2)
    cluster.faults.cut(sender, receiver)
    cluster.fault_events += 1
    await asyncio.sleep(LIVENESS)  # beyond the liveness window: nobody may drop out for it
    acknowledged = dict(cluster.ledger.created)

    async def everywhere() -> bool:
        for name in cluster.names:
            found = await cluster.entities(name)
            if found is None or any(entity not in found for entity in acknowledged):
                return False
        return True

    await cluster.until(everywhere, f"writes reach everyone while {sender}->{receiver} is cut")
    assert await cluster.sees(cluster.names, cluster.names, "exists"), "a replica dropped out"
    cluster.faults.heal()


async def lossy(cluster: FaultCluster, rng: random.Random) -> None:
    """Lose 30% of the messages between peers and delay the rest by up to 50 ms."""
    cluster.faults.drop = 0.3
    cluster.faults.delay = (0.0, 0.05)
    cluster.fault_events += 1
    await asyncio.sleep(2 * LIVENESS)
    cluster.faults.heal()


# -- process faults ------------------------------------------------------------------------


async def sigstop(cluster: FaultCluster, rng: random.Random) -> None:
    """SIGSTOP a node until the others see it gone (beyond the liveness window), SIGCONT."""
    victim = rng.choice(cluster.names)
    others = [name for name in cluster.names if name != victim]
    cluster.signal(victim, signal.SIGSTOP)
    await cluster.until(lambda: cluster.sees(others, [victim], "absent"), f"{victim} absent")
    await _hold(rng)
    cluster.signal(victim, signal.SIGCONT)
    await cluster.until(
        lambda: cluster.sees(cluster.names, cluster.names, "exists"), f"{victim} back"
    )


async def sigkill(cluster: FaultCluster, rng: random.Random) -> None:
    """SIGKILL a node with --data while it takes writes, then start it again on its data."""
    victim = rng.choice(cluster.names)
    others = [name for name in cluster.names if name != victim]
    cluster.signal(victim, signal.SIGKILL)
    await cluster.until(lambda: cluster.sees(others, [victim], "absent"), f"{victim} absent")
    await _hold(rng)
    await cluster.restart(victim)


# -- clocks --------------------------------------------------------------------------------


@cache
def clock_skew_enforced() -> bool:
    """Whether this build of the node has ``--max-clock-skew`` (an outlier fences itself)."""
    helped = subprocess.run(
        [sys.executable, "-m", "sphaera_crdt", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return "--max-clock-skew" in helped.stdout


def skewed(offset: float) -> Body:
    """Node ``a`` runs with its clock ``offset`` seconds off; healing restarts it on the
    right time (on its data)."""

    async def body(cluster: FaultCluster, rng: random.Random) -> None:
        victim = cluster.names[0]
        url = cluster.members[victim].url
        cluster.fault_events += 1
        async with cluster.session.post(
            f"{url}/v1/observations", json={"subject": "clock-probe"}
        ) as answer:
            if answer.status == 200:  # the node dates what it records with its own clock
                dated = (await answer.json())["at"]
                assert abs(dated - (time.time() + offset)) < 2.0, (dated, time.time(), offset)
            else:  # a node that knows its clock is off refuses to record observations
                assert answer.status == 503 and clock_skew_enforced(), answer.status
        if clock_skew_enforced():

            async def fenced() -> bool:
                async with cluster.session.get(f"{url}/healthz") as health:
                    return health.status != 200 or (await health.json())["status"] != "ok"

            await cluster.until(fenced, f"{victim}, {offset:+} s off, says it is not ok")
        await asyncio.sleep(2 * LIVENESS)
        await cluster.restart(victim, env={})

    return body


SCENARIOS: Final = {
    scenario.name: scenario
    for scenario in (
        Scenario("partition-3", 3, partition),
        Scenario("partition-5", 5, partition),
        Scenario("one-way-cut", 3, one_way),
        Scenario("lossy", 3, lossy),
        Scenario("sigstop", 3, sigstop),
        Scenario("sigkill", 3, sigkill, data=True),
        Scenario("signed-partition-3", 3, partition, signed=True),
        Scenario("signed-lossy", 3, lossy, signed=True),
        Scenario("signed-sigkill", 3, sigkill, data=True, signed=True),
        Scenario("clock-ahead", 3, skewed(30.0), data=True, env={0: {CLOCK_OFFSET: "30"}}),
        Scenario("clock-behind", 3, skewed(-30.0), data=True, env={0: {CLOCK_OFFSET: "-30"}}),
    )
}
