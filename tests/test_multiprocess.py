"""Real node processes gossiping over loopback: the network itself is under test here.

Four ``sphaera serve --memory`` processes (gossip every 0.2 s, liveness 1.5 s) seeded by
the first one. Conditions are awaited by polling the HTTP API, always under a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from procs import NodeProcess, Processes

from sphaera_crdt import all_of, exists, observed
from sphaera_crdt.net.client import ApiClient, ApiError

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

NAMES = ("a", "b", "c", "d")
INTERVAL = 0.2
LIVENESS = 1.5
GOSSIP = ("--gossip-interval", str(INTERVAL), "--liveness", str(LIVENESS))
DEADLINE = 10.0


@pytest.fixture(scope="module")
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="module")
def cluster(procs: Processes) -> dict[str, NodeProcess]:
    first = procs.start(NAMES[0], args=GOSSIP)
    others = [procs.start(name, peers=[first.url], args=GOSSIP, wait=False) for name in NAMES[1:]]
    for process in others:
        process.wait_listening()
    return {process.name: process for process in (first, *others)}


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after :data:`DEADLINE` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


async def status_on(url: str, entity: str) -> str:
    async with ApiClient(url, timeout=2) as api:
        try:
            return str((await api.get(entity))["status"])
        except ApiError as exc:
            if exc.status == 404:
                return "unknown"
            raise


def everywhere(nodes: list[NodeProcess], entity: str, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        statuses = await asyncio.gather(*(status_on(node.url, entity) for node in nodes))
        return all(found == status for found in statuses)

    return check


async def test_membership_and_writes_reach_every_node(cluster: dict[str, NodeProcess]) -> None:
    nodes = list(cluster.values())
    for name in NAMES:
        await until(everywhere(nodes, f"replica:{name}", "exists"), f"replica:{name} alive")
    async with ApiClient(cluster["c"].url) as api:
        await api.put("db", kind="postgres", attrs={"port": 5432})
    await until(everywhere(nodes, "db", "exists"), "db everywhere")
    async with ApiClient(cluster["d"].url) as api:
        await api.patch("db", {"role": "primary"})

    async def patched() -> bool:
        for node in nodes:
            async with ApiClient(node.url) as api:
                if (await api.get("db"))["attrs"] != {"port": 5432, "role": "primary"}:
                    return False
        return True

    await until(patched, "concurrent attrs merged everywhere")


async def test_dependent_entity_follows_its_dependency(cluster: dict[str, NodeProcess]) -> None:
    nodes = list(cluster.values())
    window = 3.0
    async with ApiClient(cluster["a"].url) as api:
        await api.put("store", kind="postgres")
    async with ApiClient(cluster["b"].url) as api:
        requires = all_of(exists("store"), observed("store", within=window))
        await api.put("app", kind="service", requires=requires)
    await until(everywhere(nodes, "app", "absent"), "app declared, absent without evidence")
    async with ApiClient(cluster["c"].url) as api:
        await api.observe("store", ok=True, value={"latency_ms": 2})
    await until(everywhere(nodes, "app", "exists"), "app exists once store is observed")
    async with ApiClient(cluster["d"].url) as api:
        await api.delete("store")
    await until(everywhere(nodes, "app", "absent"), "app absent once store is retracted")
    async with ApiClient(cluster["a"].url) as api:
        await api.put("store", kind="postgres")
    async with ApiClient(cluster["c"].url) as api:  # fresh evidence: the window starts now
        await api.observe("store", ok=True)
    await until(everywhere(nodes, "app", "exists"), "app back with store")
    # Nobody acts: c's observation ages out and app disappears on every node by itself.
    await until(everywhere(nodes, "app", "absent"), "app absent once evidence is stale")
    async with ApiClient(cluster["b"].url) as api:
        assert "fresh observations" in (await api.get("app"))["reason"]


async def test_stopped_node_leaves_and_returns(
    procs: Processes, cluster: dict[str, NodeProcess]
) -> None:
    stopped = cluster["d"]
    port = stopped.port
    assert stopped.stop() == 0
    assert "Traceback" not in stopped.stderr()
    survivors = [cluster[name] for name in NAMES if name != "d"]
    await until(everywhere(survivors, "replica:d", "absent"), "replica:d absent after stop")
    async with ApiClient(cluster["a"].url) as api:
        await api.put("while-away", attrs={"n": 1})
    restarted = procs.start("d", port=port, peers=[cluster["a"].url], args=GOSSIP)
    cluster["d"] = restarted
    assert restarted.url == f"http://127.0.0.1:{port}"
    nodes = list(cluster.values())
    await until(everywhere(nodes, "replica:d", "exists"), "replica:d back everywhere")
    await until(everywhere([restarted], "while-away", "exists"), "restarted d caught up")


async def test_a_node_with_data_restarts_with_its_state(procs: Processes, tmp_path: Path) -> None:
    data = ("--data", str(tmp_path / "e"))
    first = procs.start("e", args=data)
    async with ApiClient(first.url) as api:
        await api.put("kept", attrs={"n": 1})
    assert first.stop() == 0
    again = procs.start("e", args=data)
    async with ApiClient(again.url) as api:
        assert (await api.get("kept"))["attrs"] == {"n": 1}


async def test_events_command_streams_changes(cluster: dict[str, NodeProcess]) -> None:
    url = cluster["b"].url
    command = [sys.executable, "-m", "sphaera_crdt", "events", "--url", url]
    events = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert events.stdout is not None
        async with asyncio.timeout(DEADLINE):
            while b"replica:b: exists" not in await events.stdout.readline():
                pass  # the snapshot, one line per entity
            async with ApiClient(cluster["a"].url) as api:
                await api.put("watched")
            while b"watched: absent -> exists" not in await events.stdout.readline():
                pass
        events.send_signal(signal.SIGINT)
        async with asyncio.timeout(DEADLINE):
            assert await events.wait() == 0
            assert b"Traceback" not in await events.stderr.read()  # type: ignore[union-attr]
    finally:
        if events.returncode is None:
            events.kill()
            await events.wait()
