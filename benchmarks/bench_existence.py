"""Existence benchmark: full and incremental derivation on random dependency graphs.

Run it from the repository root::

    python benchmarks/bench_existence.py                  # 1k, 10k and 100k entities
    python benchmarks/bench_existence.py --quick          # 1k only, a few seconds
    python benchmarks/bench_existence.py --json out.json  # also write every figure as JSON
    python benchmarks/bench_existence.py --sizes 1000,10000 --seed 7 --changes 600
    python benchmarks/bench_existence.py --families= --growth 2000   # the growth rows only

Workload
    Two families of graphs, built deterministically from ``--seed`` and the size. The
    *dag* family: entity ``i`` depends (``exists``) on one to three earlier entities; each
    dependency is, with chance 60%, an earlier member of its own application (blocks of
    64 consecutive ids), otherwise any earlier entity (shared infrastructure, so early
    entities become hubs). 0.5% are roots and 5% have no dependency. 70% of the rules are
    ``all_of``, 15% ``at_least(k-1)`` and 15% ``any_of`` over their dependencies; 10% also
    require a fresh observation of one of ``n/20`` hosts, 5% compare the ``tier``
    attribute of their first dependency. The *cyclic* family is the same graph plus
    back-edges that close cycles: for about 2.5% of the entities, a dependency at most
    16 ids earlier also names it, two thirds as a failover (``any_of(own rule,
    exists(dependent))``, a positive cycle with outside support) and one third negated
    (``any_of(own rule, not exists(dependent))``, a cycle through ``not``). Components
    stay small (the table prints their count and the largest) and are solved by the
    alternating fixpoint; a negated one is undetermined while its own rule fails.

Setup (timed and printed, never part of a figure)
    Source replicas ("teams") each declare a block of 500 consecutive entities through
    ``Replica.declare``, in reverse order, and another replica observes every host; the
    replica under test is restored from all their deltas with ``Replica.restore`` (the
    start-up path of a node). The collector is off while the state is built, and the
    result is frozen (``gc.freeze``) so that later collections skip it.

The figures, for each family and size:

full derivation
    ``ExistenceEngine(view, id, predicates).recompute(now)`` on the replica's merged view:
    indexing every rule, splitting the graph into components, levelling and evaluating.
    A rule is checked and compiled once per record version and kept with it (the replica's
    own engine compiled them at the restore), so this is what every full derivation but
    the first costs, and what the goal is judged on. Only ``recompute`` is timed (median
    of ``--reps``: by default 21 up to 1k entities, 11 up to 10k, 5 above, enough for a
    median on a shared machine): the engine it filled is released after the clock stops,
    as the baseline's result is (a replica keeps its engine; freeing one is not deriving).
first derivation
    The same after the compiled rules were dropped (outside the timed section), so that it
    also checks and compiles every rule from its JSON data, as the first derivation after
    a restore does. Printed beside, with its ratio to the same baseline.
topo-AND baseline
    The same graph evaluated by plain Python: Kahn's topological sort over the ``exists``
    edges (dict of id -> list of ids, in-degree and reverse lists built inside the timed
    section) and ``value[n] = all(value[d] for d in deps[n])``. It reads no observation,
    attribute, ``any`` or ``not``; for the cyclic family it runs on the DAG part (the
    back-edges dropped), since Kahn's algorithm cannot order a cycle. Goal: full
    derivation at most 5x the baseline (ratio of median wall times; the ratio of median
    CPU times is printed beside it as a cross-check on a busy machine). The baseline is
    given its graph as a dict built outside the timed section: it parses nothing.
incremental
    A mix of single changes on the live replica, each one ``Replica`` call: ``observe``
    (a heartbeat of a watched host, 40%), ``update`` of the ``tier`` attribute (20%, half
    of them on entities whose attribute is read), ``retract`` of a random entity followed
    by its ``declare`` with the original record (10% + 10%), and a ``declare`` that adds
    an ``exists`` edge to an earlier entity followed by the one that removes it again
    (10% + 10%). *call* is the whole ``Replica`` call (CRDT write, merged view, engine,
    the ``Change`` events with their reasons, the returned view); *engine* is the part
    spent inside the engine, measured by wrapping ``record_changed``,
    ``observation_changed`` and ``step`` of the replica's engine (rule compilation and
    graph re-splitting happen in ``record_changed``); *step* is ``step`` alone. Each rep
    runs the same ``--changes`` calls with the collector off; the means are medians over
    ``--inc-reps`` reps of the per-rep mean, the percentiles pool every call.
speedup
    full derivation / mean incremental call (and / mean engine time). Goal at 100k
    entities: at least 100x, judged on the whole call.
evaluated per change
    ``replica._engine.evaluated`` after each call (entities the step solved): mean, p99.

upkeep growth
    Whether the engine's upkeep grows linearly: the time of a workload of N links and of
    4N (``--growth N``, default 2,000, quick 250, 0 skips them), medians of
    ``--growth-reps`` alternating reps (default 5, quick 3), each on a fresh replica,
    with the collector off. The workloads: a chain (link ``i`` requires
    ``exists(link i+1)``, the last link nothing) declared link by link through
    ``Replica.declare``, dependencies first, dependents first and in a random order; and a
    negative ring (link ``i`` requires ``not exists(link i+1)``) left open, built
    untimed, then the one declaration that closes it and turns every link undetermined
    (the step, its N events and their reasons). Goal: the time for 4N at most 5x the
    time for N.

After the incremental reps the live statuses are compared with a fresh recompute; a
difference is printed and makes the exit status 1. Goals print PASS or MISS from the
measurement. Timing: medians, ``gc.disable()`` after a collection around every timed
section, the engine, the first derivation and the baseline take turns in a rotating order;
the machine may be shared, so read CPU times in the JSON as a cross-check.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from benchenv import git

from sphaera_crdt import Replica, all_of, any_of, at_least, attr, exists, not_, observed
from sphaera_crdt.core.existence import ExistenceEngine

FULL_SIZES: Final = (1_000, 10_000, 100_000)
QUICK_SIZES: Final = (1_000,)
FAMILIES: Final = ("dag", "cyclic")
#: Simulated start time (seconds); the clock only moves when the benchmark moves it.
EPOCH: Final = 1_750_000_000.0
#: Observations stay fresh for the whole run, so no deadline passes by itself.
WITHIN: Final = 86_400.0
#: Entities form applications of this many consecutive ids (most dependencies stay inside).
GROUP: Final = 64
#: Entities declared by each source replica during setup.
SHARD: Final = 500
BACK_WINDOW: Final = 16
#: Chance that an entity closes a cycle with a close dependency (about 3% end up with one).
BACK_RATE: Final = 0.1
SPEEDUP_GOAL: Final = 100.0
SPEEDUP_SIZE: Final = 100_000
BASELINE_GOAL: Final = 5.0
#: The change mix of one round of ten calls (pairs are consecutive calls).
ROUND: Final = ("observe",) * 4 + ("update",) * 2 + ("retract",) + ("rewire",)
#: Upkeep growth: the base size, how many times larger the other size is, and the goal on
#: the ratio of their times (linear growth, with room for the noise of a shared machine).
GROWTH_SIZE: Final = 2_000
QUICK_GROWTH_SIZE: Final = 250
GROWTH_FACTOR: Final = 4
GROWTH_GOAL: Final = 5.0

Constraint = bool | dict[str, Any]


class SimClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- graphs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """One generated entity: its DAG dependencies (indices) and the shape of its rule."""

    deps: tuple[int, ...]
    shape: str  # "all", "any" or "at_least"
    host: int | None
    reads_attr: bool
    back: int | None = None
    negated: bool = False
    tier: int = 0


@dataclass(slots=True)
class Graph:
    """A generated workload: entities in index order, dependencies point to lower indices."""

    family: str
    ids: list[str]
    hosts: list[str]
    specs: list[Spec]

    def requires(self, index: int, extra: int | None = None) -> Constraint | None:
        """The ``requires`` of entity ``index``, with an extra ``exists`` edge if given."""
        spec = self.specs[index]
        deps = [*spec.deps, extra] if extra is not None else list(spec.deps)
        atoms = [exists(self.ids[dep]) for dep in deps]
        core: Constraint | None = None
        if len(atoms) == 1:
            core = atoms[0]
        elif atoms:
            if spec.shape == "any":
                core = any_of(*atoms)
            elif spec.shape == "at_least":
                core = at_least(len(atoms) - 1, *atoms)
            else:
                core = all_of(*atoms)
        clauses: list[Constraint] = []
        if spec.back is not None and core is not None:
            later = exists(self.ids[spec.back])
            clauses.append(any_of(core, not_(later) if spec.negated else later))
        elif core is not None:
            clauses.append(core)
        if spec.host is not None:
            clauses.append(observed(self.hosts[spec.host], within=WITHIN))
        if spec.reads_attr and spec.deps:
            clauses.append(attr(self.ids[spec.deps[0]], "tier", "le", 2))
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else all_of(*clauses)

    def attrs(self, index: int) -> dict[str, Any]:
        return {"tier": self.specs[index].tier, "zone": f"z{index % 5}"}

    def dag_deps(self) -> dict[str, list[str]]:
        """The ``exists`` edges without back-edges, by id (the baseline's input)."""
        ids = self.ids
        return {ids[i]: [ids[d] for d in spec.deps] for i, spec in enumerate(self.specs)}

    def edges(self) -> int:
        return sum(len(spec.deps) + (spec.back is not None) for spec in self.specs)

    def back_edges(self) -> tuple[int, int]:
        backs = [spec for spec in self.specs if spec.back is not None]
        return len(backs), sum(spec.negated for spec in backs)


def make_graph(family: str, size: int, seed: int) -> Graph:
    """The dag graph of ``size`` entities for ``seed``; ``cyclic`` adds back-edges to it."""
    rng = random.Random(f"graph:{seed}:{size}")
    hosts = [f"host-{index:05d}" for index in range(max(1, size // 20))]
    roots = max(8, size // 200)
    specs: list[Spec] = []
    for index in range(size):
        deps: list[int] = []
        if index >= roots and rng.random() >= 0.05:
            want = rng.choice((1, 1, 2, 2, 2, 3, 3))
            for _ in range(want):
                group_start = index - index % GROUP
                if group_start < index and rng.random() < 0.6:
                    dep = rng.randrange(group_start, index)
                else:
                    dep = rng.randrange(index)
                if dep not in deps:
                    deps.append(dep)
        roll = rng.random()
        shape = "all" if len(deps) < 2 or roll < 0.7 else "at_least" if roll < 0.85 else "any"
        host = rng.randrange(len(hosts)) if rng.random() < 0.10 else None
        reads_attr = bool(deps) and rng.random() < 0.05
        specs.append(
            Spec(
                deps=tuple(deps),
                shape=shape,
                host=host,
                reads_attr=reads_attr,
                tier=rng.randrange(3),
            )
        )
    if family == "cyclic":
        # A back-edge goes from a dependency to a close dependent, so it closes a cycle
        # (the dependent already requires it) and the component stays small.
        back_rng = random.Random(f"back:{seed}:{size}")
        for index in range(size):
            spec = specs[index]
            if back_rng.random() >= BACK_RATE:
                continue
            close = [dep for dep in spec.deps if index - dep <= BACK_WINDOW]
            if not close:
                continue
            target = back_rng.choice(close)
            old = specs[target]
            if old.back is not None or not old.deps:
                continue
            specs[target] = Spec(
                deps=old.deps,
                shape=old.shape,
                host=old.host,
                reads_attr=old.reads_attr,
                tier=old.tier,
                back=index,
                negated=back_rng.random() < 1 / 3,
            )
    ids = [f"svc-{index:06d}" for index in range(size)]
    return Graph(family=family, ids=ids, hosts=hosts, specs=specs)


# -- setup -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Setup:
    replica: Replica
    clock: SimClock
    seconds: dict[str, float]


def build(graph: Graph) -> Setup:
    """Declare the graph on source replicas, then restore the replica under test from them.

    Each source replica (a team) declares a block of ``SHARD`` consecutive entities in
    reverse order, so a source never holds the whole graph; another one observes every
    host. The replica under test is restored from all their deltas, as a node starts.
    """
    clock = SimClock(EPOCH)
    seconds: dict[str, float] = {}
    updates: list[bytes] = []
    started = time.perf_counter()
    for shard, first in enumerate(range(0, len(graph.ids), SHARD)):
        source = Replica(f"team-{shard:04d}", clock=clock, declare_self=False)
        for index in range(min(len(graph.ids), first + SHARD) - 1, first - 1, -1):
            source.declare(
                graph.ids[index],
                kind="service",
                attrs=graph.attrs(index),
                requires=graph.requires(index),
            )
        updates.append(source.delta())
    seconds["declare"] = time.perf_counter() - started
    started = time.perf_counter()
    observer = Replica("observer", clock=clock)
    for host in graph.hosts:
        observer.observe(host, ok=True, value=0)
    updates.append(observer.delta())
    seconds["observe"] = time.perf_counter() - started
    started = time.perf_counter()
    replica = Replica.restore("bench", updates, clock=clock)
    seconds["restore"] = time.perf_counter() - started
    return Setup(replica=replica, clock=clock, seconds=seconds)


def graph_stats(replica: Replica) -> dict[str, int]:
    engine = replica._engine
    sizes = [len(engine.members.get(rep, (rep,))) for rep in engine.cyclic]
    values = list(engine.status.values())
    return {
        "cyclic_components": len(sizes),
        "largest_component": max(sizes, default=0),
        "entities_in_cycles": sum(sizes),
        "max_level": max(engine.level.values(), default=0),
        "exists": values.count(2),
        "undetermined": values.count(1),
    }


# -- timing ------------------------------------------------------------------------------------


def timed(body: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``body()``, with the collector off after a collection."""
    gc.collect()
    gc.disable()
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        body()
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        gc.enable()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def topo_and(deps: dict[str, list[str]]) -> dict[str, bool]:
    """The baseline: Kahn's algorithm, then ``all`` over the dependencies of each node."""
    indegree = {node: len(ds) for node, ds in deps.items()}
    dependents: dict[str, list[str]] = {node: [] for node in deps}
    for node, ds in deps.items():
        for dep in ds:
            dependents[dep].append(node)
    queue = deque(node for node, count in indegree.items() if count == 0)
    value: dict[str, bool] = {}
    while queue:
        node = queue.popleft()
        value[node] = all(value[dep] for dep in deps[node])
        for dependent in dependents[node]:
            indegree[dependent] -= 1
            if indegree[dependent] == 0:
                queue.append(dependent)
    return value


@dataclass(slots=True)
class FullResult:
    engine: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    engine_cpu: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)
    first_cpu: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        engine, baseline = statistics.median(self.engine), statistics.median(self.baseline)
        first = statistics.median(self.first)
        return {
            "engine_s": engine,
            "baseline_s": baseline,
            "ratio": engine / baseline,
            "cpu_ratio": statistics.median(self.engine_cpu) / statistics.median(self.baseline_cpu),
            "first_s": first,
            "first_ratio": first / baseline,
            "first_cpu_ratio": statistics.median(self.first_cpu)
            / statistics.median(self.baseline_cpu),
            "engine_samples_s": self.engine,
            "baseline_samples_s": self.baseline,
            "first_samples_s": self.first,
            "engine_cpu_s": self.engine_cpu,
            "baseline_cpu_s": self.baseline_cpu,
            "first_cpu_s": self.first_cpu,
        }


def forget_compiled(replica: Replica) -> None:
    """Drop the compiled rule kept on every ``requires`` winner, as after a restore."""
    for record in replica._view.records.values():
        winner = record.fields.get("q")
        if winner is not None:
            winner.rule = None


def bench_full(graph: Graph, replica: Replica, reps: int) -> FullResult:
    """Median-ready samples of a from-scratch recompute (rules as the replica holds them,
    compiled), of the first one after a restore (every rule compiled too), and of the
    topo-AND baseline."""
    now = replica.now()
    deps = graph.dag_deps()
    result = FullResult()
    derived: list[dict[str, int]] = []
    # What a run builds outlives its timed section: tearing it down is not deriving.
    kept: list[object] = []

    def engine_run() -> None:
        engine = ExistenceEngine(replica._view, replica.id, replica.predicates)
        derived.append(engine.recompute(now))
        kept.append(engine)

    def baseline_run() -> None:
        kept.append(topo_and(deps))

    sides = [
        ("engine", engine_run, result.engine, result.engine_cpu),
        ("first", engine_run, result.first, result.first_cpu),
        ("baseline", baseline_run, result.baseline, result.baseline_cpu),
    ]
    for _, body, _, _ in sides:  # warm-up
        body()
        kept.clear()
    for rep in range(reps):
        order = sides[rep % 3 :] + sides[: rep % 3]
        for name, body, wall, cpu in order if rep % 2 == 0 else reversed(order):
            if name == "first":
                forget_compiled(replica)
            seconds, cpu_seconds = timed(body)
            kept.clear()
            wall.append(seconds)
            cpu.append(cpu_seconds)
    if any(statuses != replica._engine.status for statuses in derived):
        raise SystemExit("a full derivation disagrees with the statuses of the restored replica")
    return result


# -- incremental -------------------------------------------------------------------------------


class EngineTimer:
    """Accumulates the time a replica's engine spends on inputs and steps."""

    def __init__(self, engine: ExistenceEngine) -> None:
        self.inputs = 0.0
        self.step = 0.0
        for name in ("record_changed", "observation_changed"):
            setattr(engine, name, self._wrap(getattr(engine, name), "inputs"))
        setattr(engine, "step", self._wrap(engine.step, "step"))  # noqa: B010

    def _wrap(self, method: Callable[..., Any], slot: str) -> Callable[..., Any]:
        clock = time.perf_counter

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                setattr(self, slot, getattr(self, slot) + clock() - start)

        return wrapper

    def reset(self) -> None:
        self.inputs = self.step = 0.0


Call = tuple[str, Callable[[], object]]


def change_plan(graph: Graph, replica: Replica, count: int, seed: int) -> list[Call]:
    """``count`` single-change calls, the same on every rep (pairs restore the graph)."""
    rng = random.Random(f"changes:{seed}:{graph.family}:{len(graph.ids)}")
    ids = graph.ids
    watched = sorted({spec.host for spec in graph.specs if spec.host is not None})
    read = sorted({spec.deps[0] for spec in graph.specs if spec.reads_attr and spec.deps})
    calls: list[Call] = []
    counter = 0

    def redeclare(index: int, extra: int | None = None) -> Callable[[], object]:
        requires = graph.requires(index, extra)
        attrs = graph.attrs(index)
        return partial(replica.declare, ids[index], kind="service", attrs=attrs, requires=requires)

    while len(calls) < count:
        kinds = list(ROUND)
        rng.shuffle(kinds)
        for kind in kinds:
            counter += 1
            if kind == "observe":
                host = graph.hosts[rng.choice(watched) if watched else 0]
                value = counter
                calls.append((kind, partial(replica.observe, host, ok=True, value=value)))
            elif kind == "update":
                pool = read if read and rng.random() < 0.5 else range(len(ids))
                entity, tier = ids[rng.choice(pool)], rng.randrange(4)
                calls.append((kind, partial(replica.update, entity, {"tier": tier})))
            elif kind == "retract":
                index = rng.randrange(len(ids))
                calls.append(("retract", partial(replica.retract, ids[index])))
                calls.append(("redeclare", redeclare(index)))
            else:
                index = rng.randrange(1, len(ids))
                spec = graph.specs[index]
                candidates = [rng.randrange(index) for _ in range(4)]
                extra = next((c for c in candidates if c not in spec.deps), None)
                if extra is None:
                    continue
                calls.append(("add edge", redeclare(index, extra)))
                calls.append(("remove edge", redeclare(index)))
    return calls[:count]


@dataclass(slots=True)
class Sample:
    kind: str
    call: float
    inputs: float
    step: float
    evaluated: int


def run_changes(replica: Replica, clock: SimClock, calls: list[Call]) -> list[Sample]:
    """Run every call once with the collector off; one sample per call."""
    engine = replica._engine
    timer = EngineTimer(engine)
    samples: list[Sample] = []
    perf = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for kind, call in calls:
            clock.now += 0.001
            timer.reset()
            start = perf()
            call()
            elapsed = perf() - start
            samples.append(Sample(kind, elapsed, timer.inputs, timer.step, engine.evaluated))
    finally:
        gc.enable()
        for name in ("record_changed", "observation_changed", "step"):
            delattr(engine, name)
    return samples


def summarize(samples: Sequence[Sample]) -> dict[str, float]:
    calls = [s.call for s in samples]
    evaluated = [float(s.evaluated) for s in samples]
    return {
        "calls": len(samples),
        "call_mean_s": statistics.fmean(calls),
        "call_median_s": statistics.median(calls),
        "call_p99_s": percentile(calls, 99),
        "engine_mean_s": statistics.fmean(s.inputs + s.step for s in samples),
        "step_mean_s": statistics.fmean(s.step for s in samples),
        "evaluated_mean": statistics.fmean(evaluated),
        "evaluated_p99": percentile(evaluated, 99),
        "evaluated_max": max(evaluated),
    }


def bench_incremental(
    graph: Graph, setup: Setup, changes: int, reps: int, seed: int
) -> tuple[dict[str, Any], bool]:
    """Per-change figures (median over reps of the per-rep means), and the audit result."""
    replica, clock = setup.replica, setup.clock
    calls = change_plan(graph, replica, changes, seed)
    run_changes(replica, clock, calls[: min(40, len(calls))])  # warm-up
    per_rep: list[dict[str, float]] = []
    pooled: list[Sample] = []
    for _ in range(reps):
        samples = run_changes(replica, clock, calls)
        per_rep.append(summarize(samples))
        pooled.extend(samples)
    figures: dict[str, Any] = {
        key: statistics.median(rep[key] for rep in per_rep)
        for key in ("call_mean_s", "engine_mean_s", "step_mean_s")
    }
    overall = summarize(pooled)
    figures.update(
        {
            key: overall[key]
            for key in (
                "call_median_s",
                "call_p99_s",
                "evaluated_mean",
                "evaluated_p99",
                "evaluated_max",
            )
        }
    )
    figures["calls_per_rep"] = len(calls)
    figures["reps"] = reps
    figures["per_rep"] = per_rep
    kinds: dict[str, list[Sample]] = {}
    for sample in pooled:
        kinds.setdefault(sample.kind, []).append(sample)
    figures["by_kind"] = {kind: summarize(group) for kind, group in kinds.items()}
    audit = ExistenceEngine(replica._view, replica.id, replica.predicates).recompute(clock())
    return figures, audit == replica._engine.status


# -- report ------------------------------------------------------------------------------------


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else "PASS" if passed else "MISS"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def report(results: list[dict[str, Any]]) -> str:
    lines = ["", "setup (seconds; not part of any figure)"]
    lines.append(
        f"  {'family':<7}{'entities':>9}{'edges':>9}{'back':>6}{'(neg)':>6}{'cyc SCC':>8}"
        f"{'max SCC':>8}{'levels':>7}{'exists':>8}{'undet':>6}"
        f"{'declare':>9}{'observe':>8}{'restore':>8}"
    )
    for r in results:
        g, s = r["graph"], r["setup_s"]
        lines.append(
            f"  {r['family']:<7}{r['entities']:>9,}{g['edges']:>9,}{g['back_edges']:>6,}"
            f"{g['negated_back_edges']:>6,}{g['cyclic_components']:>8,}"
            f"{g['largest_component']:>8,}{g['max_level']:>7,}{g['exists']:>8,}"
            f"{g['undetermined']:>6,}{s['declare']:>9.1f}{s['observe']:>8.1f}"
            f"{s['restore']:>8.1f}"
        )
    lines += [
        "",
        f"full derivation vs topo-AND baseline (median wall ms; goal ratio <= {BASELINE_GOAL:g}x;"
        " cpu ratio = ratio of median CPU times, a cross-check on a busy machine)",
    ]
    lines.append(
        f"  {'family':<7}{'entities':>9}{'engine':>10}{'baseline':>10}{'ratio':>8}"
        f"{'cpu ratio':>11}  result  {'first':>8}{'ratio':>8}{'cpu ratio':>11}"
    )
    for r in results:
        f = r["full"]
        note = "  (baseline on the DAG part)" if r["family"] == "cyclic" else ""
        lines.append(
            f"  {r['family']:<7}{r['entities']:>9,}{ms(f['engine_s']):>10}"
            f"{ms(f['baseline_s']):>10}{f['ratio']:>7.1f}x{f['cpu_ratio']:>10.1f}x  "
            f"{verdict(r['goals']['baseline_ratio']):<6}{ms(f['first_s']):>8}"
            f"{f['first_ratio']:>7.1f}x{f['first_cpu_ratio']:>10.1f}x{note}"
        )
    lines.append(
        "  (first = the first derivation after a restore, which also compiles every rule;"
        " later ones find each rule compiled)"
    )
    lines += [
        "",
        "incremental, per single change (us; call = whole Replica call, engine = inside the",
        f"engine, step = ExistenceEngine.step; speedup = full / mean; goal >= {SPEEDUP_GOAL:g}x"
        f" at {SPEEDUP_SIZE:,})",
    ]
    lines.append(
        f"  {'family':<7}{'entities':>9}{'call mean':>10}{'engine':>9}{'step':>8}{'call p50':>9}"
        f"{'call p99':>10}{'eval mean':>10}{'eval p99':>9}{'speedup':>9}{'(engine)':>10}  result"
    )
    for r in results:
        i = r["incremental"]
        lines.append(
            f"  {r['family']:<7}{r['entities']:>9,}{us(i['call_mean_s']):>10}"
            f"{us(i['engine_mean_s']):>9}{us(i['step_mean_s']):>8}{us(i['call_median_s']):>9}"
            f"{us(i['call_p99_s']):>10}{i['evaluated_mean']:>10,.1f}{i['evaluated_p99']:>9,.0f}"
            f"{r['speedup']:>8,.0f}x{r['speedup_engine']:>9,.0f}x  "
            f"{verdict(r['goals']['speedup'])}"
        )
    lines += [
        "",
        "incremental by kind of change (mean us of the call / engine; evaluated mean, p99)",
    ]
    for r in results:
        parts = [
            f"{kind} {us(k['call_mean_s'])}/{us(k['engine_mean_s'])} "
            f"[{k['evaluated_mean']:,.0f}, {k['evaluated_p99']:,.0f}]"
            for kind, k in r["incremental"]["by_kind"].items()
        ]
        lines.append(f"  {r['family']:<7}{r['entities']:>9,}  " + "; ".join(sorted(parts)))
    lines += ["", "incremental == full recompute after the changes:"]
    lines.append(
        "  "
        + ", ".join(
            f"{r['family']} {r['entities']:,}: {'yes' if r['consistent'] else 'NO'}"
            for r in results
        )
    )
    return "\n".join(lines)


# -- growth ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GrowthCase:
    """One upkeep workload whose cost should grow linearly with its size."""

    name: str
    #: builds what is not timed and returns the timed body
    prepare: Callable[[int, int], Callable[[], object]]


def link_ids(size: int) -> list[str]:
    return [f"link-{index:06d}" for index in range(size)]


def chain_order(size: int, order: str, seed: int) -> list[int]:
    """The order in which the links of a chain are declared (link ``i`` requires ``i + 1``)."""
    if order == "dependencies":
        return list(range(size - 1, -1, -1))
    if order == "dependents":
        return list(range(size))
    indices = list(range(size))
    random.Random(f"chain:{seed}:{size}").shuffle(indices)
    return indices


def prepare_chain(order: str) -> Callable[[int, int], Callable[[], object]]:
    """A fresh replica, and the declaration of every link of a chain in ``order``."""

    def prepare(size: int, seed: int) -> Callable[[], object]:
        replica = Replica("bench", clock=SimClock(EPOCH), declare_self=False)
        ids = link_ids(size)
        plan = [
            (ids[index], exists(ids[index + 1]) if index + 1 < size else None)
            for index in chain_order(size, order, seed)
        ]

        def body() -> None:
            for entity, requires in plan:
                replica.declare(entity, kind="link", requires=requires)

        return body

    return prepare


def prepare_ring(size: int, seed: int) -> Callable[[], object]:
    """A negative ring, open (link ``i`` requires ``not exists(i + 1)``, the last link
    nothing), and the declaration that closes it: every link turns undetermined."""
    del seed
    replica = Replica("bench", clock=SimClock(EPOCH), declare_self=False)
    ids = link_ids(size)
    # Dependencies first, so that no declaration of the setup flips the links before it.
    replica.declare(ids[-1], kind="link")
    for index in range(size - 2, -1, -1):
        replica.declare(ids[index], kind="link", requires=not_(exists(ids[index + 1])))

    def body() -> None:
        view = replica.declare(ids[-1], kind="link", requires=not_(exists(ids[0])))
        if view.status != "undetermined":
            raise SystemExit(f"the closed ring reads {view.status!r}, not undetermined")

    return body


GROWTH_CASES: Final = (
    GrowthCase(name="chain, dependencies first", prepare=prepare_chain("dependencies")),
    GrowthCase(name="chain, dependents first", prepare=prepare_chain("dependents")),
    GrowthCase(name="chain, random order", prepare=prepare_chain("random")),
    GrowthCase(name="ring turning undetermined", prepare=prepare_ring),
)


def bench_growth(size: int, reps: int, seed: int) -> list[dict[str, Any]]:
    """Each growth case at ``size`` and ``GROWTH_FACTOR`` times it, in alternating reps."""
    rows: list[dict[str, Any]] = []
    large = size * GROWTH_FACTOR
    for case in GROWTH_CASES:
        samples: dict[int, list[float]] = {size: [], large: []}
        cpu: dict[int, list[float]] = {size: [], large: []}
        for rep in range(reps):
            for n in (size, large) if rep % 2 == 0 else (large, size):
                gc.disable()  # the setup is not measured; the collector stays off in it too
                try:
                    body = case.prepare(n, seed)
                finally:
                    gc.enable()
                wall, cpu_seconds = timed(body)
                samples[n].append(wall)
                cpu[n].append(cpu_seconds)
                del body
        small_s, large_s = statistics.median(samples[size]), statistics.median(samples[large])
        ratio = large_s / small_s
        rows.append(
            {
                "case": case.name,
                "entities": size,
                "small_s": small_s,
                "large_s": large_s,
                "ratio": ratio,
                "cpu_ratio": statistics.median(cpu[large]) / statistics.median(cpu[size]),
                "small_samples_s": samples[size],
                "large_samples_s": samples[large],
                "small_cpu_s": cpu[size],
                "large_cpu_s": cpu[large],
                "goal": ratio <= GROWTH_GOAL,
            }
        )
    return rows


def growth_report(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    size = rows[0]["entities"]
    lines = [
        "",
        f"upkeep growth (median ms; ratio = time for {GROWTH_FACTOR * size:,} / time for"
        f" {size:,}; goal <= {GROWTH_GOAL:g}x, linear growth; cpu ratio = ratio of median CPU"
        " times, a cross-check on a busy machine)",
        f"  {'case':<28}{f'{size:,}':>10}{f'{GROWTH_FACTOR * size:,}':>10}{'ratio':>8}"
        f"{'cpu ratio':>11}  result",
    ]
    for row in rows:
        lines.append(
            f"  {row['case']:<28}{ms(row['small_s']):>10}{ms(row['large_s']):>10}"
            f"{row['ratio']:>7.1f}x{row['cpu_ratio']:>10.1f}x  {verdict(row['goal'])}"
        )
    return "\n".join(lines)


def default_reps(size: int) -> int:
    """Full-derivation reps: many where they are cheap, fewer at 100k."""
    return 21 if size <= 1_000 else 11 if size <= 10_000 else 5


def run_one(
    family: str, size: int, seed: int, reps: int, changes: int, inc_reps: int
) -> dict[str, Any]:
    """Every figure of one family at one size."""
    phases: dict[str, float] = {}
    started = time.perf_counter()
    graph = make_graph(family, size, seed)
    phases["graph"] = time.perf_counter() - started
    started = time.perf_counter()
    # The collector stays off while the state is built, and what was built is frozen, so
    # the collections before timed sections only walk what the measurement allocates.
    gc.disable()
    try:
        setup = build(graph)
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    phases["setup"] = time.perf_counter() - started
    try:
        back, negated = graph.back_edges()
        stats = {
            "edges": graph.edges(),
            "back_edges": back,
            "negated_back_edges": negated,
            **graph_stats(setup.replica),
        }
        started = time.perf_counter()
        full = bench_full(graph, setup.replica, reps).to_json()
        phases["full"] = time.perf_counter() - started
        started = time.perf_counter()
        incremental, consistent = bench_incremental(graph, setup, changes, inc_reps, seed)
        phases["incremental"] = time.perf_counter() - started
    finally:
        gc.unfreeze()
    speedup = full["engine_s"] / incremental["call_mean_s"]
    return {
        "family": family,
        "entities": size,
        "graph": stats,
        "setup_s": setup.seconds,
        "phases_s": phases,
        "full": {**full, "reps": reps},
        "incremental": incremental,
        "speedup": speedup,
        "speedup_engine": full["engine_s"] / incremental["engine_mean_s"],
        "consistent": consistent,
        "goals": {
            "baseline_ratio": full["ratio"] <= BASELINE_GOAL,
            "speedup": speedup >= SPEEDUP_GOAL if size == SPEEDUP_SIZE else None,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k entities only, fewer reps")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--seed", type=int, default=1, help="graph and change seed (default 1)")
    parser.add_argument("--sizes", help="comma-separated entity counts (default 1000,10000,100000)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="dag,cyclic")
    parser.add_argument(
        "--reps", type=int, help="full-derivation reps (default 21 up to 1k, 11 up to 10k, else 5)"
    )
    parser.add_argument(
        "--changes", type=int, help="incremental calls per rep (default 500, quick 200)"
    )
    parser.add_argument("--inc-reps", type=int, help="incremental reps (default 3, quick 2)")
    parser.add_argument(
        "--growth",
        type=int,
        help=f"base size of the upkeep growth rows (default {GROWTH_SIZE:,}, quick"
        f" {QUICK_GROWTH_SIZE}; 0 skips them)",
    )
    parser.add_argument("--growth-reps", type=int, help="growth reps per size (default 5, quick 3)")
    args = parser.parse_args(argv)
    sizes = (
        [int(size) for size in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if args.quick else FULL_SIZES)
    )
    families = [name for name in args.families.split(",") if name]
    if any(name not in FAMILIES for name in families) or any(size < 20 for size in sizes):
        parser.error(f"families are {', '.join(FAMILIES)}; sizes are at least 20")
    changes = args.changes or (200 if args.quick else 500)
    inc_reps = args.inc_reps or (2 if args.quick else 3)
    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "sphaera_crdt"))
    print(
        f"sphaera_crdt existence benchmark: seed {args.seed}, sizes "
        f"{', '.join(f'{s:,}' for s in sizes)}, full reps "
        f"{args.reps or ', '.join(str(default_reps(size)) for size in sizes)}, {changes} changes x "
        f"{inc_reps} reps; Python {platform.python_version()}, commit {commit}"
        f"{' (package has uncommitted changes)' if dirty else ''}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    started_all = time.perf_counter()
    for size in sizes:
        for family in families:
            reps = args.reps or default_reps(size)
            result = run_one(family, size, args.seed, reps, changes, inc_reps)
            results.append(result)
            print(
                f"  {family} {size:,}: full {ms(result['full']['engine_s'])} ms, change "
                f"{us(result['incremental']['call_mean_s'])} us; phases "
                + ", ".join(f"{name} {sec:.1f} s" for name, sec in result["phases_s"].items()),
                file=sys.stderr,
                flush=True,
            )
    growth_size = QUICK_GROWTH_SIZE if args.quick else GROWTH_SIZE
    if args.growth is not None:
        growth_size = args.growth
    growth: list[dict[str, Any]] = []
    if growth_size:
        started = time.perf_counter()
        growth = bench_growth(growth_size, args.growth_reps or (3 if args.quick else 5), args.seed)
        print(f"  growth: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(report(results) if results else "")
    print(growth_report(growth))
    print(f"\ntotal {time.perf_counter() - started_all:.0f} s")
    if args.json is not None:
        document = {
            "environment": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "commit": commit,
                "package_modified": dirty,
            },
            "arguments": {
                "seed": args.seed,
                "sizes": sizes,
                "families": families,
                "reps": [args.reps or default_reps(size) for size in sizes],
                "changes": changes,
                "inc_reps": inc_reps,
            },
            "goals": {
                "baseline_ratio_max": BASELINE_GOAL,
                "speedup_min": SPEEDUP_GOAL,
                "speedup_size": SPEEDUP_SIZE,
                "growth_ratio_max": GROWTH_GOAL,
                "growth_factor": GROWTH_FACTOR,
            },
            "results": results,
            "growth": growth,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if not all(result["consistent"] for result in results):
        print("incremental statuses differ from a full recompute", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
