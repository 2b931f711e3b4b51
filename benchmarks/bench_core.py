"""Core benchmark: ``Replica`` against raw pycrdt doing the same logical work, in one run.

Run it from the repository root::

    python benchmarks/bench_core.py                  # full scale, a few minutes
    python benchmarks/bench_core.py --quick          # everything scaled down, a few seconds
    python benchmarks/bench_core.py --json out.json  # also write every figure as JSON

The figures (each printed with its goal and PASS or MISS, computed from this run's
measurements; rows marked "context" have no goal and help read the row above them):

write cost
    Time of ``Replica.update`` / ``Replica.observe`` divided by the time a plain pycrdt
    user spends writing the same information, one transaction per operation. Raw update
    baseline: root Map ``"entities"``, flat key ``f"{entity}/{attr}"`` set to the value.
    Raw observe baseline: root Map ``"observations"``, key ``f"{observer}/{subject}"`` set
    to ``{"ok", "value", "at", "ttl"}``. Same keys, values, count and order of
    operations. Goal: at most 2.0x.
merge cost
    Time for a fresh destination ``Replica`` to ``merge`` N single-change deltas (each one
    ``observe`` or ``update`` on a source replica, taken against the source's previous
    state vector) divided by the time a fresh raw ``Doc`` takes to ``apply_update`` the
    deltas of the same logical changes made on a raw source ``Doc``. Both destinations
    first receive the source's base state, untimed. The changes refresh existing keys, and
    ``get_update(sv)`` puts the source's whole delete set in every delta, so both sides
    spend most of their time in Yrs. Goal: at most 1.5x. The context row
    "merge, first writes" repeats it with changes that each write a new key (no delete
    set), which shows the per-merge overhead of the replica itself. Goal: at most 3.0x.
    The context row "merge, first writes: the walk alone" times only ``updates.shape`` of
    the same deltas (the check of untrusted bytes every merge starts with, which also
    tells the causal gate what each update needs) against the raw apply.
ingest
    Time for ``Replica.merge`` of the full state of many entities into a fresh replica,
    and for ``Replica.restore`` from it (which also moves the replica's own entries into a
    fresh container and derives every status), divided by the time raw pycrdt takes to
    apply the same update to a fresh ``Doc`` and read every entry into Python
    (``to_py()``): the least any layer over pycrdt must do. The entities are a realistic
    mix: a kind and three attributes each, a rule on nine in ten, an observation of one
    in four. The sides run in turn, the order rotating every repetition (the first is a
    warm-up). Two sizes, 20,000 and 100,000 entities ("large"). Goal: at most 2.0x. The
    context row "restore, nothing of its own to move" restores the same state as another
    replica, which has no entries to move: the difference is the cost of the move. The
    context row "raw pycrdt moving the entries restore moves" times raw pycrdt doing the
    same move (write every entry into a fresh map, remove the old map's entries in
    batches, overwrite its key) against the raw apply-and-read: the least the move costs.
    The
    context row "merge, both with the collector on" repeats the merge and the raw side
    with Python's cyclic collector running, as it does in an application.
delta bytes
    ``len(Replica.delta(base_sv))`` divided by ``len(Doc.get_update(base_sv))`` after
    changing 1% of the attributes of a base state of many entities (one write per
    change). The full-state sizes are printed as context (no goal). Goal: at most 1.10x.
    The context row "delta bytes, a day later" makes the same changes a simulated day after
    the replica started: stamps count milliseconds from a replica's start, so they take
    2-3 digits in the first seconds and 5 after a day (6 after a year).
growth
    Observers refresh every subject for many rounds; a replica that merged all observers
    encodes its full ``delta()``; that size is divided by the size of the same kind of
    replica holding only the final observations (fresh observers that observed once).
    Raw pycrdt's figure for the same refresh pattern is printed as context (no goal).
    Goal: at most 2.0.
forget churn
    A few live replicas declare entities and observe each other's; many replica ids
    churn through the cluster, each living briefly (it declares a few entities and
    observes the live replicas, and the hub observes it, then departs). After the forget
    window a live replica forgets them all (the timed rule), every live replica heartbeats
    until it has rotated its container once (leaving behind its observations that can no
    longer count), and the cluster syncs. The full ``delta()`` is
    divided by that of a cluster that only ever had the live replicas. Goal: at most 1.5.

signing
    Signed mode against the same work unsigned, in one run: ``update`` and ``observe``
    with a signing key and a trust list divided by the same calls without; a fresh
    replica merging single first-write deltas of a signed source, divided by the same
    from an unsigned source (first writes, as in "merge, first writes"); ingest (merge and
    restore of the full state of the ingest
    mix, the smaller size) signed divided by unsigned. Merges are measured with one change
    a delta (each carries a seal, so each costs one signature check) and with eight.
    Goal: at most 3.0x each. Two context rows split the one-change merge: "signed: merge
    unchecked" merges the signed deltas into a signed replica whose checks are taken off
    (what the seal entries cost the merge), and "signed: seal check alone" times reading
    and verifying their seals and nothing else; both against the unsigned merge. A checked
    one-change merge cannot cost less than the sum of the two. The context row "signed:
    bytes" is the signed full state's size against the unsigned one, with the bytes each
    entry adds.

Timing methodology, for a shared, noisy machine: setup (building a replica or a doc and
its initial state) is never timed; each repetition sets both sides up, then runs their
operations in alternating chunks (the side that goes first flips every chunk and every
repetition), so a burst of noise hits both sides alike; the collector is disabled during
a repetition, after a collection; one repetition is a discarded warm-up. A figure is the
ratio of the median wall times (``time.perf_counter``) of the repetitions. Two cross-checks
are printed: the ratio of median CPU times (``time.process_time``, blind to time stolen
by other guests) and the ratio of the fastest wall times.
"""

from __future__ import annotations

import gc
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from benchenv import run_sections
from pycrdt import Doc, Map

from sphaera_crdt import Replica
from sphaera_crdt.core.trust import Trust, public_key_text
from sphaera_crdt.core.ydoc import DROP_BATCH

