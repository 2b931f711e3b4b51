"""``sphaera bench``: benchmarks on the deterministic simulator."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import click
from click.core import ParameterSource

from ..errors import PoolUnavailable
from .app import BadConfig, Fail

if TYPE_CHECKING:
    from ..sim.pools import Pool

__all__ = ["bench"]

#: Exit status of an interrupted sweep (as a shell reports a process ended by SIGINT).
EXIT_INTERRUPTED: Final = 130

T = TypeVar("T")


class Interrupted(Fail):
    """A sweep stopped by Ctrl-C or SIGTERM, after saving what it finished: exit 130."""

    exit_code = EXIT_INTERRUPTED


def _list_of(
    kind: Callable[[str], T],
) -> Callable[[click.Context, click.Parameter, str], tuple[T, ...]]:
    """A click callback that reads a comma-separated list."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[T, ...]:
        try:
            items = tuple(kind(item.strip()) for item in value.split(",") if item.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, not {value!r}") from None
        if not items:
            raise click.BadParameter("expected at least one value")
        return items

    return parse


@click.group()
def bench() -> None:
    """Benchmarks on the deterministic simulator."""


@bench.command("convergence")
@click.option(
    "--replicas",
    default="10,100",
    show_default=True,
    callback=_list_of(int),
    help="Replica counts N, comma-separated.",
)
@click.option(
    "--fanout",
    default="1,2,3",
    show_default=True,
    callback=_list_of(int),
    help="Gossip fanouts, comma-separated.",
)
@click.option(
    "--loss",
    default="0,0.1",
    show_default=True,
    callback=_list_of(float),
    help="Message loss probabilities, comma-separated.",
)
@click.option(
    "--partition",
    default="0",
    show_default=True,
    callback=_list_of(int),
    help="Partition group counts during the changes (0: none), comma-separated.",
)
@click.option(
    "--crashes",
    default="0",
    show_default=True,
    callback=_list_of(int),
    help="Replicas that crash during the changes (half keep a store), comma-separated.",
)
@click.option(
    "--entities",
    default="20",
    show_default=True,
    callback=_list_of(int),
    help="Entities in the base state, comma-separated.",
)
@click.option(
    "--changes",
    default="10",
    show_default=True,
    callback=_list_of(int),
    help="Changes made in the burst, comma-separated.",
)
@click.option(
    "--strategies",
    default="gossip,gossip-rounds,full-state,naive",
    show_default=True,
    callback=_list_of(str),
    help="Strategies to compare (the ideal epidemic always runs).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs per combination (different draws, same sizes).",
)
@click.option(
    "--ideal-trials",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Runs of the ideal epidemic per N, fanout and loss.",
)
@click.option(
    "--duplicate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a message arrives twice.",
)
@click.option(
    "--reorder",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a message is held back and overtaken.",
)
@click.option(
    "--naive-max",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Skip naive forwarding above this N (it sends O(N^2) messages).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every draw.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Local worker processes (a fresh one per run).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Deprecated: the former name of --workers.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run on the Ray cluster at ADDRESS instead (auto, HOST:PORT, ray://HOST:PORT, or "
    "local to start one here); needs the [ray] extra.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the JSON files and the PNG plots.",
)
@click.option("--no-plots", is_flag=True, help="Write JSON only.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "markdown", "json"]),
    help="How to print the results: tables for a terminal (the default on one), Markdown "
    "(the default otherwise), or the convergence.json document.",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run in this process under cProfile and write the stats to this file.",
)
def convergence(
    replicas: tuple[int, ...],
    fanout: tuple[int, ...],
    loss: tuple[float, ...],
    partition: tuple[int, ...],
    crashes: tuple[int, ...],
    entities: tuple[int, ...],
    changes: tuple[int, ...],
    strategies: tuple[str, ...],
    trials: int,
    ideal_trials: int,
    duplicate: float,
    reorder: float,
    naive_max: int,
    seed: int,
    workers: int,
    jobs: int | None,
    ray_address: str | None,
    out: Path,
    no_plots: bool,
    output_format: str | None,
    profile: Path | None,
) -> None:
    """Compare the gossip with full-state push-pull, naive forwarding and the ideal
    epidemic on simulated replicas: rounds and time to identical state and to status
    agreement, bytes, messages, status flips, the window after a partition heals.

    Writes OUT/convergence.json (every figure of every run; identical for one seed),
    OUT/summary.json (the same without the runs), OUT/timings.json (wall-clock run times)
    and PNG plots, and prints the tables and which goals were met (for each miss, why).
    The runs go to local worker processes, or with --ray to a Ray cluster: the same seed
    gives the same convergence.json either way. Progress and the files written go to
    stderr. Ctrl-C or SIGTERM stops the sweep: the runs that finished are saved, marked
    "interrupted", and the exit status is 130.
    """
    from rich.console import Console

    from ..sim import convergence_bench

    pool = _pool(workers, jobs, ray_address, profile)

    try:
        sweep = convergence_bench.Sweep(
            replicas=replicas,
            fanouts=fanout,
            losses=loss,
            partitions=partition,
            crashes=crashes,
            entities=entities,
            changes=changes,
            strategies=strategies,
            trials=trials,
            seed=seed,
            duplicate=duplicate,
            reorder=reorder,
            ideal_trials=ideal_trials,
            naive_max=naive_max,
        )
    except ValueError as exc:
        raise BadConfig(str(exc)) from None
    output = Console()
    status = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = convergence_bench.run_convergence(
            sweep, out=out, pool=pool, plots=not no_plots, profile=profile, console=status
        )
    except PoolUnavailable as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:
        raise Fail(f"cannot write results: {exc}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.document["interrupted"]:
        finished = len(result.document["runs"])
        raise Interrupted(
            f"interrupted after {finished} of {len(sweep.scenarios())} runs; "
            f"the finished ones are in {out / 'convergence.json'}"
        )
    if output_format is None:
        output_format = "table" if output.is_terminal else "markdown"
    convergence_bench.show(result, output_format, output)


def _pool(workers: int, jobs: int | None, ray_address: str | None, profile: Path | None) -> Pool:
    """Where the runs go, from the options (``--jobs`` is the former ``--workers``)."""
    from ..sim import pools

    context = click.get_current_context()
    workers_given = context.get_parameter_source("workers") is not ParameterSource.DEFAULT
    if jobs is not None:
        if workers_given:
            raise BadConfig("--jobs is the former name of --workers: give one of them")
        click.echo("sphaera: warning: --jobs is deprecated; use --workers", err=True)
        workers, workers_given = jobs, True
    if ray_address is None:
        return pools.ProcessPool(workers=workers)
    if workers_given:
        raise BadConfig("--workers counts local processes: with --ray the cluster decides")
    if profile is not None:
        raise BadConfig("--profile runs the sweep in this process: it cannot go with --ray")
    try:
        return pools.RayPool(address=ray_address)
    except ValueError as exc:
        raise BadConfig(str(exc)) from None


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a sweep as Ctrl-C does, so that it saves the runs it finished."""
    raise KeyboardInterrupt
