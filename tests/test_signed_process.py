"""``sphaera key`` then ``sphaera serve --trust`` as real processes: the key made before the
first start is the one the node signs with, SIGHUP and an edited file both make the node
read its trust file again, a node whose key is not listed refuses to start, and the
status page marks replicas the list does not name (in headless Chromium, when present).

Log lines are awaited by polling the process's stderr, always under a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import NodeProcess, Processes
from test_status_page_browser import CHROMIUM, CHROMIUM_ARGS, WAIT, require_browser

from sphaera_crdt.core.trust import Trust, public_key_text
from sphaera_crdt.keys import generate_key, load_key, save_key
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.slow

DEADLINE = 10.0


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.close()


def key_line(data: Path, replica_id: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sphaera_crdt", "key", "--data", str(data), "--id", replica_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def logged(process: NodeProcess, text: str, count: int = 1) -> str:
    """Wait until ``text`` appears ``count`` times in the process's stderr."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        log = process.stderr()
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"not logged within {DEADLINE} s: {text!r}\n{process.stderr()}")


def health(process: NodeProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"{process.url}/healthz", timeout=5) as answer:
        return dict(json.load(answer))


def test_a_signed_node_reloads_its_trust_file(tmp_path: Path, procs: Processes) -> None:
    data = tmp_path / "a"
    a_line = key_line(data, "a")
    trust = tmp_path / "trust.txt"
    trust.write_text(a_line)
    node = procs.start(
        "a", args=["--data", str(data), "--trust", str(trust), "--log-level", "info"]
    )
    first = Trust.parse(a_line)
    assert health(node) == {
        "status": "ok",
        "replica": "a",
        "signed": True,
        "trust_digest": first.digest,
    }
    assert key_line(data, "a") == a_line  # the node kept the key sphaera key made

    # SIGHUP: read again now
    b_line = f"b {public_key_text(generate_key())}\n"
    trust.write_text(a_line + b_line)
    node.popen.send_signal(signal.SIGHUP)
    second = Trust.parse(a_line + b_line)
    log = logged(node, f"-> {second.digest}): added b")
    assert "INFO" in log.splitlines()[-1]
    assert health(node)["trust_digest"] == second.digest

    # an edit alone is noticed within a second or so
    trust.write_text(a_line)
    logged(node, f"-> {first.digest}): removed b")
    assert health(node)["trust_digest"] == first.digest

    # a broken file: one error line, the list in use kept
    trust.write_text("a not-a-key\n")
    logged(node, "ERROR")
    assert health(node)["trust_digest"] == first.digest
    assert node.stop() == 0


def test_a_node_whose_key_is_not_listed_does_not_start(tmp_path: Path) -> None:
    data = tmp_path / "a"
    key_line(data, "a")
    trust = tmp_path / "trust.txt"
    other = public_key_text(generate_key())
    trust.write_text(f"a {other}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphaera_crdt",
            "serve",
            "--id",
            "a",
            "--port",
            "0",
            "--data",
            str(data),
            "--trust",
            str(trust),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sphaera: error: the key of replica 'a' in ")
    assert lines[0].endswith(f"but trust file {trust} gives {other}")


@pytest.mark.asyncio
async def test_the_status_page_marks_replicas_the_list_does_not_name(tmp_path: Path) -> None:
    require_browser()
    from playwright.async_api import async_playwright, expect

    key = tmp_path / "a.key"
    save_key(generate_key(), key)
    trust = tmp_path / "trust.txt"
    trust.write_text(f"a {public_key_text(load_key(key))}\n")
    config = NodeConfig(
        replica_id="a", port=0, gossip_interval=3600, trust_file=str(trust), key_file=str(key)
    )
    async with Node(config) as node, async_playwright() as driver:
        node.replica.declare("replica:ghost", kind="replica", attrs={"url": "http://x:1"})
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(node.url + "/")

            def row(replica_id: str) -> Any:
                name = page.locator("td:first-child").get_by_role(
                    "button", name=replica_id, exact=True
                )
                return page.locator("#replicas tr").filter(has=name)

            await expect(row("ghost")).to_contain_text("not trusted", timeout=WAIT)
            await expect(row("a")).to_have_count(1)
            await expect(row("a")).not_to_contain_text("not trusted")
            assert problems == []
        finally:
            await browser.close()
