"""``sphaera bench convergence``: run a sweep with a progress bar, print and write it all."""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .plots import write_plots
from .report import bytes_table, goals_table, rounds_table, timings_table
from .runner import Scenario
from .sweep import IdealJob, Sweep, SweepResult, run_sweep

__all__ = ["Sweep", "run_convergence", "write_json"]


def write_json(path: Path, value: Any, *, compact: bool = False) -> None:
    """Write ``value`` as stable JSON (sorted keys), so equal results give equal files."""
    text = (
        json.dumps(value, sort_keys=True, separators=(",", ":"))
        if compact
        else json.dumps(value, indent=1, sort_keys=True)
    )
    path.write_text(text + "\n", encoding="utf-8")


def _label(job: Scenario | IdealJob) -> str:
    if isinstance(job, IdealJob):
        return f"ideal N={job.replicas} f={job.fanout} loss={job.loss:g}"
    return (
        f"{job.strategy} N={job.replicas} f={job.fanout} loss={job.loss:g}"
        f" E={job.entities} C={job.changes} trial {job.trial}"
    )


def run_convergence(
    sweep: Sweep,
    *,
    out: Path,
    jobs: int,
    plots: bool,
    profile: Path | None,
    console: Console,
) -> SweepResult:
    """Run ``sweep`` and write into ``out``: ``convergence.json`` (every figure of every
    run, compact), ``summary.json`` (the same without the runs: summary, goals, ideal
    epidemic), ``timings.json`` (wall-clock times, the one part that differs between two
    sweeps of one seed) and the plots.

    An interrupted sweep (``KeyboardInterrupt``) writes the three JSON files of the runs
    that finished, marked ``"interrupted": true``, and no tables or plots."""
    out.mkdir(parents=True, exist_ok=True)
    total = len(sweep.scenarios()) + len(sweep.ideal_jobs())
    profiler = cProfile.Profile() if profile is not None else None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
    ) as progress:
        task = progress.add_task("convergence", total=total, last="")

        def done(job: Scenario | IdealJob, seconds: float) -> None:
            progress.update(task, advance=1, last=f"{_label(job)} ({seconds:.1f}s)")

        if profiler is not None:
            profiler.enable()
        result = run_sweep(sweep, jobs=jobs, in_process=profiler is not None, on_done=done)
        if profiler is not None:
            profiler.disable()
    write_json(out / "convergence.json", result.document, compact=True)
    summary = {key: value for key, value in result.document.items() if key != "runs"}
    write_json(out / "summary.json", summary)
    write_json(out / "timings.json", result.timings)
    if result.document["interrupted"]:
        return result  # the caller says so; tables and plots of a partial grid mislead
    console.print(rounds_table(result.document))
    console.print(bytes_table(result.document))
    console.print(goals_table(result.document))
    console.print(timings_table(result.timings))
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        console.print(text.getvalue(), markup=False, highlight=False)
    if plots:
        for path in write_plots(result.document, out):
            console.print(f"wrote {path}")
    console.print(f"wrote convergence.json, summary.json and timings.json in {out}")
    return result
