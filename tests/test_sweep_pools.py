"""Where a sweep's runs go: one process, local worker processes or Ray, one document.

The pools are interchangeable because every run is seeded on its own: the same sweep
writes the same ``convergence.json``, byte for byte, whoever ran it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sphaera_crdt.cli import cli
from sphaera_crdt.errors import PoolUnavailable
from sphaera_crdt.sim.convergence_bench import json_text
from sphaera_crdt.sim.pools import InProcess, ProcessPool, RayPool
from sphaera_crdt.sim.sweep import Job, Sweep, run_sweep

SMALL = Sweep(
    replicas=(4, 6),
    fanouts=(1, 2),
    losses=(0.0, 0.2),
    entities=(4,),
    changes=(2,),
    strategies=("gossip", "full-state", "naive"),
    trials=1,
    ideal_trials=4,
    seed=5,
)
SMALL_ARGS = [
    "bench", "convergence",
    "--replicas", "4,6", "--fanout", "1,2", "--loss", "0,0.2", "--entities", "4",
    "--changes", "2", "--strategies", "gossip,full-state,naive", "--trials", "1",
    "--ideal-trials", "4", "--seed", "5", "--no-plots", "--format", "json",
]  # fmt: skip
HAS_RAY = importlib.util.find_spec("ray") is not None


def _sweep(tmp_path: Path, name: str, *options: str) -> tuple[bytes, str]:
    """Run the small sweep with ``options``: its convergence.json and its stderr."""
    out = tmp_path / name
    result = CliRunner().invoke(cli, [*SMALL_ARGS, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return (out / "convergence.json").read_bytes(), result.stderr


def test_one_process_one_worker_and_two_write_the_same_bytes(tmp_path: Path) -> None:
    # --profile runs the sweep in this process.
    alone, _ = _sweep(tmp_path, "here", "--profile", str(tmp_path / "stats"))
    one, _ = _sweep(tmp_path, "one", "--workers", "1")
    two, _ = _sweep(tmp_path, "two", "--workers", "2")
    assert alone == one == two
    # and it is the sweep's document, every run of it
    document = run_sweep(SMALL, pool=InProcess()).document
    assert alone == json_text(document, compact=True).encode()
    assert len(document["runs"]) == len(SMALL.scenarios()) > 0


def test_the_timings_say_what_ran_the_sweep() -> None:
    timings = run_sweep(SMALL, pool=ProcessPool(workers=2)).timings
    assert (timings["pool"], timings["jobs"]) == ("processes", 2)
    timings = run_sweep(SMALL, pool=InProcess()).timings
    assert (timings["pool"], timings["jobs"]) == ("in-process", 1)


def test_jobs_still_works_and_says_it_is_deprecated(tmp_path: Path) -> None:
    workers, quiet = _sweep(tmp_path, "workers", "--workers", "1")
    jobs, warned = _sweep(tmp_path, "jobs", "--jobs", "1")
    assert jobs == workers
    assert "sphaera: warning: --jobs is deprecated; use --workers" in warned
    assert "deprecated" not in quiet


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--jobs", "1", "--workers", "2"], "--jobs is the former name of --workers"),
        (["--ray", "auto", "--workers", "2"], "with --ray the cluster decides"),
        (["--ray", "auto", "--profile", "stats"], "it cannot go with --ray"),
        (["--ray", " "], "a Ray address is needed"),
    ],
)
def test_options_that_exclude_each_other_are_one_line(
    tmp_path: Path, options: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        cli, [*SMALL_ARGS, "--out", str(tmp_path), *options], prog_name="sphaera"
    )
    assert result.exit_code != 0
    assert result.stderr.startswith("sphaera: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "convergence.json").exists()


def test_ray_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails
    with pytest.raises(PoolUnavailable, match=r"pip install 'sphaera-crdt\[ray\]'"):
        RayPool(address="auto").run([1], str, print)
    result = CliRunner().invoke(
        cli, [*SMALL_ARGS, "--out", str(tmp_path), "--ray", "auto"], prog_name="sphaera"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("sphaera: error: running a sweep on Ray needs the ray")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_pool_interrupted_stops_its_workers_and_keeps_what_finished() -> None:
    """Ctrl-C while a worker runs a long run: the pool stops it at once (it does not wait
    for it) and the runs that finished before are the result, marked interrupted."""
    # The longest run goes first: 5,000 replicas, a minute or more; the small ones go to
    # the other worker meanwhile.
    sweep = Sweep(
        replicas=(5000, 4),
        fanouts=(1,),
        losses=(0.0,),
        entities=(4,),
        changes=(2,),
        strategies=("gossip",),
        trials=1,
        ideal_trials=1,
        seed=5,
    )
    seen: list[Job] = []

    def interrupt_after_two(job: Job, seconds: float) -> None:
        seen.append(job)
        if len(seen) == 2:
            raise KeyboardInterrupt

    started = time.perf_counter()
    result = run_sweep(sweep, pool=ProcessPool(workers=2), on_done=interrupt_after_two)
    elapsed = time.perf_counter() - started
    document = result.document
    assert document["interrupted"] is True
    assert len(document["runs"]) + len(document["ideal"]) == len(seen) == 2
    assert all(run["scenario"]["replicas"] == 4 for run in document["runs"])
    assert result.timings["jobs"] is None  # the pool never said how many ran at once
    assert elapsed < 30, f"the interrupted pool took {elapsed:.0f} s: it waited for a run"


def _halve(number: int) -> int:
    if number % 2:
        raise ValueError(f"{number} is odd")
    return number // 2


def _die(number: int) -> int:
    os._exit(3)


def test_a_pool_runs_every_job_once_and_hands_back_each_outcome() -> None:
    got: list[int] = []
    assert ProcessPool(workers=2).run([8, 2, 6, 4, 10], _halve, got.append) == 2
    assert sorted(got) == [1, 2, 3, 4, 5]
    got.clear()
    assert InProcess().run([8, 2], _halve, got.append) == 1
    assert got == [4, 1]


def test_a_run_that_fails_in_a_worker_raises_here_with_its_traceback() -> None:
    with pytest.raises(ValueError, match="3 is odd") as raised:
        ProcessPool(workers=1).run([3], _halve, print)
    assert any("in the worker process" in note for note in raised.value.__notes__)
    assert any("_halve" in note for note in raised.value.__notes__)


def test_a_worker_that_dies_without_an_answer_is_a_pool_error() -> None:
    with pytest.raises(PoolUnavailable, match="exit status 3"):
        ProcessPool(workers=1).run([1], _die, print)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (the [ray] extra)")
def test_a_local_ray_instance_writes_the_same_bytes(tmp_path: Path) -> None:
    on_ray, _ = _sweep(tmp_path, "ray", "--ray", "local")
    here, _ = _sweep(tmp_path, "here", "--workers", "2")
    assert on_ray == here
    timings = (tmp_path / "ray" / "timings.json").read_text()
    assert '"pool": "ray"' in timings
