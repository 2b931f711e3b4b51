"""SIGKILL a real ``sphaera serve --data DIR`` at random moments: no acknowledged write is lost.

Each seeded run starts the node, has several clients send writes over HTTP
(``PUT /v1/entities/{id}`` and ``POST /v1/observations``) and kills the process with
SIGKILL after a random delay, while writes are in flight. With the process dead, the
database passes ``PRAGMA integrity_check``. The node is started again on the same
directory and killed once more at a random moment of its startup (while it replays and
compacts its log, or just after), then started for good, and every entity write answered
2xx must be served. Each key is written by one client only, with increasing numbers, so
"present" means "this number or a later one". After the last cycle the node stops and
the observations are checked from the database, restored in this process. Runs alternate
``--durability full`` and ``normal`` (both survive a process crash).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from procs import NodeProcess, Processes

from sphaera_crdt.persistence import open_replica
from sphaera_crdt.store import SQLiteStore
from sphaera_crdt.store.sqlite import DB_NAME

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3)
CYCLES = 2
CLIENTS = 6
KEYS_PER_CLIENT = 4
#: The kill comes this many seconds (uniform) after the clients start.
KILL_AFTER = (0.05, 0.7)
#: A second kill comes this many seconds after a restart, often before it listens.
STARTUP_KILL = (0.0, 0.8)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Acknowledged:
    """The highest number each key was acknowledged with (2xx), and how many writes were
    acknowledged or cut off."""

    entities: dict[str, int] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)
    count: int = 0
    failed: int = 0


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.close()


async def client(
    session: aiohttp.ClientSession, url: str, prefix: str, acked: Acknowledged, rng: random.Random
) -> None:
    """Write until the server goes away; remember what was acknowledged."""
    number = 0
    while True:
        number += 1
        key = f"{prefix}-{rng.randrange(KEYS_PER_CLIENT)}"
        try:
            if rng.random() < 0.5:
                async with session.put(
                    f"{url}/v1/entities/{key}", json={"kind": "crash", "attrs": {"n": number}}
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        acked.entities[key] = number
                        acked.count += 1
            else:
                async with session.post(
                    f"{url}/v1/observations", json={"subject": key, "value": number, "ttl": 1e6}
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        acked.observations[key] = number
                        acked.count += 1
        except (aiohttp.ClientError, OSError):
            acked.failed += 1
            return


async def write_then_kill(
    process: NodeProcess, cycle: int, acked: Acknowledged, rng: random.Random
) -> None:
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        clients = [
            asyncio.create_task(
                client(
                    session, process.url, f"c{cycle}-t{index}", acked, random.Random(rng.random())
                )
            )
            for index in range(CLIENTS)
        ]
        await asyncio.sleep(rng.uniform(*KILL_AFTER))
        process.popen.kill()  # SIGKILL: no shutdown, no flush
        await asyncio.to_thread(process.popen.wait)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=15)


def integrity(directory: Path) -> str:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


async def served_entities(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        async with session.get(f"{url}/v1/entities") as response:
            assert response.status == 200
            body = await response.json()
    return {
        name: view["attrs"]["n"]
        for name, view in body["entities"].items()
        if view["kind"] == "crash"
    }


def check(found: dict[str, int], acked: dict[str, int], what: str) -> None:
    lost = {key: number for key, number in acked.items() if found.get(key, -1) < number}
    assert not lost, f"acknowledged {what} lost (key: acknowledged number): {lost}"


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_never_loses_an_acknowledged_write(
    seed: int, procs: Processes, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    durability = "full" if seed % 2 else "normal"
    args = ["--data", str(tmp_path), "--durability", durability]
    acked = Acknowledged()
    process = procs.start("a", args=args)
    for cycle in range(CYCLES):
        await write_then_kill(process, cycle, acked, rng)
        assert integrity(tmp_path) == "ok"
        # Once more while it starts up (it compacts its log as it opens the store).
        starting = procs.start("a", args=args, wait=False)
        await asyncio.sleep(rng.uniform(*STARTUP_KILL))
        starting.popen.kill()
        await asyncio.to_thread(starting.popen.wait)
        assert integrity(tmp_path) == "ok"
        process = procs.start("a", args=args)
        check(await served_entities(process.url), acked.entities, "entity writes")
    assert acked.entities and acked.observations, "the clients got no write acknowledged"
    assert acked.failed == CLIENTS * CYCLES, "each kill cut every client off mid-writing"
    assert process.stop() == 0
    assert "Traceback" not in process.stderr()
    assert integrity(tmp_path) == "ok"
    store = SQLiteStore(tmp_path)
    try:
        replica = open_replica("a", store)
    finally:
        store.close()
    check(
        {
            observation.subject: observation.value
            for observation in replica.observations()
            if observation.observer == "a"
        },
        acked.observations,
        "observations",
    )
    check(
        {
            name: view.attrs["n"]
            for name, view in replica.entities().items()
            if view.kind == "crash"
        },
        acked.entities,
        "entity writes",
    )
