"""``sphaera bench convergence``: run a sweep with a progress bar, write it all, show it.

The progress bar, the profile and the names of the files written go to the status
console (stderr, for the command); the report goes to stdout in one of three formats
(:data:`FORMATS`), so that ``--format json | jq`` and ``--format markdown > file`` work.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .plots import write_plots
from .pools import InProcess, Pool
from .report import markdown_report, rich_report
from .runner import Scenario
from .sweep import IdealJob, Sweep, SweepResult, run_sweep

__all__ = ["FORMATS", "Sweep", "json_text", "run_convergence", "show", "write_json"]

#: How the report can be shown: rich tables, Markdown, or the convergence.json document.
FORMATS: Final = ("table", "markdown", "json")


def json_text(value: Any, *, compact: bool = False) -> str:
    """``value`` as stable JSON (sorted keys), so that equal results give equal text."""
    text = (
        json.dumps(value, sort_keys=True, separators=(",", ":"))
        if compact
        else json.dumps(value, indent=1, sort_keys=True)
    )
    return text + "\n"


def write_json(path: Path, value: Any, *, compact: bool = False) -> None:
    """Write ``value`` as stable JSON (sorted keys), so equal results give equal files."""
    path.write_text(json_text(value, compact=compact), encoding="utf-8")


def _label(job: Scenario | IdealJob) -> str:
    if isinstance(job, IdealJob):
        return f"ideal N={job.replicas} f={job.fanout} loss={job.loss:g}"
    text = f"{job.strategy} N={job.replicas} f={job.fanout} loss={job.loss:g}"
    if job.partition:
        text += f" part={job.partition}"
    if job.crashes:
        text += f" crash={job.crashes}"
    return text + f" #{job.trial + 1}"


def run_convergence(
    sweep: Sweep,
    *,
    out: Path,
    pool: Pool,
    plots: bool,
    profile: Path | None,
    console: Console,
) -> SweepResult:
    """Run ``sweep`` and write into ``out``: ``convergence.json`` (every figure of every
    run, compact), ``summary.json`` (the same without the runs: summary, goals, ideal
    epidemic), ``timings.json`` (wall-clock times, the one part that differs between two
    sweeps of one seed) and the plots. The runs go to ``pool`` (this process, whatever
    the pool, with ``profile``). ``console`` shows the progress and the files written;
    :func:`show` prints the report.

    An interrupted sweep (``KeyboardInterrupt``) writes the three JSON files of the runs
    that finished, marked ``"interrupted": true``, and no plots."""
    out.mkdir(parents=True, exist_ok=True)
    total = len(sweep.scenarios()) + len(sweep.ideal_jobs())
    profiler = cProfile.Profile() if profile is not None else None
    with Progress(
        # narrow, so that the bar and the last run finished fit 80 columns
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        disable=not console.is_terminal,  # a log gets the files written, not a bar
    ) as progress:
        task = progress.add_task("convergence", total=total, last="")

        def done(job: Scenario | IdealJob, seconds: float) -> None:
            progress.update(task, advance=1, last=f"{_label(job)} {seconds:.1f}s")

        if profiler is not None:
            profiler.enable()
        result = run_sweep(sweep, pool=pool if profiler is None else InProcess(), on_done=done)
        if profiler is not None:
            profiler.disable()
    write_json(out / "convergence.json", result.document, compact=True)
    summary = {key: value for key, value in result.document.items() if key != "runs"}
    write_json(out / "summary.json", summary)
    write_json(out / "timings.json", result.timings)
    if result.document["interrupted"]:
        return result  # the caller says so; plots of a partial grid would mislead
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


def show(result: SweepResult, format: str, console: Console) -> None:
    """Print the report of ``result`` on ``console`` as ``format`` (one of :data:`FORMATS`):
    ``json`` prints the convergence.json document itself (compact, one line)."""
    if format == "json":
        console.out(json_text(result.document, compact=True), end="", highlight=False)
    elif format == "markdown":
        text = markdown_report(result.document, result.timings)
        console.out(text, end="", highlight=False)
    elif format == "table":
        console.print(rich_report(result.document, result.timings, width=console.width))
    else:
        raise ValueError(f"unknown format {format!r}: one of {', '.join(FORMATS)}")
