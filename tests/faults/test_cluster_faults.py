"""Real nodes behind fault proxies: no acknowledged write is lost, and every node agrees
on records and statuses once the fault heals (see :mod:`faults.scenarios`)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from .scenarios import CLOCK_OFFSET, SCENARIOS, run

pytestmark = [pytest.mark.slow]


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_no_acknowledged_write_lost_and_all_agree(name: str, tmp_path: Path) -> None:
    outcome = await run(SCENARIOS[name], random.Random(name), tmp_path)
    print(outcome.summary())
    outcome.check()


def test_a_clock_offset_that_is_not_a_number_stops_the_node() -> None:
    command = [sys.executable, "-m", "sphaera_crdt", "serve", "--id", "a", "--memory"]
    env = {"PATH": "", "PYTHONPATH": ":".join(sys.path), CLOCK_OFFSET: "soon"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"sphaera: error: {CLOCK_OFFSET} must be a number of seconds, not 'soon'"
    ]
