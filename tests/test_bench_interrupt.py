"""An interrupted convergence sweep saves the runs it finished and says so in one line."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sphaera_crdt.cli import cli
from sphaera_crdt.sim import sweep as sweep_module
from sphaera_crdt.sim.pools import InProcess
from sphaera_crdt.sim.runner import Scenario
from sphaera_crdt.sim.sweep import Job, Outcome, Sweep, run_sweep

TINY = Sweep(
    replicas=(4,),
    fanouts=(1, 2),
    losses=(0.0,),
    entities=(4,),
    changes=(2,),
    strategies=("gossip", "naive"),
    trials=2,
    ideal_trials=5,
    seed=3,
)
TINY_ARGS = [
    "bench", "convergence",
    "--replicas", "4", "--fanout", "1,2", "--loss", "0", "--entities", "4", "--changes", "2",
    "--strategies", "gossip,naive", "--trials", "2", "--ideal-trials", "5", "--seed", "3",
    "--no-plots",
]  # fmt: skip


def _stopping_after(finished: int, stop: Any) -> Any:
    """A runner that runs ``finished`` jobs, then calls ``stop`` in the next one."""
    count = 0

    def runner(job: Job) -> Outcome:
        nonlocal count
        if count == finished:
            stop()
        count += 1
        return sweep_module._run(job)

    return runner


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_a_sweep_interrupted_keeps_what_it_finished() -> None:
    whole = run_sweep(TINY, pool=InProcess())
    assert whole.document["interrupted"] is False
    total = len(TINY.scenarios()) + len(TINY.ideal_jobs())
    assert len(whole.document["runs"]) + len(whole.document["ideal"]) == total
    part = run_sweep(TINY, pool=InProcess(), runner=_stopping_after(3, _keyboard_interrupt))
    document = part.document
    assert document["interrupted"] is True
    assert len(document["runs"]) + len(document["ideal"]) == 3
    assert len(part.timings["runs"]) == len(document["runs"])
    # The finished runs are the very runs of the whole sweep (each run is seeded alone).
    for run in document["runs"]:
        assert run in whole.document["runs"]
    assert sum(row["trials"] for row in document["summary"]) == len(document["runs"])


@pytest.mark.parametrize(
    ("stop", "finished"),
    [(_keyboard_interrupt, 2), (lambda: os.kill(os.getpid(), signal.SIGTERM), 4)],
    ids=["ctrl-c", "sigterm"],
)
def test_the_command_saves_the_finished_runs_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: Any, finished: int
) -> None:
    count = 0
    real = sweep_module.run_scenario

    def run_scenario(scenario: Scenario) -> Any:
        nonlocal count
        if count == finished:
            stop()
        count += 1
        return real(scenario)

    monkeypatch.setattr(sweep_module, "run_scenario", run_scenario)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        # --profile runs the sweep in this process, where the patched runner is.
        cli,
        [*TINY_ARGS, "--out", str(out), "--profile", str(tmp_path / "profile")],
        prog_name="sphaera",
    )
    assert result.exit_code == 130, result.output
    assert signal.getsignal(signal.SIGTERM) == before  # the command put the handler back
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"sphaera: error: interrupted after {finished} of 6 runs")
    assert str(out / "convergence.json") in result.stderr
    document = json.loads((out / "convergence.json").read_text())
    assert document["interrupted"] is True
    assert len(document["runs"]) == finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert "Traceback" not in result.output
