"""One simulated run, start to finish, and the figures it yields.

Timeline of a run (``I`` is the gossip interval):

* ``0``: every replica holds the base state; rounds start (first at ``I/2..I``).
* ``warmup * I``: every change of the workload is made at its writer, one transaction
  each, in one instant. A partition, if any, formed ``I/4`` earlier and heals
  ``partition_rounds * I`` after the changes; crashing replicas go down ``I/2`` after the
  changes and come back ``crash_rounds * I`` later.
* The run goes on until every replica holds identical state and agrees on every status,
  and the partition and crash schedule is over (or gives up ``max_rounds * I`` after it).
* Then ``settle_rounds`` more intervals (the traffic a change still causes after
  agreement) and ``idle_rounds`` intervals whose traffic is the cost of an idle cluster.

Every random choice comes from a generator seeded with a string naming the seed, the trial,
the sizes and its purpose, so two strategies run on the same workload, partition and crash
plan, and a run is repeatable in any process.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import pycrdt

from .clock import EventLoop
from .cluster import SimCluster
from .driver import Timing
from .identity import IdentitySource
from .measurements import AgreementTracker
from .network import LinkModel, Network, Partition, Traffic
from .strategies import STRATEGIES, make_strategy
from .workload import build_workload

__all__ = ["RunResult", "Scenario", "Simulation", "run_scenario"]

#: The rounds figures are rounded to this many digits (floating noise stays out of JSON).
DIGITS: Final = 6
#: Agreement traces are thinned to about this many points.
TRACE_POINTS: Final = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Everything one run depends on.

    Attributes:
        strategy: One of :data:`~sphaera_crdt.sim.strategies.STRATEGIES`.
        replicas: Number of replicas.
        fanout: Peers per round.
        loss: Probability that a message is lost.
        duplicate: Probability that a message arrives twice.
        reorder: Probability that a message is held back (and overtaken).
        entities: Entities of the base state.
        changes: Changes made in the burst.
        partition: Groups of the partition during the burst (0: none).
        partition_rounds: Intervals the partition lasts after the changes.
        crashes: Replicas that crash during the burst; every other one keeps a store.
        crash_rounds: Intervals a crashed replica stays down.
        interval: The gossip interval in simulated seconds.
        seed: The seed of every random choice.
        trial: Repetition number (changes the draws, not the sizes).
        trace: Record agreement over time.
    """

    strategy: str = "gossip"
    replicas: int = 10
    fanout: int = 2
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    entities: int = 20
    changes: int = 10
    partition: int = 0
    partition_rounds: float = 5.0
    crashes: int = 0
    crash_rounds: float = 3.0
    interval: float = 1.0
    warmup_rounds: float = 2.0
    settle_rounds: float = 2.0
    idle_rounds: float = 3.0
    max_rounds: float = 60.0
    seed: int = 0
    trial: int = 0
    trace: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.replicas < 2:
            raise ValueError("a simulation needs at least two replicas")
        if self.partition == 1 or self.partition < 0:
            raise ValueError("a partition has at least two groups (0 for none)")
        if not 0 <= self.crashes <= self.replicas:
            raise ValueError("crashes must be between 0 and the number of replicas")
        if self.changes < 0 or self.entities < 1:
            raise ValueError("need at least one entity and a non-negative change count")

    def rng(self, purpose: str, *extra: object) -> random.Random:
        """A generator for one purpose; its seed names everything the draws depend on."""
        parts = [self.seed, self.trial, self.replicas, self.entities, self.changes, *extra]
        return random.Random("sphaera-sim/" + "/".join(map(str, parts)) + "/" + purpose)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """The figures of one run (JSON-ready) and what it cost to compute them."""

    figures: dict[str, Any]
    events: int


def _rounds(since: float | None, start: float, interval: float) -> float | None:
    if since is None:
        return None
    return max(0, math.ceil(round((since - start) / interval, DIGITS)))


def _traffic(diff: Traffic | None) -> dict[str, int] | None:
    if diff is None:
        return None
    return {field.name: getattr(diff, field.name) for field in fields(diff)}