#: Attribute names, and the kind of value each one holds (see :func:`attr_value`).
ATTRS: Final = ("port", "load", "role", "healthy", "zone", "weight")
#: One Yrs client id for both sides of the bytes figure, so ids cost the same bytes.
CLIENT_ID: Final = 0x2345_6789
TTL: Final = 30.0
#: Simulated start time of the growth and bytes figures (seconds).
EPOCH: Final = 1_750_000_000.0
#: How long the replica of the second bytes figure has been up when the changes are made.
UPTIME: Final = 86_400.0

#: Runs the operations ``[start, stop)`` of a timed workload.
Body = Callable[[int, int], object]
#: Builds one side's fresh state (untimed) and returns the body that does the timed work.
Setup = Callable[[], Body]
#: Each repetition runs ours and raw in this many alternating chunks.
CHUNKS: Final = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """How much work each figure does."""

    reps: int
    update_entities: int
    update_attrs: int
    update_rounds: int
    observe_subjects: int
    observe_rounds: int
    merge_deltas: int
    merge_entities: int
    merge_subjects: int
    bytes_entities: int
    bytes_attrs: int
    bytes_changed: float
    growth_observers: int
    growth_subjects: int
    growth_rounds: int
    forget_live: int = 5
    forget_entities: int = 200
    forget_churn: int = 1_000
    #: entities of the two ingest figures (the smaller, then the larger)
    ingest_entities: tuple[int, int] = (20_000, 100_000)
    ingest_reps: int = 5

    def __post_init__(self) -> None:
        if self.reps < 1 or not 1 <= self.update_attrs <= len(ATTRS):
            raise ValueError("reps must be >= 1 and update_attrs within ATTRS")
        if not 1 <= self.bytes_attrs <= len(ATTRS) or not 0 < self.bytes_changed <= 1:
            raise ValueError("bytes_attrs must be within ATTRS and bytes_changed in (0, 1]")


