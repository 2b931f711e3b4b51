"""Sweeps: every combination of sizes, fanouts, loss and so on, run and summarised.

A sweep is a grid of :class:`~sphaera_crdt.sim.runner.Scenario` objects (one per strategy,
trial and combination of the swept values) plus the ideal epidemic at every size, fanout
and loss. Runs are independent and seeded, so they can go to any pool (:mod:`.pools`: this
process, local worker processes, a Ray cluster) in any order: the document is assembled
sorted by scenario, and two sweeps with one seed write identical JSON, whoever ran them.
Wall-clock timings are the one thing that differs between two sweeps; they are kept apart
(:attr:`SweepResult.timings`).

``naive`` floods every update to every replica: ``O(N^2)`` messages per change, so it is
skipped above ``naive_max`` replicas (the summary says so); it ignores the fanout, so it
runs once per combination of the other values.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from .epidemic import Mode, spread
from .goals import evaluate_goals
from .measurements import Distribution
from .pools import InProcess, Pool
from .runner import Scenario, run_scenario
from .strategies import STRATEGIES

__all__ = ["IdealJob", "Sweep", "SweepResult", "run_sweep", "summarise"]

VERSION: Final = 1
#: Fields that name a group of runs (the trial is what varies inside a group).
GROUP_FIELDS: Final = (
    "strategy",
    "replicas",
    "fanout",
    "loss",
    "partition",
    "crashes",
    "entities",
    "changes",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """The grid of a convergence benchmark."""

    replicas: tuple[int, ...] = (10, 100)
    fanouts: tuple[int, ...] = (1, 2, 3)
    losses: tuple[float, ...] = (0.0, 0.1)
    partitions: tuple[int, ...] = (0,)
    crashes: tuple[int, ...] = (0,)
    entities: tuple[int, ...] = (20,)
    changes: tuple[int, ...] = (10,)
    strategies: tuple[str, ...] = STRATEGIES
    trials: int = 3
    seed: int = 0
    duplicate: float = 0.0
    reorder: float = 0.0
    ideal_trials: int = 200
    naive_max: int = 200

    def __post_init__(self) -> None:
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies: {', '.join(sorted(unknown))}")
        if self.trials < 1 or self.ideal_trials < 1:
            raise ValueError("trials and ideal trials must be at least 1")
        for name in ("replicas", "fanouts", "losses", "entities", "changes"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")

    def scenarios(self) -> list[Scenario]:
        """Every run of the sweep (naive once per fanout-free combination)."""
        runs: list[Scenario] = []
        for replicas in self.replicas:
            for entities in self.entities:
                for changes in self.changes:
                    for loss in self.losses:
                        for partition in self.partitions:
                            for crashes in self.crashes:
                                for strategy in self.strategies:
                                    runs.extend(
                                        self._trials(
                                            strategy,
                                            replicas=replicas,
                                            entities=entities,
                                            changes=changes,
                                            loss=loss,
                                            partition=partition,
                                            crashes=crashes,
                                        )
                                    )
        return runs

    def _trials(self, strategy: str, **values: Any) -> Iterable[Scenario]:
        if strategy == "naive" and values["replicas"] > self.naive_max:
            return
        fanouts = self.fanouts[:1] if strategy == "naive" else self.fanouts
        for fanout in fanouts:
            for trial in range(self.trials):
                yield Scenario(
                    strategy=strategy,
                    fanout=fanout,
                    duplicate=self.duplicate,
                    reorder=self.reorder,
                    seed=self.seed,
                    trial=trial,
                    trace=trial == 0,
                    **values,
                )

    def ideal_jobs(self) -> list[IdealJob]:
        """The ideal epidemic at every size, fanout, loss and change count."""
        return [
            IdealJob(
                replicas=replicas,
                fanout=fanout,
                loss=loss,
                rumors=max(1, changes),
                trials=self.ideal_trials,
                seed=self.seed,
            )
            for replicas in self.replicas
            for fanout in self.fanouts
            for loss in self.losses
            for changes in self.changes
        ]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdealJob:
    """Trials of the ideal epidemic at one size, fanout and loss."""

    replicas: int
    fanout: int
    loss: float
    rumors: int
    trials: int
    seed: int


def run_ideal(job: IdealJob) -> dict[str, Any]:
    """Both ideal epidemics (push-pull and push) for one job."""
    figures: dict[str, Any] = asdict(job)
    modes: tuple[Mode, ...] = ("push-pull", "push")
    for mode in modes:
        rng = random.Random(
            f"sphaera-sim/{job.seed}/ideal/{job.replicas}/{job.fanout}/{job.loss}/"
            f"{job.rumors}/{mode}"
        )
        trials = [
            spread(job.replicas, job.fanout, job.rumors, rng, mode=mode, loss=job.loss)
            for _ in range(job.trials)
        ]
        figures[mode] = {
            "rounds": Distribution.of(trial.rounds for trial in trials).to_json(),
            "per_rumor": Distribution.of(
                rounds for trial in trials for rounds in trial.per_rumor
            ).to_json(),
        }
    return figures


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepResult:
    """The JSON document of a sweep (deterministic) and the wall-clock timings (not)."""

    document: dict[str, Any]
    timings: dict[str, Any]


Job = Scenario | IdealJob


def _run(job: Job) -> tuple[Job, dict[str, Any], int, float]:
    started = time.perf_counter()
    if isinstance(job, Scenario):
        result = run_scenario(job)
        return job, result.figures, result.events, time.perf_counter() - started
    return job, run_ideal(job), 0, time.perf_counter() - started


def _cost(job: Job) -> float:
    """A rough relative cost, so that the longest runs start first."""
    if isinstance(job, IdealJob):
        return job.replicas * job.fanout * job.trials / 1000
    weight = {"naive": job.replicas / 10, "gossip": 3.0, "full-state": 2.0}.get(job.strategy, 1.0)
    return job.replicas * max(1, job.fanout) * weight * (1 + job.entities / 1000)


Outcome = tuple[Job, dict[str, Any], int, float]


def run_sweep(
    sweep: Sweep,
    *,
    pool: Pool | None = None,
    on_done: Callable[[Job, float], None] | None = None,
    runner: Callable[[Job], Outcome] = _run,
) -> SweepResult:
    """Run every scenario and ideal epidemic of ``sweep``.

    The runs go to ``pool`` (see :mod:`.pools`), longest first; whichever pool runs them,
    the document is the same.

    A :class:`KeyboardInterrupt` (Ctrl-C, or SIGTERM translated by the caller) stops the
    sweep: the runs not started are cancelled, the workers stopped, and the result holds
    the runs that finished, with ``document["interrupted"]`` true.

    Args:
        sweep: The grid.
        pool: Where the runs go; ``None`` runs them in this process, one after another.
        on_done: Called with each finished job and its wall time, in completion order.
        runner: Runs one job (a module-level function, so that workers can unpickle it).

    Raises:
        PoolUnavailable: The pool cannot run anything (Ray missing or unreachable).
    """
    pool = InProcess() if pool is None else pool
    work: list[Job] = [*sweep.scenarios(), *sweep.ideal_jobs()]
    work.sort(key=_cost, reverse=True)
    started = time.perf_counter()
    done: list[Outcome] = []

    def finished(outcome: Outcome) -> None:
        done.append(outcome)
        if on_done is not None:
            on_done(outcome[0], outcome[3])

    interrupted = False
    workers: int | None = None  # as the pool reports it once done (unknown if interrupted)
    try:
        workers = pool.run(work, runner, finished)
    except KeyboardInterrupt:
        interrupted = True
    return _result(
        sweep, done, pool=pool.name, workers=workers, started=started, interrupted=interrupted
    )


def _result(
    sweep: Sweep,
    done: list[Outcome],
    *,
    pool: str,
    workers: int | None,
    started: float,
    interrupted: bool,
) -> SweepResult:
    """The document and timings of the finished runs."""
    runs = sorted(
        (
            {"scenario": job.to_json(), "figures": figures}
            for job, figures, _, _ in done
            if isinstance(job, Scenario)
        ),
        key=_scenario_key,
    )
    ideal = sorted(
        (figures for job, figures, _, _ in done if isinstance(job, IdealJob)),
        key=lambda item: (item["replicas"], item["fanout"], item["loss"], item["rumors"]),
    )
    summary = summarise(runs)
    document = {
        "version": VERSION,
        "sweep": sweep.to_json(),
        "summary": summary,
        "goals": evaluate_goals(summary, ideal),
        "ideal": ideal,
        "interrupted": interrupted,
        "runs": runs,
    }
    timings = {
        "pool": pool,
        "jobs": workers,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "runs": sorted(
            (
                {
                    **{name: getattr(job, name) for name in GROUP_FIELDS},
                    "trial": job.trial,
                    "events": events,
                    "seconds": round(seconds, 3),
                }
                for job, _, events, seconds in done
                if isinstance(job, Scenario)
            ),
            key=lambda item: tuple(str(item[name]) for name in (*GROUP_FIELDS, "trial")),
        ),
    }
    return SweepResult(document=document, timings=timings)


def _scenario_key(run: dict[str, Any]) -> tuple[Any, ...]:
    scenario = run["scenario"]
    return (
        STRATEGIES.index(scenario["strategy"]),
        *(scenario[name] for name in GROUP_FIELDS[1:]),
        scenario["trial"],
    )


def _mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(sum(present) / len(present), 6) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of trials: means and distributions of the runs' figures."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        scenario = run["scenario"]
        key = tuple(scenario[name] for name in GROUP_FIELDS)
        groups.setdefault(key, []).append(run["figures"])
    rows = []
    for key, trials in groups.items():
        row: dict[str, Any] = dict(zip(GROUP_FIELDS, key, strict=True))
        if row["strategy"] == "naive":
            row["fanout"] = None  # naive sends to every peer
        converged = [figures for figures in trials if figures["converged"]]
        row.update(
            trials=len(trials),
            converged=len(converged),
            state_rounds=Distribution.of(f["state"]["rounds"] for f in converged).to_json(),
            status_rounds=Distribution.of(f["status"]["rounds"] for f in converged).to_json(),
            state_time=_mean(f["state"]["time"] for f in converged),
            status_time=_mean(f["status"]["time"] for f in converged),
            change_rounds=Distribution.of(
                rounds for f in trials for rounds in f["change_rounds"]
            ).to_json(),
            bytes_to_state=_mean(
                f["traffic_to_state"]["bytes"] for f in converged if f["traffic_to_state"]
            ),
            messages_to_state=_mean(
                f["traffic_to_state"]["messages"] for f in converged if f["traffic_to_state"]
            ),
            bytes_episode=_mean(f["traffic_episode"]["bytes"] for f in trials),
            messages_episode=_mean(f["traffic_episode"]["messages"] for f in trials),
            bytes_per_change=_mean(f["bytes_per_change"] for f in trials),
            bytes_per_change_per_replica=_mean(f["bytes_per_change_per_replica"] for f in trials),
            raw_diff_per_change=_mean(f["raw_diff_per_change"] for f in trials),
            payload_ratio=_mean(f["payload_ratio"] for f in trials),
            payload_ratio_to_state=_mean(f["payload_ratio_to_state"] for f in converged),
            delivered_ratio_to_state=_mean(f["delivered_ratio_to_state"] for f in converged),
            envelope_per_message=_mean(f["envelope_per_message"] for f in trials),
            idle_bytes_per_round=_mean(f["idle_bytes_per_round"] for f in trials),
            flips=_mean(f["flips"]["total"] for f in trials),
            flips_per_replica_entity=_mean(f["flips"]["per_replica_entity"] for f in trials),
            flips_max=max(f["flips"]["max_per_replica_entity"] for f in trials),
            partition_window_state=_mean(
                f["partition_window"]["state"] for f in trials if f["partition_window"]
            ),
            partition_window_status=_mean(
                f["partition_window"]["status"] for f in trials if f["partition_window"]
            ),
        )
        rows.append(row)
    return rows