class Simulation:
    """One scenario's replicas, network, strategy and tracker, built and ready to run.

    Tests inspect :attr:`cluster` and :attr:`network` after :meth:`run`.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        size = scenario.replicas
        self.loop = loop = EventLoop()
        identities = IdentitySource(scenario.rng("identity"))
        self.workload = build_workload(
            replicas=size,
            entities=scenario.entities,
            changes=scenario.changes,
            rng=scenario.rng("workload"),
            identities=identities,
        )
        plan = scenario.rng("plan", scenario.crashes)
        self.victims = sorted(plan.sample(range(size), scenario.crashes))
        self.cluster = cluster = SimCluster(
            loop, size, self.workload, identities, durable=frozenset(self.victims[::2])
        )
        model = LinkModel(
            loss=scenario.loss, duplicate=scenario.duplicate, reorder=scenario.reorder
        )
        self.network = Network(
            loop,
            size,
            model,
            scenario.rng("network", scenario.loss, scenario.duplicate, scenario.reorder),
            is_up=lambda index: cluster.nodes[index].up,
            incarnation=lambda index: cluster.nodes[index].incarnation,
        )
        state, statuses = cluster.initial()
        self.tracker = AgreementTracker(
            size,
            self.workload.entity_ids,
            statuses,
            state,
            self.network.traffic,
            loop.clock,
            trace=scenario.trace,
        )
        cluster.attach(self.tracker)
        timing = Timing(interval=scenario.interval, fanout=scenario.fanout)
        self.strategy = make_strategy(
            scenario.strategy,
            cluster,
            self.network,
            timing,
            scenario.rng("gossip", scenario.fanout),
        )
        cluster.on_local_change = self.strategy.local_change
        cluster.on_crash = self.strategy.crashed
        cluster.on_restart = self.strategy.restarted
        self._applied: list[bool] = []
        self._began = Traffic()

    def _schedule(self) -> tuple[float, float, float | None]:
        """Schedule the changes, partition and crashes: (start, last event, heal time)."""
        scenario = self.scenario
        interval = scenario.interval
        start = scenario.warmup_rounds * interval
        last = start
        heal: float | None = None
        if scenario.partition:
            heal = start + scenario.partition_rounds * interval
            partition = Partition(start=start - interval / 4, end=heal, groups=scenario.partition)
            self.network.schedule(partition)
            last = max(last, heal)
        for victim in self.victims:
            down = start + interval / 2
            up = down + scenario.crash_rounds * interval
            self.loop.at(down, self.cluster.crash, victim)
            self.loop.at(up, self.cluster.restart, victim)
            last = max(last, up)
        self.loop.at(start, self._begin)
        return start, last, heal

    def _begin(self) -> None:
        self._began = self.network.traffic.snapshot()
        self.tracker.counting_from = self.loop.now
        changes = range(len(self.workload.changes))
        self._applied.extend(self.cluster.write(number) for number in changes)

    def run(self) -> RunResult:
        """Run to agreement (or the limit), then the settle and idle rounds."""
        scenario = self.scenario
        interval = scenario.interval
        loop, tracker, traffic = self.loop, self.tracker, self.network.traffic
        start, last, heal = self._schedule()
        self.strategy.start()

        def converged(now: float) -> bool:
            tracker.settled(now)
            return now >= last and tracker.state.agreed and tracker.status.agreed

        def follow(now: float) -> bool:
            tracker.settled(now)
            return False

        done = loop.run(last + scenario.max_rounds * interval, converged)
        loop.run(loop.now + scenario.settle_rounds * interval, follow)
        idle_from = traffic.snapshot()
        loop.run(loop.now + scenario.idle_rounds * interval, follow)
        idle = traffic.minus(idle_from)
        figures = self._figures(done, start, heal, idle_from.minus(self._began), idle)
        figures["traffic_total"] = _traffic(traffic)
        return RunResult(figures=figures, events=loop.processed)

    def _figures(
        self, done: bool, start: float, heal: float | None, episode: Traffic, idle: Traffic
    ) -> dict[str, Any]:
        scenario, tracker = self.scenario, self.tracker
        interval = scenario.interval
        size = scenario.replicas
        state_at = tracker.state.since if done else None
        status_at = tracker.status.since if done else None
        to_state = (
            tracker.state.traffic.minus(self._began) if done and tracker.state.traffic else None
        )
        made = sum(self._applied)
        written = self.cluster.written
        raw = len(pycrdt.merge_updates(*written)) if written else 0
        receivers = made * (size - 1)
        flips, flips_max = tracker.flips_until(status_at)
        per_change = [_rounds(track.done, track.made, interval) for track in tracker.changes]
        figures: dict[str, Any] = {
            "converged": done,
            "changes_made": made,
            "state": {
                "time": _since(state_at, start),
                "rounds": _rounds(state_at, start, interval),
            },
            "status": {
                "time": _since(status_at, start),
                "rounds": _rounds(status_at, start, interval),
            },
            "change_rounds": [rounds for rounds in per_change if rounds is not None],
            "changes_unfinished": sum(1 for rounds in per_change if rounds is None),
            "traffic_to_state": _traffic(to_state),
            "traffic_episode": _traffic(episode),
            "idle_bytes_per_round": round(idle.bytes / scenario.idle_rounds, DIGITS),
            "idle_messages_per_round": round(idle.messages / scenario.idle_rounds, DIGITS),
            "raw_diff_bytes": raw,
            "raw_diff_per_change": _ratio(raw, made),
            "bytes_per_change": _ratio(to_state.bytes, made) if to_state else None,
            "bytes_per_change_per_replica": _ratio(to_state.bytes, receivers) if to_state else None,
            "payload_ratio_to_state": _ratio(to_state.payload, (size - 1) * raw)
            if to_state
            else None,
            "payload_ratio": _ratio(episode.payload, (size - 1) * raw),
            "delivered_ratio_to_state": _ratio(to_state.delivered_payload, (size - 1) * raw)
            if to_state
            else None,
            "envelope_per_message": _ratio(episode.bytes - episode.payload, episode.messages),
            "flips": {
                "total": flips,
                "max_per_replica_entity": flips_max,
                "per_replica_entity": _ratio(flips, size * len(self.workload.entities)),
            },
            "partition_window": None
            if heal is None
            else {
                "state": _since(state_at, heal, floor=0.0),
                "status": _since(status_at, heal, floor=0.0),
            },
            "rounds_run": self.strategy.rounds_run,
        }
        if scenario.trace:
            figures["trace"] = _thin(
                [
                    [
                        round((sample.time - start) / interval, DIGITS),
                        round(sample.state, DIGITS),
                        round(sample.status, DIGITS),
                        round(sample.delivered, DIGITS),
                    ]
                    for sample in tracker.series
                    if sample.time >= start
                ]
            )
            if status_at is not None:
                times = tracker.final_view_times(start, status_at)
                figures["final_view_trace"] = _thin(
                    [
                        [round((time - start) / interval, DIGITS), round((rank + 1) / size, DIGITS)]
                        for rank, time in enumerate(times)
                    ]
                )
        return figures


def run_scenario(scenario: Scenario) -> RunResult:
    """Run one scenario to the end and return its figures."""
    return Simulation(scenario).run()


def _since(time: float | None, origin: float, *, floor: float | None = None) -> float | None:
    if time is None:
        return None
    elapsed = time - origin
    if floor is not None:
        elapsed = max(floor, elapsed)
    return round(elapsed, DIGITS)


def _thin(points: list[list[float]], buckets: int = TRACE_POINTS) -> list[list[float]]:
    """At most about ``buckets`` points: the last of each equal slice of the time span."""
    if len(points) <= buckets:
        return points
    first, last = points[0][0], points[-1][0]
    width = (last - first) / buckets or 1.0
    kept: dict[int, list[float]] = {}
    for point in points:
        kept[int((point[0] - first) / width)] = point
    return [points[0], *kept.values()]


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if not denominator else round(numerator / denominator, DIGITS)