FULL: Final = Scale(
    reps=5,
    update_entities=2_000,
    update_attrs=4,
    update_rounds=2,
    observe_subjects=1_000,
    observe_rounds=10,
    merge_deltas=10_000,
    merge_entities=2_000,
    merge_subjects=1_000,
    bytes_entities=10_000,
    bytes_attrs=4,
    bytes_changed=0.01,
    growth_observers=10,
    growth_subjects=1_000,
    growth_rounds=100,
)
QUICK: Final = Scale(
    reps=2,
    update_entities=100,
    update_attrs=4,
    update_rounds=2,
    observe_subjects=100,
    observe_rounds=5,
    merge_deltas=300,
    merge_entities=100,
    merge_subjects=100,
    bytes_entities=500,
    bytes_attrs=4,
    bytes_changed=0.01,
    growth_observers=2,
    growth_subjects=100,
    growth_rounds=15,
    forget_live=3,
    forget_entities=20,
    forget_churn=60,
    ingest_entities=(300, 1_000),
    ingest_reps=1,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One reported figure: a ratio of ours to raw (or of grown to fresh) and its goal.

    A figure without a goal is context for the one before it.
    """

    name: str
    ratio: float
    goal: float | None
    ours: float
    raw: float
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


# -- workload data -----------------------------------------------------------------------------


def entity_ids(count: int) -> list[str]:
    return [f"svc-{index:05d}" for index in range(count)]


def subject_ids(count: int) -> list[str]:
    return [f"host-{index:05d}" for index in range(count)]


def attr_value(attr: int, n: int) -> Any:
    """A value of the kind attribute ``attr`` holds, varying with ``n``."""
    kind = attr % 6
    if kind == 0:
        return 5_000 + n % 1_000
    if kind == 1:
        return (n % 397) / 4
    if kind == 2:
        return f"role-{n % 7}"
    if kind == 3:
        return n % 2 == 0
    if kind == 4:
        return f"eu-west-{n % 3}"
    return n % 100


def initial_attrs(attrs: int) -> dict[str, Any]:
    return {ATTRS[index]: attr_value(index, 0) for index in range(attrs)}


# -- timing ------------------------------------------------------------------------------------


def chunk_bounds(ops: int, chunks: int) -> list[tuple[int, int]]:
    """Split ``range(ops)`` into at most ``chunks`` consecutive, near-equal ranges."""
    count = max(1, min(chunks, ops))
    edges = [ops * index // count for index in range(count + 1)]
    return list(itertools.pairwise(edges))


def run_pair(ours: Setup, raw: Setup, ops: int, *, flip: bool) -> tuple[list[float], ...]:
    """Set both sides up (untimed), then time their operations chunk by chunk, alternating.

    Returns ([ours, raw] wall seconds by ``perf_counter``, [ours, raw] CPU seconds).
    """
    bodies = (ours(), raw())
    wall, cpu = [0.0, 0.0], [0.0, 0.0]
    gc.collect()
    gc.disable()
    try:
        for index, (start, stop) in enumerate(chunk_bounds(ops, CHUNKS)):
            for side in (1, 0) if (index + flip) % 2 else (0, 1):
                body = bodies[side]
                cpu_start = time.process_time()
                wall_start = time.perf_counter()
                body(start, stop)
                wall[side] += time.perf_counter() - wall_start
                cpu[side] += time.process_time() - cpu_start
    finally:
        gc.enable()
    return wall, cpu


@dataclass(frozen=True, slots=True, kw_only=True)
class Samples:
    """Wall and CPU seconds of each repetition of each side."""

    ours: list[float]
    raw: list[float]
    ours_cpu: list[float]
    raw_cpu: list[float]


def compare(ours: Setup, raw: Setup, ops: int, reps: int) -> Samples:
    """Warm up once, then time ``reps`` repetitions of both sides, interleaved by chunks."""
    run_pair(ours, raw, ops, flip=False)
    samples = Samples(ours=[], raw=[], ours_cpu=[], raw_cpu=[])
    for rep in range(reps):
        wall, cpu = run_pair(ours, raw, ops, flip=bool(rep % 2))
        samples.ours.append(wall[0])
        samples.raw.append(wall[1])
        samples.ours_cpu.append(cpu[0])
        samples.raw_cpu.append(cpu[1])
    return samples


def time_figure(name: str, goal: float | None, samples: Samples, ops: int) -> Figure:
    """The ratio of median wall times; CPU times go to the detail as a cross-check."""
    ours, raw = statistics.median(samples.ours), statistics.median(samples.raw)
    ours_cpu, raw_cpu = statistics.median(samples.ours_cpu), statistics.median(samples.raw_cpu)
    return Figure(
        name=name,
        ratio=ours / raw,
        goal=goal,
        ours=ours * 1e6 / ops,
        raw=raw * 1e6 / ops,
        unit="us/op",
        detail={
            "operations": ops,
            "ours_seconds": samples.ours,
            "raw_seconds": samples.raw,
            "ours_median_s": ours,
            "raw_median_s": raw,
            "ours_cpu_seconds": samples.ours_cpu,
            "raw_cpu_seconds": samples.raw_cpu,
            "cpu_ratio": ours_cpu / raw_cpu if raw_cpu > 0 else None,
            "min_ratio": min(samples.ours) / min(samples.raw),
        },
    )


# -- 1. write cost -----------------------------------------------------------------------------


def update_ops(scale: Scale) -> list[tuple[str, str, Any]]:
    ops = []
    for rnd in range(1, scale.update_rounds + 1):
        for index, entity in enumerate(entity_ids(scale.update_entities)):
            for attr in range(scale.update_attrs):
                ops.append((entity, ATTRS[attr], attr_value(attr, rnd * 7 + index)))
    return ops


def bench_update(scale: Scale) -> list[Figure]:
    entities = entity_ids(scale.update_entities)
    start = initial_attrs(scale.update_attrs)
    ops = update_ops(scale)

    def ours() -> Body:
        replica = Replica("bench")
        for entity in entities:
            replica.declare(entity, attrs=start)

        def body(start: int, stop: int) -> None:
            update = replica.update
            for entity, attr, value in ops[start:stop]:
                update(entity, {attr: value})

        return body

    def raw() -> Body:
        doc: Doc[Any] = Doc()
        table = doc.get("entities", type=Map)
        for entity in entities:
            with doc.transaction():
                for attr, value in start.items():
                    table[f"{entity}/{attr}"] = value

        def body(start: int, stop: int) -> None:
            for entity, attr, value in ops[start:stop]:
                table[f"{entity}/{attr}"] = value

        return body

    return [
        time_figure("write cost: update", 2.0, compare(ours, raw, len(ops), scale.reps), len(ops))
    ]


def bench_observe(scale: Scale) -> list[Figure]:
    subjects = subject_ids(scale.observe_subjects)
    ops = [
        (subject, rnd * 10 + index % 10)
        for rnd in range(scale.observe_rounds)
        for index, subject in enumerate(subjects)
    ]

    def ours() -> Body:
        replica = Replica("obs-0", clock=time.time)

        def body(start: int, stop: int) -> None:
            observe = replica.observe
            for subject, value in ops[start:stop]:
                observe(subject, ok=True, value=value, ttl=TTL)

        return body

    def raw() -> Body:
        doc: Doc[Any] = Doc()
        table = doc.get("observations", type=Map)
        observer = "obs-0"

        def body(start: int, stop: int) -> None:
            clock = time.time
            for subject, value in ops[start:stop]:
                table[f"{observer}/{subject}"] = {
                    "ok": True,
                    "value": value,
                    "at": clock(),
                    "ttl": TTL,
                }

        return body

    return [
        time_figure("write cost: observe", 2.0, compare(ours, raw, len(ops), scale.reps), len(ops))
    ]


# -- 2. merge cost -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeWorkload:
    ours_base: bytes
    ours_deltas: list[bytes]
    raw_base: bytes
    raw_deltas: list[bytes]


def merge_workload(scale: Scale, *, first_writes: bool) -> MergeWorkload:
    """N single-change deltas from a source replica and from a raw source doc.

    Each change alternates between an observation and an attribute update. By default they
    refresh existing keys (subjects and attributes in turn), so the source accumulates
    overwritten items; with ``first_writes`` every change writes a key never written
    before, so neither document holds a deleted item and no delta carries a delete set.
    """
    entities = entity_ids(scale.merge_entities)
    subjects = subject_ids(scale.merge_subjects)
    start = initial_attrs(scale.update_attrs)
    source = Replica("src")
    doc: Doc[Any] = Doc()
    table = doc.get("entities", type=Map)
    observations = doc.get("observations", type=Map)
    for entity in entities:
        source.declare(entity, attrs=start)
        with doc.transaction():
            for attr, value in start.items():
                table[f"{entity}/{attr}"] = value
    ours_base, raw_base = source.delta(), doc.get_update()
    ours_deltas, raw_deltas = [], []
    for index in range(scale.merge_deltas):
        step = index // 2
        ours_sv, raw_sv = source.state_vector(), doc.get_state()
        if index % 2 == 0:
            subject = f"new-{step:06d}" if first_writes else subjects[step % len(subjects)]
            at = time.time()
            source.observe(subject, ok=True, value=index, ttl=TTL)
            observations[f"src/{subject}"] = {"ok": True, "value": index, "at": at, "ttl": TTL}
        else:
            entity = entities[step % len(entities)]
            slot = (step // len(entities)) % scale.update_attrs
            name = f"extra-{step:06d}" if first_writes else ATTRS[slot]
            value = attr_value(slot, index)
            source.update(entity, {name: value})
            table[f"{entity}/{name}"] = value
        ours_deltas.append(source.delta(ours_sv))
        raw_deltas.append(doc.get_update(raw_sv))
    return MergeWorkload(
        ours_base=ours_base, ours_deltas=ours_deltas, raw_base=raw_base, raw_deltas=raw_deltas
    )


def raw_merges(work: MergeWorkload) -> Setup:
    """Raw pycrdt applying the workload's deltas to a doc that holds its base."""

    def setup() -> Body:
        doc: Doc[Any] = Doc()
        doc.apply_update(work.raw_base)

        def body(start: int, stop: int) -> None:
            apply = doc.apply_update
            for delta in work.raw_deltas[start:stop]:
                apply(delta)

        return body

    return setup


def merge_figure(scale: Scale, name: str, goal: float | None, *, first_writes: bool) -> Figure:
    work = merge_workload(scale, first_writes=first_writes)

    def ours() -> Body:
        replica = Replica("dst")
        replica.merge(work.ours_base)

        def body(start: int, stop: int) -> None:
            merge = replica.merge
            for delta in work.ours_deltas[start:stop]:
                merge(delta)

        return body

    samples = compare(ours, raw_merges(work), scale.merge_deltas, scale.reps)
    figure = time_figure(name, goal, samples, scale.merge_deltas)
    figure.detail["ours_delta_bytes_mean"] = sum(map(len, work.ours_deltas)) / scale.merge_deltas
    figure.detail["raw_delta_bytes_mean"] = sum(map(len, work.raw_deltas)) / scale.merge_deltas
    return figure


def bench_merge(scale: Scale) -> list[Figure]:
    """The goal figure (refreshes), then the same with first writes only, and the walk
    every merge starts with, as context."""
    return [
        merge_figure(scale, "merge cost", 1.5, first_writes=False),
        merge_figure(scale, "merge, first writes", 3.0, first_writes=True),
        walk_figure(scale),
    ]


def walk_figure(scale: Scale) -> Figure:
    """Context for "merge, first writes": only the walk of each delta that checks the
    untrusted bytes and finds what they need (``updates.shape``, the causal gate's and the
    fail-closed check's), against raw pycrdt applying its deltas. A merge cannot cost less
    than this walk plus an apply."""
    from sphaera_crdt.core.updates import shape

    work = merge_workload(scale, first_writes=True)

    def walk() -> Body:
        def body(start: int, stop: int) -> None:
            for delta in work.ours_deltas[start:stop]:
                shape(delta)

        return body

    samples = compare(walk, raw_merges(work), scale.merge_deltas, scale.reps)
    return time_figure("merge, first writes: the walk alone", None, samples, scale.merge_deltas)


# -- ingest ------------------------------------------------------------------------------------


def ingest_source(entities: int, *, signed: bool = False) -> bytes:
    """The full state of a replica holding ``entities`` entities of a realistic mix.

    Each has a kind and three attributes (an int, a string, a float); nine in ten have a
    rule (``exists`` of the entity before it); the replica observes one in four.
    """
    clock = SimClock(EPOCH)
    source = Replica("src", clock=clock, **(signing("src") if signed else {}))
    for index in range(entities):
        entity = f"svc-{index:06d}"
        source.declare(
            entity,
            kind="service",
            attrs={
                "port": 8000 + index % 1000,
                "zone": f"zone-{index % 3}",
                "weight": (index % 397) / 4,
            },
            requires=None if index % 10 == 0 else {"exists": f"svc-{index - 1:06d}"},
        )
        if index % 4 == 0:
            source.observe(entity, ok=True, value={"latency": index % 50}, ttl=TTL)
        clock.now += 0.001
    return source.delta()


def in_turn(
    sides: Sequence[Callable[[], object]], reps: int, collector_on: frozenset[int] = frozenset()
) -> tuple[list[list[float]], list[list[float]]]:
    """Run each side ``reps + 1`` times (the first round a warm-up), the order rotating every
    round, the collector off during a call (except for the sides ``collector_on`` names,
    by index); each side's timed seconds (what it returns) and CPU seconds of the whole
    call (setup included, as a cross-check only)."""
    times: list[list[float]] = [[] for _ in sides]
    cpu: list[list[float]] = [[] for _ in sides]
    for rep in range(reps + 1):
        for offset in range(len(sides)):
            side = (rep + offset) % len(sides)
            gc.collect()
            if side not in collector_on:
                gc.disable()
            try:
                started = time.process_time()
                elapsed = sides[side]()
                used = time.process_time() - started
            finally:
                gc.enable()
            if rep:
                assert isinstance(elapsed, float)
                times[side].append(elapsed)
                cpu[side].append(used)
    return times, cpu


def ingest_figures(entities: int, reps: int, suffix: str) -> list[Figure]:
    """``Replica.merge`` of a full state into a fresh replica and ``Replica.restore`` from
    it, each divided by raw pycrdt applying it to a fresh ``Doc`` and reading every entry
    (``to_py()``). The three sides run in turn, the order rotating every repetition."""
    full = ingest_source(entities)
    clock = SimClock(EPOCH + entities)

    def merge() -> object:
        replica = Replica("dst", clock=clock)
        started = time.perf_counter()
        replica.merge(full)
        elapsed = time.perf_counter() - started
        if len(replica.entity_ids("svc-")) != entities:
            raise AssertionError("merge lost entities")
        return elapsed

    def restore_as(replica_id: str) -> Callable[[], object]:
        """Restore the state as ``replica_id``: its writer (who moves its entries) or
        another replica (who has none to move)."""

        def restore() -> object:
            started = time.perf_counter()
            replica = Replica.restore(replica_id, [full], clock=clock)
            elapsed = time.perf_counter() - started
            if len(replica.entity_ids("svc-")) != entities:
                raise AssertionError("restore lost entities")
            return elapsed

        return restore

    def raw() -> object:
        started = time.perf_counter()
        doc: Doc[Any] = Doc()
        doc.apply_update(full)
        read = doc.get("w", type=Map).to_py()
        elapsed = time.perf_counter() - started
        if sum(map(len, read.values())) < entities:
            raise AssertionError("raw read lost entries")
        return elapsed

    def raw_move() -> object:
        """What moving the source's entries costs pycrdt itself, as restore moves them:
        every entry written into a fresh map in one transaction, the old map's entries
        removed DROP_BATCH per transaction, and its root key overwritten."""
        doc: Doc[Any] = Doc()
        doc.apply_update(full)
        root = doc.get("w", type=Map)
        (old_key,) = [key for key in root.keys() if key.startswith("src\x1f")]
        old = root[old_key]
        entries = list(old.items())
        started = time.perf_counter()
        root["src\x1fmoved"] = Map()
        fresh = root["src\x1fmoved"]
        # through the integrated types, as the replica writes (pycrdt's per-call
        # bookkeeping would cost more than the move)
        handle = doc._doc.create_transaction()
        insert = fresh.integrated.insert
        for key, text in entries:
            insert(handle, key, text)
        handle.commit()
        handle.drop()
        remove = old.integrated.remove
        for start in range(0, len(entries), DROP_BATCH):
            handle = doc._doc.create_transaction()
            for key, _ in entries[start : start + DROP_BATCH]:
                remove(handle, key)
            handle.commit()
            handle.drop()
        root[old_key] = ""
        elapsed = time.perf_counter() - started
        if len(fresh) != len(entries):
            raise AssertionError("raw move lost entries")
        return elapsed

    sides = (merge, restore_as("src"), raw, restore_as("dst"), merge, raw, raw_move)
    times, cpu = in_turn(sides, reps, collector_on=frozenset({4, 5}))
    figures = []
    for side, raw_side, name, goal in (
        (0, 2, "ingest: merge", 2.0),
        (1, 2, "ingest: restore", 2.0),
        (3, 2, "ingest: restore, nothing of its own to move", None),
        (6, 2, "ingest: raw pycrdt moving the entries restore moves", None),
        (4, 5, "ingest: merge, both with the collector on", None),
    ):
        ours = statistics.median(times[side])
        base = statistics.median(times[raw_side])
        figures.append(
            Figure(
                name=name + suffix,
                ratio=ours / base,
                goal=goal,
                ours=ours,
                raw=base,
                unit="s",
                detail={
                    "entities": entities,
                    "full_state_bytes": len(full),
                    "ours_seconds": times[side],
                    "raw_seconds": times[raw_side],
                    "ours_cpu_seconds": cpu[side],
                    "raw_cpu_seconds": cpu[raw_side],
                    "cpu_ratio": statistics.median(cpu[side]) / statistics.median(cpu[raw_side]),
                    "min_ratio": min(times[side]) / min(times[raw_side]),
                },
            )
        )
    return figures


def bench_ingest(scale: Scale) -> list[Figure]:
    """Ingest of a full state, at the smaller and the larger size."""
    small, large = scale.ingest_entities
    return [
        *ingest_figures(small, scale.ingest_reps, ""),
        *ingest_figures(large, scale.ingest_reps, ", large"),
    ]


# -- signing -----------------------------------------------------------------------------------

_KEYS: dict[str, Any] = {}
#: Changes a delta carries in the second signed merge figure.
SIGNED_BATCH: Final = 8


def signing(replica_id: str) -> dict[str, Any]:
    """The ``signing_key`` and ``trust`` arguments of a signed replica in these benchmarks."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not _KEYS:
        keys = {name: Ed25519PrivateKey.generate() for name in ("src", "dst", "bench", "obs-0")}
        _KEYS["keys"] = keys
        _KEYS["trust"] = Trust.parse(
            "".join(f"{n} {public_key_text(k)}\n" for n, k in keys.items())
        )
    return {"signing_key": _KEYS["keys"][replica_id], "trust": _KEYS["trust"]}


def bench_signing(scale: Scale) -> list[Figure]:
    """Signed mode against the same work unsigned (see the module's docstring)."""
    figures = []
    entities = entity_ids(scale.update_entities)
    start = initial_attrs(scale.update_attrs)
    ops = update_ops(scale)

    def updates(signed: bool) -> Setup:
        def setup() -> Body:
            replica = Replica("bench", **(signing("bench") if signed else {}))
            for entity in entities:
                replica.declare(entity, attrs=start)

            def body(begin: int, end: int) -> None:
                update = replica.update
                for entity, attr, value in ops[begin:end]:
                    update(entity, {attr: value})

            return body

        return setup

    samples = compare(updates(True), updates(False), len(ops), scale.reps)
    figures.append(time_figure("signed: update", 3.0, samples, len(ops)))
    observations = [
        (subject, rnd)
        for rnd in range(scale.observe_rounds)
        for subject in subject_ids(scale.observe_subjects)
    ]

    def observes(signed: bool) -> Setup:
        def setup() -> Body:
            replica = Replica("obs-0", **(signing("obs-0") if signed else {}))

            def body(begin: int, end: int) -> None:
                observe = replica.observe
                for subject, value in observations[begin:end]:
                    observe(subject, ok=True, value=value, ttl=TTL)

            return body

        return setup

    samples = compare(observes(True), observes(False), len(observations), scale.reps)
    figures.append(time_figure("signed: observe", 3.0, samples, len(observations)))

    def deltas(signed: bool, batch: int) -> tuple[bytes, list[bytes]]:
        """A base state and deltas of ``batch`` first writes each (from a fresh source)."""
        source = Replica("src", **(signing("src") if signed else {}))
        for entity in entities:
            source.declare(entity, attrs=start)
        base, found = source.delta(), []
        before = source.state_vector()
        for index in range(scale.merge_deltas * batch):
            if index % 2:
                source.update(entities[index % len(entities)], {f"extra-{index:06d}": index})
            else:
                source.observe(f"new-{index:06d}", ok=True, value=index, ttl=TTL)
            if index % batch == batch - 1:
                found.append(source.delta(before))
                before = source.state_vector()
        return base, found

    for batch, goal in ((1, 3.0), (SIGNED_BATCH, 3.0)):
        work = {signed: deltas(signed, batch) for signed in (True, False)}

        def merges(signed: bool, work: dict[bool, tuple[bytes, list[bytes]]] = work) -> Setup:
            base, found = work[signed]

            def setup() -> Body:
                replica = Replica("dst", **(signing("dst") if signed else {}))
                replica.merge(base)

                def body(begin: int, end: int) -> None:
                    merge = replica.merge
                    for delta in found[begin:end]:
                        merge(delta)

                return body

            return setup

        name = (
            "signed: merge, one change a delta"
            if batch == 1
            else (f"signed: merge, {batch} changes a delta")
        )
        samples = compare(merges(True), merges(False), scale.merge_deltas, scale.reps)
        figure = time_figure(name, goal, samples, scale.merge_deltas)
        figure.detail["ours_delta_bytes_mean"] = sum(map(len, work[True][1])) / len(work[True][1])
        figure.detail["raw_delta_bytes_mean"] = sum(map(len, work[False][1])) / len(work[False][1])
        figures.append(figure)
        if batch == 1:
            figures.append(unchecked_merges(*work[True], merges(False), scale))
            figures.append(seal_checks(*work[True], merges(False), scale))
    figures.extend(signed_ingest(scale.ingest_entities[0], scale.ingest_reps))
    return figures


def unchecked_merges(
    base: bytes, signed_deltas: list[bytes], unsigned_merges: Setup, scale: Scale
) -> Figure:
    """Context for the one-change merge: a signed replica merging the signed deltas with
    its door taken off (no item is checked, no seal verified), against merging the
    unsigned deltas: what the seal entries themselves cost. Measurement only; a replica
    never runs so."""

    def unchecked() -> Body:
        replica = Replica("dst", **signing("dst"))
        replica.merge(base)
        replica._door = None  # the checks off, for this measurement only

        def body(begin: int, end: int) -> None:
            merge = replica.merge
            for delta in signed_deltas[begin:end]:
                merge(delta)

        return body

    samples = compare(unchecked, unsigned_merges, len(signed_deltas), scale.reps)
    return time_figure(
        "signed: merge unchecked, vs unsigned merge", None, samples, len(signed_deltas)
    )


def seal_checks(
    base: bytes, signed_deltas: list[bytes], unsigned_merges: Setup, scale: Scale
) -> Figure:
    """Context for the one-change merge: reading and checking each delta's seal, and
    nothing else, against merging the unsigned deltas (the least any signed merge costs is
    the sum of the two)."""
    from sphaera_crdt.core.seals import is_seal_key, parse_seal
    from sphaera_crdt.core.updates import MAP, shape

    trust = _KEYS["trust"]
    texts = [
        next(
            s.text
            for s in shape(delta, items=True).items or ()
            if s.key is not None and is_seal_key(s.key)
        )
        for delta in signed_deltas
    ]
    container = next(
        s.key for s in shape(base, items=True).items or () if s.kind == MAP and s.key is not None
    )

    def checks() -> Body:
        verifier = trust.verifier("src")
        assert verifier is not None

        def body(begin: int, end: int) -> None:
            for text in texts[begin:end]:
                seal = parse_seal(text or "")
                if seal is None or not seal.verify(container, verifier):
                    raise AssertionError("a seal of the signed source does not verify")

        return body

    samples = compare(checks, unsigned_merges, len(texts), scale.reps)
    return time_figure("signed: seal check alone, vs unsigned merge", None, samples, len(texts))


def signed_ingest(entities: int, reps: int) -> list[Figure]:
    """Merge and restore of the ingest mix's full state, signed against unsigned."""
    full = {True: ingest_source(entities, signed=True), False: ingest_source(entities)}
    clock = SimClock(EPOCH + entities)

    def merge(signed: bool) -> float:
        replica = Replica("dst", clock=clock, **(signing("dst") if signed else {}))
        started = time.perf_counter()
        replica.merge(full[signed])
        elapsed = time.perf_counter() - started
        if len(replica.entity_ids("svc-")) != entities:
            raise AssertionError("merge lost entities")
        return elapsed

    def restore(signed: bool) -> float:
        started = time.perf_counter()
        replica = Replica.restore(
            "src", [full[signed]], clock=clock, **(signing("src") if signed else {})
        )
        elapsed = time.perf_counter() - started
        if len(replica.entity_ids("svc-")) != entities:
            raise AssertionError("restore lost entities")
        return elapsed

    times, _ = in_turn(
        (
            lambda: merge(True),
            lambda: merge(False),
            lambda: restore(True),
            lambda: restore(False),
        ),
        reps,
    )
    figures = []
    for name, signed_side in (("signed: ingest merge", 0), ("signed: ingest restore", 2)):
        ours, raw = statistics.median(times[signed_side]), statistics.median(times[signed_side + 1])
        figures.append(
            Figure(
                name=name,
                ratio=ours / raw,
                goal=3.0,
                ours=ours,
                raw=raw,
                unit="s",
                detail={
                    "entities": entities,
                    "ours_seconds": times[signed_side],
                    "raw_seconds": times[signed_side + 1],
                    "min_ratio": min(times[signed_side]) / min(times[signed_side + 1]),
                },
            )
        )
    entries = sum(1 for _ in Replica.restore("src", [full[False]], clock=clock)._doc.own_entries)
    added = len(full[True]) - len(full[False])
    figures.append(
        Figure(
            name="signed: bytes",
            ratio=len(full[True]) / len(full[False]),
            goal=None,
            ours=len(full[True]),
            raw=len(full[False]),
            unit="B",
            detail={"entities": entities, "entries": entries, "bytes_per_entry": added / entries},
        )
    )
    return figures


# -- 3. delta bytes ----------------------------------------------------------------------------


def bench_bytes(scale: Scale) -> list[Figure]:
    return [
        delta_bytes(scale, "delta bytes", 1.10, uptime=0.0),
        delta_bytes(scale, "delta bytes, a day later", None, uptime=UPTIME),
    ]


def delta_bytes(scale: Scale, name: str, goal: float | None, *, uptime: float) -> Figure:
    """The delta bytes figure; the changes are made ``uptime`` seconds after the replica
    started (stamps count milliseconds from a replica's start)."""
    entities = entity_ids(scale.bytes_entities)
    start = initial_attrs(scale.bytes_attrs)
    clock = SimClock(EPOCH)
    replica = Replica("bench", client_id=CLIENT_ID, clock=clock)
    doc: Doc[Any] = Doc(client_id=CLIENT_ID)
    table = doc.get("entities", type=Map)
    for entity in entities:
        replica.declare(entity, attrs=start)
        with doc.transaction():
            for attr, value in start.items():
                table[f"{entity}/{attr}"] = value
    clock.now += uptime
    ours_sv, raw_sv = replica.state_vector(), doc.get_state()
    ours_base_full, raw_base_full = len(replica.delta()), len(doc.get_update())

    pairs = [(entity, slot) for entity in entities for slot in range(scale.bytes_attrs)]
    changed = random.Random(20_260_101).sample(
        pairs, max(1, round(len(pairs) * scale.bytes_changed))
    )
    for index, (entity, slot) in enumerate(changed):
        value = attr_value(slot, index + 1)
        clock.now += 0.001
        replica.update(entity, {ATTRS[slot]: value})
        table[f"{entity}/{ATTRS[slot]}"] = value
    ours, raw = len(replica.delta(ours_sv)), len(doc.get_update(raw_sv))
    return Figure(
        name=name,
        ratio=ours / raw,
        goal=goal,
        ours=ours,
        raw=raw,
        unit="B",
        detail={
            "uptime_s": uptime,
            "entities": len(entities),
            "attrs_per_entity": scale.bytes_attrs,
            "changed_attrs": len(changed),
            "ours_delta_bytes": ours,
            "raw_delta_bytes": raw,
            "ours_full_state_bytes_base": ours_base_full,
            "raw_full_state_bytes_base": raw_base_full,
            "ours_full_state_bytes": len(replica.delta()),
            "raw_full_state_bytes": len(doc.get_update()),
            "ours_state_vector_bytes": len(replica.state_vector()),
            "raw_state_vector_bytes": len(doc.get_state()),
        },
    )


# -- 4. growth ---------------------------------------------------------------------------------


class SimClock:
    """A clock the benchmark advances by hand, so runs are reproducible."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sink_size(observers: Sequence[Replica], clock: SimClock) -> tuple[int, Replica]:
    sink = Replica("sink", clock=clock)
    for observer in observers:
        sink.merge(observer.delta())
    return len(sink.delta()), sink


def observed_value(rnd: int, index: int) -> Any:
    return {"latency_ms": (rnd * 31 + index) % 500}


def bench_growth(scale: Scale) -> list[Figure]:
    subjects = subject_ids(scale.growth_subjects)
    names = [f"obs-{index:02d}" for index in range(scale.growth_observers)]
    last = scale.growth_rounds - 1

    clock = SimClock(EPOCH)
    observers = [Replica(name, clock=clock) for name in names]
    for rnd in range(scale.growth_rounds):
        clock.now = EPOCH + rnd
        for observer in observers:
            observe = observer.observe
            for index, subject in enumerate(subjects):
                observe(subject, ok=index % 5 != 0, value=observed_value(rnd, index), ttl=TTL)
    grown, grown_sink = sink_size(observers, clock)

    fresh_clock = SimClock(EPOCH + last)
    fresh_observers = [Replica(name, clock=fresh_clock) for name in names]
    for observer in fresh_observers:
        for index, subject in enumerate(subjects):
            observer.observe(subject, ok=index % 5 != 0, value=observed_value(last, index), ttl=TTL)
    fresh, fresh_sink = sink_size(fresh_observers, fresh_clock)

    def final(sink: Replica) -> list[tuple[str, str, bool, Any, float, float | None]]:
        return [(o.observer, o.subject, o.ok, o.value, o.at, o.ttl) for o in sink.observations()]

    if final(grown_sink) != final(fresh_sink):
        raise AssertionError("growth: the refreshed and the fresh replicas disagree")

    raw_grown, raw_fresh = raw_growth(names, subjects, scale.growth_rounds)
    figure = Figure(
        name="growth",
        ratio=grown / fresh,
        goal=2.0,
        ours=grown,
        raw=fresh,
        unit="B",
        detail={
            "observers": len(names),
            "subjects": len(subjects),
            "rounds": scale.growth_rounds,
            "observe_calls": len(names) * len(subjects) * scale.growth_rounds,
            "grown_state_bytes": grown,
            "fresh_state_bytes": fresh,
            "raw_grown_state_bytes": raw_grown,
            "raw_fresh_state_bytes": raw_fresh,
            "raw_growth_ratio": raw_grown / raw_fresh,
        },
    )
    return [figure]


def raw_growth(names: Sequence[str], subjects: Sequence[str], rounds: int) -> tuple[int, int]:
    """Raw pycrdt, one doc per observer refreshing flat keys: (grown, fresh) merged sizes."""

    def merged(rounds_run: range) -> int:
        sink: Doc[Any] = Doc()
        for name in names:
            doc: Doc[Any] = Doc()
            table = doc.get("observations", type=Map)
            for rnd in rounds_run:
                for index, subject in enumerate(subjects):
                    table[f"{name}/{subject}"] = {
                        "ok": index % 5 != 0,
                        "value": observed_value(rnd, index),
                        "at": EPOCH + rnd,
                        "ttl": TTL,
                    }
            sink.apply_update(doc.get_update())
        return len(sink.get_update())

    return merged(range(rounds)), merged(range(rounds - 1, rounds))


FORGET_AFTER: Final = 3600.0


def churned_state(scale: Scale, churn: int) -> tuple[int, int]:
    """(full state size, replicas forgotten) of a live cluster that saw ``churn`` departures."""
    clock = SimClock(EPOCH)
    live = [
        Replica(f"live-{index}", clock=clock, forget_after=FORGET_AFTER)
        for index in range(scale.forget_live)
    ]

    def sync() -> None:
        for source in live:
            for target in live:
                if source is not target:
                    target.merge(source.delta(target.state_vector()))

    for index, replica in enumerate(live):
        for entity in range(scale.forget_entities):
            replica.declare(
                f"{replica.id}-e{entity}", kind="svc", attrs={"port": 8000 + entity, "zone": "z"}
            )
        peer = f"live-{(index + 1) % scale.forget_live}"
        for entity in range(scale.forget_entities):
            replica.observe(f"{peer}-e{entity}", ok=True, value={"ms": entity % 50}, ttl=TTL)
    sync()
    hub = live[0]
    for index in range(churn):
        clock.now += 1
        visitor = Replica(f"churn-{index:04d}", clock=clock)
        for entity in range(5):
            visitor.declare(f"{visitor.id}-e{entity}", attrs={"n": entity})
        for peer in live:
            visitor.observe(f"replica:{peer.id}", ok=True, ttl=TTL)
        hub.merge(visitor.delta(hub.state_vector()))
        # The hub observes the visitor at the exchange, as a node does.
        hub.observe(f"replica:{visitor.id}", ok=True, ttl=TTL)
    sync()
    clock.now += 2 * FORGET_AFTER
    for replica in live:
        replica.observe(replica.replica_entity, ok=True, ttl=TTL)
    sync()
    hub.tick()
    sync()
    # Heartbeats go on until every live replica has rotated its container once: a rotation
    # is where a replica leaves behind its observations that can no longer count.
    for replica in live:
        rotations = replica.rotations
        while replica.rotations == rotations:
            clock.now += 1
            replica.observe(replica.replica_entity, ok=True, ttl=TTL)
    sync()
    return len(hub.delta()), len(hub.forgotten())


def bench_forget(scale: Scale) -> list[Figure]:
    churned, forgotten = churned_state(scale, scale.forget_churn)
    if forgotten != scale.forget_churn:
        raise AssertionError(f"forget churn: {forgotten} of {scale.forget_churn} forgotten")
    only_live, _ = churned_state(scale, 0)
    figure = Figure(
        name="forget churn",
        ratio=churned / only_live,
        goal=1.5,
        ours=churned,
        raw=only_live,
        unit="B",
        detail={
            "live_replicas": scale.forget_live,
            "churned_replicas": scale.forget_churn,
            "churned_state_bytes": churned,
            "live_only_state_bytes": only_live,
        },
    )
    return [figure]


# -- report ------------------------------------------------------------------------------------


def describe(figure: Figure) -> str:
    if figure.unit == "s":
        return f"{figure.ours:10.3f} s      vs raw {figure.raw:8.3f} s"
    if figure.unit == "us/op":
        return f"{figure.ours:10.2f} us/op  vs raw {figure.raw:8.2f} us/op"
    if figure.name == "growth":
        return f"{figure.ours:10,.0f} B grown vs fresh {figure.raw:,.0f} B"
    if figure.name == "signed: bytes":
        return f"{figure.ours:10,.0f} B signed vs unsigned {figure.raw:,.0f} B"
    if figure.name == "forget churn":
        return f"{figure.ours:10,.0f} B churned vs live {figure.raw:,.0f} B"
    return f"{figure.ours:10,.0f} B      vs raw {figure.raw:8,.0f} B"


def report(figures: Sequence[Figure]) -> str:
    """The table of figures, then the context each figure needs to be read."""
    width = max(len("figure"), *(len(figure.name) for figure in figures))
    lines = [
        f"{'figure':<{width}} {'measured':<46} {'ratio':>7}  {'goal':>7}  result",
        "-" * (width + 73),
    ]
    for figure in figures:
        goal = "-" if figure.goal is None else f"<= {figure.goal:.2f}"
        lines.append(
            f"{figure.name:<{width}} {describe(figure):<46} {figure.ratio:>6.2f}x  "
            f"{goal:>7}  {figure.verdict}"
        )
    for key, label in (("cpu_ratio", "median CPU times"), ("min_ratio", "fastest wall times")):
        checks = [
            f"{figure.name.removeprefix('write cost: ')} {figure.detail[key]:.2f}x"
            for figure in figures
            if figure.detail.get(key) is not None
        ]
        if checks:
            lines.append(f"  cross-check, ratio of {label}: " + ", ".join(checks))
    for figure in figures:
        d = figure.detail
        if "ours_delta_bytes_mean" in d:
            lines.append(
                f"  {figure.name}: {d['operations']:,} deltas, mean size ours "
                f"{d['ours_delta_bytes_mean']:,.0f} B, raw {d['raw_delta_bytes_mean']:,.0f} B"
                + (
                    ""
                    if figure.goal is None
                    else " (get_update(sv) puts the source's whole delete set in every delta)"
                )
            )
        elif figure.name.startswith("ingest: merge"):
            lines.append(
                f"  {figure.name.replace('merge', 'merge and restore')}: {d['entities']:,} "
                f"entities, full state {d['full_state_bytes']:,} B; raw is a fresh Doc's "
                "apply_update and to_py()"
            )
        elif figure.name == "signed: bytes":
            lines.append(
                f"  signed: bytes: full state of {d['entities']:,} entities, "
                f"{d['entries']:,} entries: {d['bytes_per_entry']:.1f} B added per entry"
            )
        elif figure.name == "delta bytes":
            lines.append(
                f"  full state, {d['entities']:,} entities x {d['attrs_per_entity']} attrs: "
                f"ours {d['ours_full_state_bytes']:,} B, raw {d['raw_full_state_bytes']:,} B "
                f"({d['ours_full_state_bytes'] / d['raw_full_state_bytes']:.2f}x); "
                f"{d['changed_attrs']:,} attrs changed"
            )
        elif figure.name == "growth":
            lines.append(
                f"  growth, {d['observers']} observers x {d['subjects']:,} subjects x "
                f"{d['rounds']} rounds ({d['observe_calls']:,} observe calls); raw pycrdt, "
                f"same pattern: {d['raw_grown_state_bytes']:,} B grown vs "
                f"{d['raw_fresh_state_bytes']:,} B fresh ({d['raw_growth_ratio']:.1f}x)"
            )
    return "\n".join(lines)


SECTIONS: Final[tuple[Callable[[Scale], list[Figure]], ...]] = (
    bench_update,
    bench_observe,
    bench_merge,
    bench_ingest,
    bench_bytes,
    bench_growth,
    bench_forget,
    bench_signing,
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_sections(
        argv,
        doc=__doc__,
        title="core",
        sections=SECTIONS,
        scales=(FULL, QUICK),
        report=report,
        versions=lambda env: f"Python {env['python']}, pycrdt {env['pycrdt']}",
    )


if __name__ == "__main__":
    sys.exit(main())
