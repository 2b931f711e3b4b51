"""Acting on derived statuses: :class:`~sphaera_crdt.net.watch.Watch` (what a snapshot or
a change reports), ``ApiClient.watch`` across a node that stops and starts again, and
``sphaera watch --exec`` running a command once per change, in order.

Waits are bounded: a stream read has a deadline, and the subprocess test polls for what
it expects with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sphaera_crdt.core.views import Status
from sphaera_crdt.errors import ApiError, RemoteError
from sphaera_crdt.net.client import ApiClient, StatusChange
from sphaera_crdt.net.watch import MAX_DELAY, Backoff, Watch
from sphaera_crdt.node import Node, NodeConfig

ROOT = Path(__file__).resolve().parents[1]
#: Seconds to wait for anything before failing.
DEADLINE = 15.0


def snapshot(statuses: dict[str, str], at: float = 5.0) -> dict[str, Any]:
    return {
        "entities": {k: {"status": v, "reason": f"{k} {v}"} for k, v in statuses.items()},
        "at": at,
    }


def test_the_first_snapshot_reports_nothing_and_a_later_one_what_changed() -> None:
    watch = Watch()
    assert watch.event("snapshot", snapshot({"db": "exists", "api": "exists", "x": "absent"})) == []
    change = {"entity": "db", "before": "exists", "after": "absent", "reason": "r", "at": 7.0}
    assert watch.event("change", change) == [
        StatusChange(entity="db", before=Status.EXISTS, after=Status.ABSENT, reason="r", at=7.0)
    ]
    assert watch.event(": keep-alive", None) == []
    assert watch.event("overflow", {"dropped": True}) == []
    # Reconnected: db came back, api went away (no longer listed), new appeared; x is
    # unchanged, so it is not reported.
    resumed = watch.event(
        "snapshot", snapshot({"db": "exists", "x": "absent", "new": "undetermined"}, at=9.0)
    )
    assert [(c.entity, c.before, c.after, c.resumed, c.at) for c in resumed] == [
        ("api", Status.EXISTS, Status.ABSENT, True, 9.0),
        ("db", Status.ABSENT, Status.EXISTS, True, 9.0),
        ("new", Status.ABSENT, Status.UNDETERMINED, True, 9.0),
    ]
    assert watch.known == {"db": Status.EXISTS, "x": Status.ABSENT, "new": Status.UNDETERMINED}


def test_malformed_events_raise_remote_errors() -> None:
    watch = Watch()
    with pytest.raises(RemoteError):
        watch.event("snapshot", {"entities": []})
    with pytest.raises(RemoteError):
        watch.event("change", {"entity": "db", "before": "exists", "after": "gone"})
    with pytest.raises(RemoteError):
        watch.event("change", {"before": "exists", "after": "absent"})
    with pytest.raises(ValueError, match="must change"):
        StatusChange(entity="a", before=Status.ABSENT, after=Status.ABSENT, reason="")


def test_backoff_grows_to_its_bound_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.delay() for _ in range(12)]
    assert delays[0] == 0.0 and delays[1] > 0
    assert delays == sorted(delays) and max(delays) == MAX_DELAY
    backoff.reset()
    assert backoff.delay() == 0.0


async def next_change(changes: AsyncIterator[StatusChange]) -> StatusChange:
    async with asyncio.timeout(DEADLINE):
        return await anext(changes)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_watch_follows_a_node_that_stops_and_starts_again() -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600)
    first = Node(config)
    await first.__aenter__()
    running = True
    try:
        first.replica.declare("db")
        first.replica.declare("other", kind="x")
        async with ApiClient(first.url) as api:
            drops: list[tuple[str, float]] = []
            changes = api.watch(
                prefix="api", on_drop=lambda why, delay: drops.append((why, delay))
            ).__aiter__()
            task = asyncio.ensure_future(next_change(changes))
            await wait_for(lambda: len(first.events) == 1, "the watch to connect")
            first.replica.declare("api", requires={"exists": "db"})
            first.replica.declare("other-2")
            change = await task
            assert (change.entity, change.before, change.after, change.resumed) == (
                "api",
                Status.ABSENT,
                Status.EXISTS,
                False,
            )
            assert change.at is not None and abs(change.at - first.now()) < 60

            url = first.url
            port = int(url.rsplit(":", 1)[1])
            running = False
            await first.__aexit__(None, None, None)
            # Meanwhile, on the node that comes back: api is gone, api-2 is new.
            second = Node(NodeConfig(replica_id="a", port=port, gossip_interval=3600))
            second.replica.declare("api-2")
            async with second:
                assert second.url == url
                resumed = await next_change(changes)
                assert (resumed.entity, resumed.after, resumed.resumed) == (
                    "api",
                    Status.ABSENT,
                    True,
                )
                resumed = await next_change(changes)
                assert (resumed.entity, resumed.after, resumed.resumed) == (
                    "api-2",
                    Status.EXISTS,
                    True,
                )
                assert drops and all(0 <= delay <= MAX_DELAY for _, delay in drops)
                second.replica.retract("api-2")
                live = await next_change(changes)
                assert (live.entity, live.before, live.after, live.resumed) == (
                    "api-2",
                    Status.EXISTS,
                    Status.ABSENT,
                    False,
                )
                await changes.aclose()  # type: ignore[attr-defined]
    finally:
        if running:
            await first.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_watch_with_a_bad_filter_raises() -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        async with ApiClient(node.url) as api:
            with pytest.raises(ApiError) as caught:
                async with asyncio.timeout(DEADLINE):
                    await anext(api.watch(kind=""))
            assert caught.value.status == 400


SCRIPT = """#!/bin/sh
echo "$SPHAERA_ENTITY $SPHAERA_BEFORE $SPHAERA_AFTER $SPHAERA_REASON" >> "$1"
"""


@pytest.mark.asyncio
async def test_watch_exec_runs_the_command_once_per_change_in_order(tmp_path: Path) -> None:
    script = tmp_path / "record.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "changes.txt"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")}
    env["PYTHONPATH"] = str(ROOT)
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        node.replica.declare("unwatched")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sphaera_crdt",
            "watch",
            "--url",
            node.url,
            "--prefix",
            "s",
            "--exec",
            str(script),
            str(out),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_for(lambda: len(node.events) == 1, "sphaera watch to connect")
            node.replica.declare("s-db")
            node.replica.declare("s-api", requires={"exists": "s-db"})
            node.replica.declare("other")
            node.replica.retract("s-db")  # s-db, then s-api, in that order
            node.replica.declare("s-db")  # and back
            expected = [
                "s-db absent exists declared with no requirements",
                "s-api absent exists",
                "s-db exists absent retracted",
                "s-api exists absent",
                "s-db absent exists declared with no requirements",
                "s-api absent exists",
            ]
            lines = lambda: out.read_text().splitlines() if out.exists() else []  # noqa: E731
            await wait_for(lambda: len(lines()) >= len(expected), "six lines")
            got = lines()
            assert len(got) == len(expected), got
            for line, start in zip(got, expected, strict=True):
                assert line.startswith(start), (line, start)
        finally:
            process.terminate()
            async with asyncio.timeout(DEADLINE):
                await process.wait()


@pytest.mark.asyncio
async def test_watch_json_prints_one_object_per_change() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")}
    env["PYTHONPATH"] = str(ROOT)
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sphaera_crdt",
            "watch",
            "--url",
            node.url,
            "--entity",
            "db",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            await wait_for(lambda: len(node.events) == 1, "sphaera watch to connect")
            node.replica.declare("other")
            node.replica.declare("db")
            node.replica.retract("db")
            lines = []
            for _ in range(2):
                async with asyncio.timeout(DEADLINE):
                    lines.append(orjson.loads(await process.stdout.readline()))
        finally:
            process.terminate()
            async with asyncio.timeout(DEADLINE):
                await process.wait()
    assert [(line["entity"], line["before"], line["after"]) for line in lines] == [
        ("db", "absent", "exists"),
        ("db", "exists", "absent"),
    ]
    assert all(type(line["at"]) is float and line["resumed"] is False for line in lines)
