"""Store benchmark: acknowledged writes, restart time and disk use of the SQLite store, in one run.

Run it from the repository root::

    python benchmarks/bench_store.py                  # full scale, several minutes
    python benchmarks/bench_store.py --quick          # everything scaled down, seconds
    python benchmarks/bench_store.py --json out.json  # also write every figure as JSON

The figures (each printed with its goal and PASS or MISS, computed from this run's
measurements; rows marked "context" have no goal):

acked writes/s
    Writes acknowledged per second through :class:`Persistence`: each write is a
    ``Replica.declare`` followed by ``await flush()`` (what the server does before it
    answers 2xx), with the SQLite store at ``durability="full"`` and ``"normal"``,
    divided by the same with the in-memory store (which still goes through the worker
    thread). "sequential" is one writer; "concurrent" is many asyncio tasks writing and
    flushing at once, where group commit puts the writes that arrive during one commit
    into the next. Context rows: the figure is a ratio of throughputs (below 1 means
    slower than memory); commits per write are printed below the table.
restart
    Time of ``open_replica`` on a ``SQLiteStore`` holding a replica of many entities
    (a snapshot plus a log of the last tenth of the writes, up to the default compaction
    count: as a node that crashed just before compacting leaves it; opening
    includes reading and checksumming, replaying, deriving every status and writing the
    restored state back as the new snapshot) divided by the time of
    ``Replica.restore(id, [full_state])``: applying the replica's full state to a fresh
    replica and deriving every status, with no store at all. Goal: at most 1.5x.
restart vs raw pycrdt
    The same ``open_replica`` time divided by the floor under any restart: raw pycrdt
    applying the same full state to a fresh ``Doc`` and reading every entry into Python
    (``to_py()``), timed in turn with the two above. Goal: at most 2.5x.
disk after churn
    Observations refreshed over and over (heartbeats), each write acknowledged (flushed)
    on its own, with the default compaction settings. Then the size of the database,
    write-ahead log and shared-memory (``-shm``) files, as the file system reports them
    while the node still runs, is divided by the size of a fresh replica's snapshot (its
    Yrs update) holding the same final data (the same entities, one observation of each).
    Two shapes with the same number of refreshes: many subjects refreshed a few times,
    few subjects refreshed many times. Goal: at most 2.0x. Printed below the table: the
    largest size seen during the run (sampled after every refresh), and the logical size
    (the snapshot's update before compression plus the log's bytes), which shows how much
    history the store keeps whatever its encoding on disk.

Timing methodology, for a shared, noisy machine: setup is never timed; the sides of a
comparison run alternately, the one going first flipping every repetition; the collector is
disabled during a timed region, after a collection. A figure is the ratio of the median
wall times (``time.perf_counter``); CPU times (``time.process_time``) are kept as a
cross-check, although the worker thread's and the disk's time is not CPU time of the
measuring thread alone.
"""

from __future__ import annotations

import asyncio
import gc
import math
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from benchenv import run_sections
from pycrdt import Doc, Map

from sphaera_crdt import Replica
from sphaera_crdt.persistence import DEFAULT_COMPACT_COUNT, Persistence, open_replica
from sphaera_crdt.store import MemoryStore, SQLiteStore, Store
from sphaera_crdt.store.sqlite import DB_NAME, footprint

#: Simulated start time of the churn figure (seconds).
EPOCH: Final = 1_750_000_000.0
STORES: Final = ("memory", "normal", "full")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """How much work each figure does."""

    reps: int
    sequential_ops: dict[str, int]
    writers: int
    concurrent_ops: dict[str, int]
    restart_entities: int
    restart_reps: int
    #: (subjects, rounds) of each churn figure
    churn: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.reps < 1 or self.restart_reps < 1 or self.writers < 1:
            raise ValueError("reps, restart_reps and writers must be positive")
        for ops in (self.sequential_ops, self.concurrent_ops):
            if set(ops) != set(STORES) or min(ops.values()) < 1:
                raise ValueError(f"operation counts are needed for each of {STORES}")


