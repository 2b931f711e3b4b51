"""``sphaera why ID``: a readable tree with times relative to the node's clock, and
``--json`` for the tree exactly as the API gives it (a node in a background thread, its
clock injected)."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from sphaera_crdt.cli import cli
from sphaera_crdt.node import Node, NodeConfig

TOKEN = "t0k"


@pytest.fixture
def node() -> Iterator[tuple[str, list[float]]]:
    """A node served from a background thread; its clock reads ``t[0]``."""
    t = [1000.0]
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        config = NodeConfig(replica_id="n", port=0, token=TOKEN, gossip_interval=3600)
        async with Node(config, clock=lambda: t[0]) as served:
            box["url"] = served.url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["url"], t
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def test_why_prints_a_tree_with_times_relative_to_the_node_clock(
    node: tuple[str, list[float]],
) -> None:
    url, t = node
    env = {"SPHAERA_URL": url, "SPHAERA_TOKEN": TOKEN}

    def ok(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="sphaera")
        assert result.exit_code == 0, result.output
        return result.stdout

    ok("put", "db")
    ok("put", "api", "--requires", '{"all": [{"exists": "db"}, {"observed": "db", "within": 10}]}')
    ok("observe", "db")  # at 1000
    t[0] = 1003.0
    assert ok("why", "api").splitlines() == [
        "api: exists",
        "  reason: requirements hold: db exists; 1 fresh observation of db within 10s, 1 needed",
        "  all: true",
        "    exists db: true",
        "      db: exists",
        "        reason: declared with no requirements",
        "    observed db within 10 s: true (1 fresh, 1 needed)",
        "      n: ok, fresh, 3 s old, expires in 7 s",
    ]
    t[0] = 1022.0
    ok("put", "nudge")  # any write re-evaluates at the node's clock, as its timer would
    text = ok("why", "api")
    assert text.splitlines()[:2] == [
        "api: absent",
        "  reason: 0 fresh observations of db within 10s, 1 needed",
    ]
    assert "      n: ok, stale for 12 s, 22 s old" in text.splitlines()
    assert "1022" not in text  # no epoch floats

    raw = orjson.loads(ok("why", "api", "--json"))
    request = urllib.request.Request(
        f"{url}/v1/entities/api/why", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert raw == orjson.loads(response.read())
    assert raw["now"] == 1022.0

    missing = CliRunner().invoke(cli, ["why", "nothing"], env=env, prog_name="sphaera")
    assert missing.exit_code == 1
    [line] = missing.stderr.strip().splitlines()
    assert line.startswith("sphaera: error: 404 not_found")


def test_why_help_names_the_json_flag() -> None:
    result = CliRunner().invoke(cli, ["why", "--help"], prog_name="sphaera")
    assert result.exit_code == 0
    assert "--json" in result.output and "relative to the node's clock" in result.output