FULL: Final = Scale(
    reps=3,
    sequential_ops={"memory": 3_000, "normal": 2_000, "full": 300},
    writers=32,
    concurrent_ops={"memory": 6_000, "normal": 6_000, "full": 3_000},
    restart_entities=100_000,
    restart_reps=3,
    churn=((10_000, 10), (1_000, 100)),
)
QUICK: Final = Scale(
    reps=1,
    sequential_ops={"memory": 200, "normal": 200, "full": 30},
    writers=8,
    concurrent_ops={"memory": 400, "normal": 400, "full": 200},
    restart_entities=2_000,
    restart_reps=1,
    churn=((400, 5), (100, 20)),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One reported figure: ``ratio`` of ``ours`` to ``base``, and its goal (if any)."""

    name: str
    ratio: float
    goal: float | None
    ours: float
    base: float
    unit: str
    detail: dict[str, Any]

    @property
    def passed(self) -> bool | None:
        return None if self.goal is None else self.ratio <= self.goal

    @property
    def verdict(self) -> str:
        return {None: "context", True: "PASS", False: "MISS"}[self.passed]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@contextmanager
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sphaera-bench-store-") as directory:
        yield Path(directory)


def make_store(kind: str, directory: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    return SQLiteStore(directory, durability=kind)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- 1. acknowledged writes/s ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    wall: float
    cpu: float
    commits: int
    ops: int


async def sequential_run(store: Store, ops: int) -> Run:
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    try:
        with no_collector():
            cpu, wall = time.process_time(), time.perf_counter()
            for index in range(ops):
                replica.declare(f"svc-{index % 500}", attrs={"n": index})
                await persistence.flush()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Run(wall=wall, cpu=cpu, commits=persistence.commits, ops=ops)
    finally:
        await persistence.close()


async def concurrent_run(store: Store, ops: int, writers: int) -> Run:
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    per_writer = max(1, ops // writers)

    async def writer(number: int) -> None:
        for index in range(per_writer):
            replica.declare(f"w{number}-{index % 50}", attrs={"n": index})
            await persistence.flush()

    try:
        with no_collector():
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(writer(number) for number in range(writers)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Run(wall=wall, cpu=cpu, commits=persistence.commits, ops=per_writer * writers)
    finally:
        await persistence.close()


def throughput(scale: Scale, mode: str) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {kind: [] for kind in STORES}
    for rep in range(scale.reps):
        order = STORES if rep % 2 == 0 else tuple(reversed(STORES))
        for kind in order:
            with scratch() as directory:
                store = make_store(kind, directory)
                if mode == "sequential":
                    run = asyncio.run(sequential_run(store, scale.sequential_ops[kind]))
                else:
                    run = asyncio.run(
                        concurrent_run(store, scale.concurrent_ops[kind], scale.writers)
                    )
            runs[kind].append(run)
    return runs


def rate(runs: list[Run]) -> float:
    """Median writes per second."""
    return statistics.median(run.ops / run.wall for run in runs)


def bench_writes(scale: Scale) -> list[Figure]:
    figures = []
    for mode in ("sequential", "concurrent"):
        runs = throughput(scale, mode)
        memory = rate(runs["memory"])
        for kind in ("full", "normal"):
            ours = rate(runs[kind])
            figures.append(
                Figure(
                    name=f"writes/s {mode}: {kind}",
                    ratio=ours / memory,
                    goal=None,
                    ours=ours,
                    base=memory,
                    unit="writes/s",
                    detail={
                        "mode": mode,
                        "writers": 1 if mode == "sequential" else scale.writers,
                        "operations": runs[kind][0].ops,
                        "writes_per_s": [run.ops / run.wall for run in runs[kind]],
                        "memory_writes_per_s": [run.ops / run.wall for run in runs["memory"]],
                        "commits_per_write": statistics.median(
                            run.commits / run.ops for run in runs[kind]
                        ),
                        "memory_commits_per_write": statistics.median(
                            run.commits / run.ops for run in runs["memory"]
                        ),
                        "cpu_seconds": [run.cpu for run in runs[kind]],
                    },
                )
            )
    return figures


# -- 2. restart --------------------------------------------------------------------------------


async def build_restart_store(directory: Path, entities: int) -> tuple[bytes, float]:
    """A node's data directory after writing ``entities`` entities.

    The last tenth of them (at most as many updates as the default compaction count) stay
    in the log, as a node that crashed just before compacting would leave it: the restart
    replays a snapshot and the longest log the default settings keep.

    Returns the replica's full state and the seconds it took to encode it: the part of a
    compaction that runs on the event loop, where the document lives.
    """
    store = SQLiteStore(directory, durability="normal")
    replica = open_replica("a", store)
    persistence = Persistence(replica, store)
    logged = min(entities // 10, DEFAULT_COMPACT_COUNT - 1)
    for index in range(entities):
        if index == entities - logged:
            await persistence.compact()
            persistence.compact_count = persistence.compact_bytes = 1 << 62
            persistence.compact_ratio = math.inf
        requires = {"exists": f"svc-{index - 1:06d}"} if index % 10 == 9 else None
        replica.declare(
            f"svc-{index:06d}",
            kind="service",
            attrs={"port": 8000 + index % 1000, "zone": f"zone-{index % 3}"},
            requires=requires,
        )
        if index % 1000 == 999:
            await persistence.flush()
    await persistence.flush()
    started = time.perf_counter()
    full_state = replica.delta()
    encode_seconds = time.perf_counter() - started
    await persistence.close()
    return full_state, encode_seconds


def bench_restart(scale: Scale) -> list[Figure]:
    entities = scale.restart_entities
    with scratch() as root:
        pristine = root / "pristine"
        started = time.perf_counter()
        full_state, encode_seconds = asyncio.run(build_restart_store(pristine, entities))
        build_seconds = time.perf_counter() - started
        probe_directory = root / "probe"
        shutil.copytree(pristine, probe_directory)
        probe = SQLiteStore(probe_directory)
        stats = probe.stats()
        started = time.perf_counter()
        probe.compact(full_state)  # the worker thread's part of a compaction
        compact_seconds = time.perf_counter() - started
        probe.close()
        ours: list[float] = []
        base: list[float] = []
        raw: list[float] = []
        ours_cpu: list[float] = []
        base_cpu: list[float] = []
        raw_cpu: list[float] = []
        sides = ("ours", "base", "raw")
        for rep in range(scale.restart_reps):
            work = root / f"rep-{rep}"
            shutil.copytree(pristine, work)
            for side in sides[rep % 3 :] + sides[: rep % 3]:
                with no_collector():
                    cpu, wall = time.process_time(), time.perf_counter()
                    if side == "ours":
                        store = SQLiteStore(work)
                        replica = open_replica("a", store)
                        store.close()
                    elif side == "base":
                        replica = Replica.restore("a", [full_state])
                    else:
                        read = raw_apply_and_read(full_state)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if side == "raw":
                    if not read:
                        raise AssertionError("raw pycrdt read nothing")
                    del read
                else:
                    kept = len(replica.entity_ids("svc-"))
                    if kept != entities:
                        raise AssertionError(f"{side} restored {kept} of {entities} entities")
                    del replica
                {"ours": ours, "base": base, "raw": raw}[side].append(wall)
                {"ours": ours_cpu, "base": base_cpu, "raw": raw_cpu}[side].append(cpu)
            shutil.rmtree(work)
    ours_median, base_median = statistics.median(ours), statistics.median(base)
    raw_median = statistics.median(raw)
    return [
        Figure(
            name="restart",
            ratio=ours_median / base_median,
            goal=1.5,
            ours=ours_median,
            base=base_median,
            unit="s",
            detail={
                "entities": entities,
                "full_state_bytes": len(full_state),
                "snapshot_bytes": stats.snapshot_bytes,
                "log_updates": stats.log_count,
                "log_bytes": stats.log_bytes,
                "file_bytes": stats.file_bytes,
                "build_seconds": build_seconds,
                "compaction_encode_seconds": encode_seconds,
                "compaction_store_seconds": compact_seconds,
                "ours_seconds": ours,
                "base_seconds": base,
                "cpu_ratio": statistics.median(ours_cpu) / statistics.median(base_cpu),
                "min_ratio": min(ours) / min(base),
            },
        ),
        Figure(
            name="restart vs raw pycrdt",
            ratio=ours_median / raw_median,
            goal=2.5,
            ours=ours_median,
            base=raw_median,
            unit="s",
            detail={
                "entities": entities,
                "ours_seconds": ours,
                "raw_seconds": raw,
                "cpu_ratio": statistics.median(ours_cpu) / statistics.median(raw_cpu),
                "min_ratio": min(ours) / min(raw),
            },
        ),
    ]


def raw_apply_and_read(update: bytes) -> dict[str, Any]:
    """The floor under any restart: raw pycrdt applies the state to a fresh ``Doc`` and
    reads every entry into Python."""
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    read: dict[str, Any] = doc.get("w", type=Map).to_py()
    return read


# -- 3. disk after churn -----------------------------------------------------------------------


def file_bytes(directory: Path) -> int:
    """The store's footprint on disk: database, write-ahead log and shared-memory files."""
    return footprint(directory / DB_NAME)


async def churn(directory: Path, subjects: int, rounds: int) -> dict[str, Any]:
    clock = Clock()
    store = SQLiteStore(directory, durability="normal")
    replica = open_replica("a", store, clock=clock)
    persistence = Persistence(replica, store)
    for index in range(subjects):
        replica.declare(f"svc-{index:05d}", kind="service", attrs={"port": 8000 + index})
    await persistence.flush()
    largest = 0
    started = time.perf_counter()
    for round_ in range(rounds):
        clock.now += 1.0
        for index in range(subjects):
            replica.observe(f"svc-{index:05d}", ok=True, value={"round": round_}, ttl=30.0)
            await persistence.flush()
            largest = max(largest, file_bytes(directory))
    seconds = time.perf_counter() - started
    stats = store.stats()
    result = {
        "subjects": subjects,
        "rounds": rounds,
        "refreshes": subjects * rounds,
        "seconds": seconds,
        "file_bytes": file_bytes(directory),
        "largest_file_bytes": max(largest, file_bytes(directory)),
        "snapshot_bytes": stats.snapshot_bytes,
        "log_bytes": stats.log_bytes,
        "log_updates": stats.log_count,
        "compactions": persistence.compactions,
        "commits": persistence.commits,
    }
    await persistence.close()
    fresh = Replica("a", clock=clock)
    for index in range(subjects):
        fresh.declare(f"svc-{index:05d}", kind="service", attrs={"port": 8000 + index})
        fresh.observe(f"svc-{index:05d}", ok=True, value={"round": rounds - 1}, ttl=30.0)
    result["fresh_snapshot_bytes"] = len(fresh.delta())
    if replica.observations() != fresh.observations():
        raise AssertionError("the churned replica does not hold the final observations")
    return result


def bench_churn(scale: Scale) -> list[Figure]:
    figures = []
    for subjects, rounds in scale.churn:
        with scratch() as directory:
            result = asyncio.run(churn(directory, subjects, rounds))
        fresh = result["fresh_snapshot_bytes"]
        figures.append(
            Figure(
                name=f"disk after churn {subjects:,}x{rounds}",
                ratio=result["file_bytes"] / fresh,
                goal=2.0,
                ours=result["file_bytes"],
                base=fresh,
                unit="B",
                detail=result,
            )
        )
    return figures


# -- report ------------------------------------------------------------------------------------


def describe(figure: Figure) -> str:
    if figure.unit == "writes/s":
        return f"{figure.ours:9,.0f} /s vs memory {figure.base:8,.0f} /s"
    if figure.unit == "s":
        against = "raw" if figure.name.endswith("raw pycrdt") else "restore"
        return f"{figure.ours:9.2f} s  vs {against} {figure.base:7.2f} s"
    return f"{figure.ours:9,.0f} B  vs fresh {figure.base:9,.0f} B"


def report(figures: Sequence[Figure]) -> str:
    lines = [
        f"{'figure':<31} {'measured':<38} {'ratio':>7}  {'goal':>7}  result",
        "-" * 96,
    ]
    for figure in figures:
        goal = "-" if figure.goal is None else f"<= {figure.goal:.2f}"
        lines.append(
            f"{figure.name:<31} {describe(figure):<38} {figure.ratio:>6.2f}x  "
            f"{goal:>7}  {figure.verdict}"
        )
    for figure in figures:
        d = figure.detail
        if figure.unit == "writes/s":
            lines.append(
                f"  {figure.name}: {d['writers']} writer(s), {d['operations']:,} writes, "
                f"{d['commits_per_write']:.3f} commits per write "
                f"(memory {d['memory_commits_per_write']:.3f})"
            )
        elif figure.name == "restart":
            lines.append(
                f"  restart: {d['entities']:,} entities, full state {d['full_state_bytes']:,} B; "
                f"store: snapshot {d['snapshot_bytes']:,} B + {d['log_updates']:,} log updates "
                f"({d['log_bytes']:,} B), files {d['file_bytes']:,} B; "
                f"ratio of median CPU times {d['cpu_ratio']:.2f}x, of fastest {d['min_ratio']:.2f}x"
            )
            lines.append(
                f"  compaction of that state: {d['compaction_encode_seconds'] * 1e3:,.0f} ms "
                f"encoding on the event loop, {d['compaction_store_seconds'] * 1e3:,.0f} ms "
                "in the store's worker thread"
            )
        elif figure.name.startswith("disk"):
            logical = d["snapshot_bytes"] + d["log_bytes"]
            lines.append(
                f"  {figure.name}: {d['refreshes']:,} acknowledged refreshes in "
                f"{d['seconds']:.1f} s, {d['compactions']} compactions; largest files "
                f"{d['largest_file_bytes']:,} B ({d['largest_file_bytes'] / figure.base:.2f}x); "
                f"logical snapshot + log {logical:,} B ({logical / figure.base:.2f}x)"
            )
    return "\n".join(lines)


SECTIONS: Final[tuple[Callable[[Scale], list[Figure]], ...]] = (
    bench_writes,
    bench_restart,
    bench_churn,
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_sections(
        argv,
        doc=__doc__,
        title="store",
        sections=SECTIONS,
        scales=(FULL, QUICK),
        report=report,
        versions=lambda env: (
            f"Python {env['python']}, SQLite {env['sqlite']}, pycrdt {env['pycrdt']}"
        ),
        sqlite=sqlite3.sqlite_version,
    )


if __name__ == "__main__":
    sys.exit(main())
