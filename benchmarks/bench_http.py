"""HTTP and gossip benchmark: real node processes on loopback, side by side in one run.

Run it from the repository root::

    python benchmarks/bench_http.py                  # full scale, two to three minutes
    python benchmarks/bench_http.py --quick          # everything scaled down, a smoke test
    python benchmarks/bench_http.py --json out.json  # also write every figure as JSON
    python benchmarks/bench_http.py --profile prof/  # also cProfile the servers, print tops
    python benchmarks/bench_http.py --only sync,idle # some sections only

Everything listens on 127.0.0.1 with ephemeral ports; every loop is bounded by a count or
a deadline, and every process the benchmark starts is stopped when it ends (and dies with
it if the benchmark is killed, on Linux). Each figure is printed with its goal and PASS or
MISS computed from this run's measurements; rows marked "context" have no goal.

The figures:

sync req/s vs raw
    ``POST /v1/sync`` requests per second answered by a node process (``sphaera serve
    --memory``), divided by the requests per second of a minimal aiohttp process whose
    POST handler reads the body and answers a fixed octet-stream body as long as the
    node's answer. Both are driven by the same load generator (this process: one aiohttp
    ``ClientSession``, a pool of ``workers`` connections, one worker per connection, a
    fixed number of requests per run), with the same body and headers
    (``Content-Type``, ``Sphaera-Replica``, ``Sphaera-Url``). The body is a realistic idle
    gossip request: SYNC_STEP1 with the state vector of a peer that holds what the node
    holds, so the node answers an empty SYNC_STEP2 and its own SYNC_STEP1: the figure
    measures protocol overhead. The node first receives a realistic state: 100 entities
    written by ``workers`` replicas (each replica writes with two Yrs client ids, so with
    4 workers the state vector has 10 clients, like a five-node cluster's). Several
    rounds alternate which target runs first; the figure is the median of the per-round
    ratios. Goal: at least 0.60.
sync+update req/s vs raw
    The same with SYNC_STEP1 followed by a small SYNC_UPDATE (one attribute change,
    authored by a per-worker replica, each request a new change that the node merges).
    Context. The server CPU seconds per request (``/proc/PID/stat``) of both targets are
    printed too: they show the overhead even when the load generator is the bottleneck.
replicated changes/s
    Three nodes: A in this process (``Node``, memory), B and C as ``sphaera serve
    --memory`` processes seeded with A. K entity changes (``Replica.update`` of one
    attribute of one of E entities, each call one change) are written on A's event loop
    in batches of ``batch`` changes, yielding to the loop between batches, so that gossip's
    eager pushes carry them. Counted: K divided by the time from the first write until
    both B and C hold A's whole state as of the last write (their state vectors, polled
    with a SYNC_STEP1 every 5 ms, cover A's). Median of several rounds (fresh entities
    each round, same processes). Goal: at least 20,000 changes/s.
status spread p50 / p99
    Five ``sphaera serve --memory`` processes, ``--gossip-interval 0.2 --fanout 2``, the
    first one the seed of the others. ``svc`` requires ``{"exists": "db"}``; each write
    declares or retracts ``db`` (alternately, at a random node, after a random pause of
    0.2-1 interval). Measured per write: from just before the HTTP write until every one
    of the five nodes has sent the ``change`` event of ``svc`` on its ``/v1/events``
    stream, in gossip intervals. p50 is context; goal for p99: at most 2 intervals.
idle exchange bytes
    Five in-process nodes (fanout 2), converged and idle (periodic rounds and heartbeats
    pushed far out of the way; the rounds are run by hand). Each peer's URL is a counting
    TCP proxy. Measured per peer exchange of a periodic round: sync body bytes of request
    plus response. Goal: no more than a state vector exchange needs, i.e. one request of
    STEP1 (3 + state vector bytes) answered by an empty STEP2 (5 bytes) and STEP1, computed
    from the converged state vector. Before measuring, every node exchanges once with
    every peer: what a node believes a peer holds can be older than the last change, and
    that first exchange then pushes data the peer has; it is reported apart.
idle round wire bytes
    The same rounds counted on the wire (request and response bytes, HTTP headers
    included) per round of one node (``fanout`` exchanges). Context.
live cluster sync B/s
    The five processes of the status figure left idle for a while: sync bytes per second
    per node (``/metrics`` counters, both directions), heartbeats and liveness
    observations included. Context.

The machine may be small and shared: figures are medians of rounds, the load generator
runs in a process of its own, and the server CPU time is printed next to throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import functools
import json
import math
import os
import pstats
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Final

import aiohttp
from aiohttp import web
from benchenv import environment
from prometheus_client.parser import text_string_to_metric_families

from sphaera_crdt import Replica
from sphaera_crdt.core import sync
from sphaera_crdt.core.lib0 import decode_state_vector, encode_state_vector
from sphaera_crdt.net.client import ApiClient, ApiError
from sphaera_crdt.node import Node, NodeConfig

HOST: Final = "127.0.0.1"
OCTETS: Final = "application/octet-stream"
LISTENING: Final = re.compile(r"listening on (https?://\S+)")
START_TIMEOUT: Final = 30.0
#: Gossip settings of the status figure (and of the live cluster context row).
INTERVAL: Final = 0.2
FANOUT: Final = 2
CLUSTER: Final = 5
#: A gossip interval long enough that no periodic round or heartbeat happens in a section.
NEVER: Final = 3600.0
#: Seconds between two polls of B's and C's state vectors (replicated changes figure).
POLL: Final = 0.005
SECTIONS: Final = ("sync", "e2e", "status", "idle")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """How much work each figure does."""

    rounds: int
    workers: int
    idle_requests: int
    update_requests: int
    base_entities: int
    e2e_rounds: int
    e2e_changes: int
    e2e_entities: int
    e2e_batch: int
    flips: int
    idle_rounds: int
    live_window: float

    def __post_init__(self) -> None:
        if min(self.rounds, self.workers, self.e2e_rounds, self.flips, self.idle_rounds) < 1:
            raise ValueError("every count must be at least 1")
        if self.update_requests % self.workers or self.idle_requests % self.workers:
            raise ValueError("request counts must be multiples of the worker count")


FULL: Final = Scale(
    rounds=5,
    workers=4,
    idle_requests=8_000,
    update_requests=4_000,
    base_entities=100,
    e2e_rounds=3,
    e2e_changes=40_000,
    e2e_entities=1_000,
    e2e_batch=1_000,
    flips=50,
    idle_rounds=10,
    live_window=3.0,
)
QUICK: Final = Scale(
    rounds=2,
    workers=4,
    idle_requests=400,
    update_requests=200,
    base_entities=20,
    e2e_rounds=1,
    e2e_changes=2_000,
    e2e_entities=100,
    e2e_batch=500,
    flips=5,
    idle_rounds=2,
    live_window=0.5,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One reported figure and its goal (``None``: context for the figure above it)."""

    name: str
    value: float
    unit: str
    goal: float | None
    #: Whether the goal is a minimum (else a maximum).
    at_least: bool
    measured: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    @property
    def verdict(self) -> str:
        return {None: "context", True: "PASS", False: "MISS"}[self.passed]

    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        return f"{'>=' if self.at_least else '<='} {self.goal:,.2f}".removesuffix(".00")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


class BenchError(Exception):
    """The benchmark could not run (a process did not start, a deadline passed)."""


# -- processes ---------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


#: Runs a module or script under cProfile counting CPU time, not wall time: on a busy
#: machine a process is often descheduled inside a send or a poll, which is not its cost.
PROFILED: Final = """
import cProfile, runpy, sys, time
out, target, *argv = sys.argv[1:]
sys.argv = [target, *argv]
profiler = cProfile.Profile(time.process_time)
run = runpy.run_path if target.endswith(".py") else runpy.run_module
try:
    profiler.runcall(run, target, run_name="__main__")
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


class ServerProcess:
    """One server process that prints ``... listening on URL`` when it is ready."""

    def __init__(self, name: str, command: list[str], log_dir: Path) -> None:
        self.name = name
        self.url = ""
        self._log: IO[str] = open(log_dir / f"{name}.log", "w+", encoding="utf-8")
        env = {key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")}
        self.popen = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    async def listening(self, within: float = START_TIMEOUT) -> str:
        """Wait (without blocking the loop) for the startup line; return its URL."""
        stdout = self.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], 0)
            if ready:
                line = stdout.readline()
                match = LISTENING.search(line)
                if match:
                    self.url = match.group(1).rstrip("/")
                    return self.url
                if not line:
                    break
            elif self.popen.poll() is not None:
                break
            else:
                await asyncio.sleep(0.02)
        raise BenchError(f"{self.name} did not start: {self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """User plus system CPU seconds of the process so far (Linux ``/proc``)."""
        try:
            text = Path(f"/proc/{self.popen.pid}/stat").read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:].strip() or "(no output)"

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if need be. Idempotent."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


class Processes:
    """Starts node and raw-server processes; :meth:`close` stops every one of them."""

    def __init__(self, profile_dir: Path | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sphaera-bench-")
        self.profile_dir = profile_dir
        self.started: list[ServerProcess] = []

    def _python(self, name: str, profile: bool, target: str) -> list[str]:
        """How to run ``target`` (a module name or a script path), profiled or not."""
        if profile and self.profile_dir is not None:
            out = str(self.profile_dir / f"{name}.prof")
            return [sys.executable, "-c", PROFILED, out, target]
        return (
            [sys.executable, target] if target.endswith(".py") else [sys.executable, "-m", target]
        )

    def node(self, name: str, *args: str, profile: bool = False) -> ServerProcess:
        command = [
            *self._python(name, profile, "sphaera_crdt"),
            "serve",
            "--id",
            name,
            "--memory",
            "--host",
            HOST,
            "--port",
            "0",
            *args,
        ]
        return self._start(name, command)

    def raw(self, answer: bytes) -> ServerProcess:
        script = str(Path(__file__).resolve())
        command = [*self._python("raw", True, script), "--raw-server", answer.hex()]
        return self._start("raw", command)

    def _start(self, name: str, command: list[str]) -> ServerProcess:
        process = ServerProcess(name, command, Path(self._dir.name))
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every process started so far (a section ends with this)."""
        for process in self.started:
            process.stop()
        self.started.clear()

    def close(self) -> None:
        self.stop_all()
        self._dir.cleanup()


async def raw_server(answer: bytes) -> None:
    """The raw endpoint: read the body, answer ``answer``; runs until SIGTERM."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type=OCTETS)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/sync", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"raw listening on http://{HOST}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# -- helpers -----------------------------------------------------------------------------------


def step1(state: dict[int, int]) -> bytes:
    """A sync body of one SYNC_STEP1 carrying ``state``."""
    return sync.SyncMessage(
        type=sync.MessageType.STEP1, payload=encode_state_vector(state)
    ).encode()


def union(*states: dict[int, int]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for state in states:
        for client, clock in state.items():
            merged[client] = max(clock, merged.get(client, 0))
    return merged


def svof(replica: Replica) -> dict[int, int]:
    return decode_state_vector(replica.state_vector())


async def post_sync(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[bytes, dict[int, int]]:
    """One sync request; returns the answer's STEP2 payload and the announced state."""
    async with session.post(f"{url}/v1/sync", data=body, headers=headers) as response:
        answer = await response.read()
        if response.status != 200:
            raise BenchError(f"{url} answered {response.status}: {answer[:200]!r}")
    update, state = sync.EMPTY_UPDATE, {}
    for message in sync.decode_messages(answer):
        if message.type is sync.MessageType.STEP1:
            state = decode_state_vector(message.payload)
        else:
            update = message.payload
    return update, state


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise BenchError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.02)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- 1. sync requests per second ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    requests: int
    seconds: float
    server_cpu: float | None
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.requests


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    server: ServerProcess,
    work: Sequence[Sequence[bytes]],
    headers: dict[str, str],
) -> Run:
    """Send each worker's bodies in order, all workers at once; time the whole run."""

    async def worker(bodies: Sequence[bytes]) -> None:
        for body in bodies:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise BenchError(f"{url} answered {response.status}")

    cpu_before = server.cpu_seconds()
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(bodies) for bodies in work))
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu_after = server.cpu_seconds()
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Run(
        requests=sum(len(bodies) for bodies in work),
        seconds=seconds,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )


@dataclass(slots=True, kw_only=True)
class SyncWorkload:
    """Bodies of the sync figure, prepared against the node before anything is timed.

    Batch 0 is the warm-up, batch ``r + 1`` round ``r``. ``covers[b]`` is the state the node
    holds once batches ``0..b`` were sent, so ``STEP1(covers[b])`` is an idle request then.
    """

    base: dict[int, int]
    covers: list[dict[int, int]]
    #: updates[batch][worker]: the request bodies (STEP1 + UPDATE) of that worker
    updates: list[list[list[bytes]]]
    update_bytes: list[int]
    idle_answer: bytes


async def prepare_sync(
    session: aiohttp.ClientSession, url: str, scale: Scale, headers: dict[str, str]
) -> SyncWorkload:
    """Give the node a realistic state from ``workers`` replicas and pre-build every body."""
    writers = [Replica(f"w{index}", declare_self=False) for index in range(scale.workers)]
    peer = Replica("bench-peer", declare_self=False)
    for index in range(scale.base_entities):
        writer = writers[index % len(writers)]
        writer.declare(f"svc-{index:04d}", kind="svc", attrs={"port": 5000 + index, "up": True})
    for index, writer in enumerate(writers):
        writer.declare(f"load-{index}", kind="load", attrs={"seq": 0})
        peer.merge(writer.delta())
    # Push-pull until the node lacks nothing and the peer lacks nothing (the node observes
    # the peer on first contact, which is a write of its own).
    body = sync.sync_request(peer, peer.delta())
    for _ in range(10):
        update, node_state = await post_sync(session, url, body, headers)
        sync.merge_update(peer, [update])
        body = sync.sync_request(peer)
        if update == sync.EMPTY_UPDATE and sync.covers(svof(peer), node_state):
            break
    else:
        raise BenchError("the sync node and the benchmark's peer did not converge")
    base = svof(peer)
    _, node_state = await post_sync(session, url, body, headers)
    if node_state != base:
        raise BenchError("the sync node holds something the benchmark's peer lacks")
    captured: list[bytes] = []
    for writer in writers:
        writer.on_update(captured.append)
    per_worker = scale.update_requests // scale.workers
    covers: list[dict[int, int]] = []
    transactions: list[list[list[bytes]]] = []
    for batch in range(scale.rounds + 1):
        rows: list[list[bytes]] = []
        for index, writer in enumerate(writers):
            captured.clear()
            for seq in range(per_worker):
                writer.update(f"load-{index}", {"seq": batch * per_worker + seq + 1})
            rows.append(list(captured))
        transactions.append(rows)
        covers.append(union(base, *(svof(writer) for writer in writers)))
    updates = [
        [
            [
                step1(covers[batch])
                + sync.SyncMessage(type=sync.MessageType.UPDATE, payload=tx).encode()
                for tx in row
            ]
            for row in rows
        ]
        for batch, rows in enumerate(transactions)
    ]
    sizes = [len(tx) for rows in transactions for row in rows for tx in row]
    async with session.post(f"{url}/v1/sync", data=step1(base), headers=headers) as response:
        idle_answer = await response.read()
    return SyncWorkload(
        base=base, covers=covers, updates=updates, update_bytes=sizes, idle_answer=idle_answer
    )


async def bench_sync(scale: Scale, procs: Processes) -> list[Figure]:
    node = procs.node("sync-node", "--gossip-interval", str(NEVER), profile=True)
    node_url = await node.listening()
    headers = {
        "Content-Type": OCTETS,
        "Sphaera-Replica": "bench-peer",
        "Sphaera-Url": "http://127.0.0.1:9",
    }
    connector = aiohttp.TCPConnector(limit=scale.workers)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        work = await prepare_sync(session, node_url, scale, headers)
        raw = procs.raw(work.idle_answer)
        raw_url = await raw.listening()
        targets = {"node": (node_url + "/v1/sync", node), "raw": (raw_url + "/v1/sync", raw)}
        per_worker = scale.idle_requests // scale.workers
        runs: dict[tuple[str, str], list[Run]] = {
            (variant, target): [] for variant in ("idle", "update") for target in targets
        }
        for batch in range(scale.rounds + 1):
            idle_body = step1(work.covers[batch - 1] if batch else work.base)
            variants = {
                "idle": [[idle_body] * (per_worker if batch else per_worker // 4 or 1)]
                * scale.workers,
                "update": work.updates[batch],
            }
            for variant, bodies in variants.items():
                order = ("node", "raw") if batch % 2 == 0 else ("raw", "node")
                for target in order:
                    url, server = targets[target]
                    run = await drive(session, url, server, bodies, headers)
                    if batch:  # batch 0 warms both up
                        runs[variant, target].append(run)
        # Every update was merged (none is held for a missing predecessor).
        _, held = await post_sync(session, node_url, step1(work.covers[-1]), headers)
    merged_all = held == work.covers[-1]
    figures = []
    for variant, name, goal in (
        ("idle", "sync req/s vs raw", 0.60),
        ("update", "sync+update req/s vs raw", None),
    ):
        ours, theirs = runs[variant, "node"], runs[variant, "raw"]
        ratios = [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)]
        ratio = statistics.median(ratios)
        node_rate = statistics.median(run.rate for run in ours)
        raw_rate = statistics.median(run.rate for run in theirs)
        detail: dict[str, Any] = {
            "node_rps": [round(run.rate) for run in ours],
            "raw_rps": [round(run.rate) for run in theirs],
            "ratios": [round(r, 3) for r in ratios],
            "node_cpu_us": [_us(run.cpu_per_request) for run in ours],
            "raw_cpu_us": [_us(run.cpu_per_request) for run in theirs],
            "workers": scale.workers,
            "requests_per_run": ours[0].requests,
            "body_bytes": len(idle_body) if variant == "idle" else len(work.updates[1][0][0]),
            "answer_bytes": len(work.idle_answer),
            "state_vector_clients": len(work.base),
            "node_cpu_us_per_request": _median_us([run.cpu_per_request for run in ours]),
            "raw_cpu_us_per_request": _median_us([run.cpu_per_request for run in theirs]),
            "client_cpu_share_node": statistics.median(r.client_cpu / r.seconds for r in ours),
            "client_cpu_share_raw": statistics.median(r.client_cpu / r.seconds for r in theirs),
        }
        if variant == "update":
            detail["update_bytes_median"] = statistics.median(work.update_bytes)
            detail["all_updates_merged"] = merged_all
        figures.append(
            Figure(
                name=name,
                value=ratio,
                unit="ratio",
                goal=goal,
                at_least=True,
                measured=f"{node_rate:8,.0f} req/s vs raw {raw_rate:,.0f}",
                detail=detail,
            )
        )
    return figures


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 1)


def _median_us(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known) * 1e6, 1) if known else None


# -- 2. replicated entity changes per second -------------------------------------------------------


async def bench_e2e(scale: Scale, procs: Processes) -> list[Figure]:
    config = NodeConfig(replica_id="e2e-a", host=HOST, port=0, gossip_interval=1.0)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(Node(config))
        others = [
            procs.node(name, "--peer", a.url, "--gossip-interval", "1.0", profile=True)
            for name in ("e2e-b", "e2e-c")
        ]
        urls = [await process.listening() for process in others]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        headers = {"Content-Type": OCTETS}

        async def hold_all(target: dict[int, int]) -> bool:
            probe = step1({client: 2**32 - 1 for client in target})
            states = [(await post_sync(session, url, probe, headers))[1] for url in urls]
            return all(sync.covers(state, target) for state in states)

        async def known_peers() -> bool:
            return len(a.live_peers()) == len(urls) and await hold_all(svof(a.replica))

        await until(known_peers, "A knows B and C and they hold its state", 30)
        profiler = None if procs.profile_dir is None else cProfile.Profile(time.process_time)
        rates, write_rates, lags = [], [], []
        for rnd in range(scale.e2e_rounds):
            entities = [f"load-{rnd}-{index:05d}" for index in range(scale.e2e_entities)]
            for entity in entities:
                a.replica.declare(entity, kind="load", attrs={"n": 0})
            target = svof(a.replica)
            await until(functools.partial(hold_all, target), "B and C hold the entities", 60)
            if profiler is not None:
                profiler.enable()
            started = time.perf_counter()
            for first in range(0, scale.e2e_changes, scale.e2e_batch):
                for n in range(first, min(first + scale.e2e_batch, scale.e2e_changes)):
                    a.replica.update(entities[n % len(entities)], {"n": n + 1})
                await asyncio.sleep(0)
            written = time.perf_counter()
            target = svof(a.replica)
            deadline = written + 120
            while not await hold_all(target):
                if time.perf_counter() > deadline:
                    raise BenchError("B and C did not receive the changes within 120 s")
                await asyncio.sleep(POLL)
            done = time.perf_counter()
            if profiler is not None:
                profiler.disable()
            rates.append(scale.e2e_changes / (done - started))
            write_rates.append(scale.e2e_changes / (written - started))
            lags.append(done - written)
        if profiler is not None and procs.profile_dir is not None:
            profiler.dump_stats(str(procs.profile_dir / "e2e-a.prof"))
        pushes = sum(
            sample.value
            for metric in a.metrics.sync_exchanges.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels.get("direction") == "out"
        )
    rate = statistics.median(rates)
    return [
        Figure(
            name="replicated changes/s",
            value=rate,
            unit="changes/s",
            goal=20_000,
            at_least=True,
            measured=f"{rate:8,.0f} changes/s to B and C",
            detail={
                "changes_per_round": scale.e2e_changes,
                "entities": scale.e2e_entities,
                "batch": scale.e2e_batch,
                "rates": [round(r) for r in rates],
                "write_phase_rates_at_a": [round(r) for r in write_rates],
                "lag_after_last_write_s": [round(lag, 4) for lag in lags],
                "exchanges_from_a": int(pushes),
            },
        )
    ]


# -- 3. status spread ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def cluster(procs: Processes, prefix: str) -> AsyncIterator[list[str]]:
    """Five node processes gossiping every :data:`INTERVAL` s; yields their URLs."""
    gossip = ("--gossip-interval", str(INTERVAL), "--fanout", str(FANOUT))
    first = procs.node(f"{prefix}0", *gossip)
    seed = await first.listening()
    rest = [procs.node(f"{prefix}{i}", "--peer", seed, *gossip) for i in range(1, CLUSTER)]
    urls = [seed, *[await process.listening() for process in rest]]
    async with contextlib.AsyncExitStack() as stack:
        apis = [await stack.enter_async_context(ApiClient(url, timeout=5)) for url in urls]

        async def members() -> bool:
            for api in apis:
                replicas = (await api.replicas())["replicas"]
                alive = [r for r in replicas.values() if r["status"] == "exists"]
                if len(alive) != CLUSTER:
                    return False
            return True

        await until(members, "five nodes see each other alive", 30)
        yield urls


async def bench_status(scale: Scale, urls: list[str], rng: random.Random) -> list[Figure]:
    async with contextlib.AsyncExitStack() as stack:
        apis = [await stack.enter_async_context(ApiClient(url, timeout=5)) for url in urls]
        queue: asyncio.Queue[tuple[int, str, Any, float]] = asyncio.Queue()

        async def listen(index: int, api: ApiClient) -> None:
            async for name, data in api.events():
                queue.put_nowait((index, name, data, time.perf_counter()))

        tasks = [asyncio.create_task(listen(i, api)) for i, api in enumerate(apis)]
        try:
            snapshots: set[int] = set()
            while len(snapshots) < len(apis):
                index, name, _, _ = await asyncio.wait_for(queue.get(), 10)
                if name == "snapshot":
                    snapshots.add(index)
            await apis[0].put("db", kind="db")
            await apis[0].put("svc", kind="svc", requires={"exists": "db"})

            async def everywhere(status: str) -> bool:
                for api in apis:
                    try:
                        if (await api.get("svc"))["status"] != status:
                            return False
                    except ApiError as exc:
                        if exc.status != 404:  # 404: not replicated there yet
                            raise
                        return False
                return True

            await until(lambda: everywhere("exists"), "svc exists everywhere", 10)
            await asyncio.sleep(2 * INTERVAL)
            while not queue.empty():
                queue.get_nowait()
            latencies: list[float] = []
            timeouts = 0
            present = True
            for _ in range(scale.flips):
                await asyncio.sleep(rng.uniform(0.2, 1.0) * INTERVAL)
                writer = apis[rng.randrange(len(apis))]
                started = time.perf_counter()
                if present:
                    await writer.delete("db")
                else:
                    await writer.put("db", kind="db")
                present = not present
                seen: dict[int, float] = {}
                deadline = started + 20 * INTERVAL
                while len(seen) < len(apis):
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        index, name, data, at = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    if name == "change" and data.get("entity") == "svc":
                        seen.setdefault(index, at)
                if len(seen) < len(apis):
                    timeouts += 1
                    latencies.append(20 * INTERVAL)
                    expected = "exists" if present else "absent"
                    await until(functools.partial(everywhere, expected), "svc settles", 30)
                    while not queue.empty():
                        queue.get_nowait()
                else:
                    latencies.append(max(seen.values()) - started)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    in_intervals = [latency / INTERVAL for latency in latencies]
    p50, p99 = percentile(in_intervals, 0.50), percentile(in_intervals, 0.99)
    detail = {
        "writes": scale.flips,
        "nodes": CLUSTER,
        "gossip_interval_s": INTERVAL,
        "fanout": FANOUT,
        "timeouts": timeouts,
        "latencies_ms": [round(latency * 1000, 1) for latency in latencies],
    }
    return [
        Figure(
            name="status spread p50",
            value=p50,
            unit="intervals",
            goal=None,
            at_least=False,
            measured=f"{p50:8.2f} intervals ({p50 * INTERVAL * 1000:,.0f} ms)",
            detail=detail,
        ),
        Figure(
            name="status spread p99",
            value=p99,
            unit="intervals",
            goal=2.0,
            at_least=False,
            measured=f"{p99:8.2f} intervals ({p99 * INTERVAL * 1000:,.0f} ms)",
            detail={"max_intervals": max(in_intervals)},
        ),
    ]


async def live_traffic(urls: list[str], window: float) -> Figure:
    """Sync bytes per second per node of an idle live cluster, from ``/metrics``."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def totals() -> tuple[float, float]:
            sent = exchanges = 0.0
            for url in urls:
                async with session.get(f"{url}/metrics") as response:
                    text = await response.text()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "sphaera_sync_bytes_sent_total":
                            sent += sample.value
                        elif (
                            sample.name == "sphaera_sync_exchanges_total"
                            and sample.labels.get("direction") == "out"
                        ):
                            exchanges += sample.value
            return sent, exchanges

        before = await totals()
        started = time.perf_counter()
        await asyncio.sleep(window)
        after = await totals()
        seconds = time.perf_counter() - started
    # Every body is counted once as sent: requests by their sender, answers by the server.
    sent, exchanges = after[0] - before[0], after[1] - before[1]
    per_node = sent / seconds / len(urls)
    return Figure(
        name="live cluster sync B/s",
        value=per_node,
        unit="B/s/node",
        goal=None,
        at_least=False,
        measured=f"{per_node:8,.0f} B/s per node, both ways",
        detail={
            "window_s": round(seconds, 2),
            "requests_per_s_per_node": round(exchanges / seconds / len(urls), 1),
            "bytes_per_request_and_answer": round(sent / exchanges) if exchanges else None,
        },
    )


# -- 4. idle round bytes ---------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes of each direction."""

    def __init__(self) -> None:
        self.target_port = 0
        self.up = 0
        self.down = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer, up=True),
                self._pump(upstream_reader, writer, up=False),
            )
        finally:
            self._tasks.discard(task)
            for stream in (writer, upstream_writer):
                stream.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def bench_idle(scale: Scale) -> list[Figure]:
    proxies = [CountingProxy() for _ in range(CLUSTER)]
    public = [await proxy.start() for proxy in proxies]
    nodes: list[Node] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for index in range(CLUSTER):
                config = NodeConfig(
                    replica_id=f"idle{index}",
                    host=HOST,
                    port=0,
                    public_url=public[index],
                    peers=(public[0],) if index else (),
                    gossip_interval=NEVER,
                    liveness=NEVER,
                    fanout=FANOUT,
                )
                node = await stack.enter_async_context(Node(config))
                proxies[index].target_port = node.port
                nodes.append(node)
            for _ in range(20):  # settle: rounds everywhere until nothing changes
                before = [node.replica.state_vector() for node in nodes]
                for node in nodes:
                    await node.gossip.round()
                for node in nodes:
                    await node.gossip.flush()
                after = [node.replica.state_vector() for node in nodes]
                known = all(len(node.live_peers()) == CLUSTER - 1 for node in nodes)
                if before == after and len(set(after)) == 1 and known:
                    break
            else:
                raise BenchError("the idle cluster did not settle")
            # What each node believes a peer holds may be older than the last change (it
            # learnt it before): its first exchange with that peer then pushes what the
            # peer already has. Exchange once with every peer, so that the rounds measured
            # below are the steady state, and report this first pass on its own.
            first = [
                await node.gossip.exchange(url, peer_id)
                for node in nodes
                for url, peer_id in node.gossip.targets().items()
            ]
            for proxy in proxies:
                proxy.up = proxy.down = 0
            exchanges = []
            for _ in range(scale.idle_rounds):
                for node in nodes:
                    exchanges.extend(await node.gossip.round())
            await asyncio.sleep(0.05)  # let the proxies pass the last bytes on
            wire_up = sum(proxy.up for proxy in proxies)
            wire_down = sum(proxy.down for proxy in proxies)
            state = nodes[0].replica.state_vector()
            unchanged = all(node.replica.state_vector() == state for node in nodes)
    finally:
        for proxy in proxies:
            await proxy.close()
    count = len(exchanges)
    if count == 0 or not all(exchange.ok for exchange in exchanges):
        raise BenchError("idle rounds made no successful exchange")
    sent = statistics.mean(exchange.sent for exchange in exchanges)
    received = statistics.mean(exchange.received for exchange in exchanges)
    requests = statistics.mean(exchange.requests for exchange in exchanges)
    step1_bytes = len(sync.SyncMessage(type=sync.MessageType.STEP1, payload=state).encode())
    empty_step2 = len(
        sync.SyncMessage(type=sync.MessageType.STEP2, payload=sync.EMPTY_UPDATE).encode()
    )
    expected = step1_bytes + empty_step2 + step1_bytes
    per_round = (wire_up + wire_down) / count * FANOUT
    return [
        Figure(
            name="idle exchange bytes",
            value=sent + received,
            unit="B",
            goal=expected,
            at_least=False,
            measured=f"{sent + received:8,.0f} B body ({sent:,.0f} req + {received:,.0f} ans)",
            detail={
                "exchanges": count,
                "requests_per_exchange": requests,
                "state_vector_bytes": len(state),
                "state_vector_clients": len(decode_state_vector(state)),
                "state_unchanged_by_rounds": unchanged,
                "first_pass_bytes_per_exchange": round(
                    statistics.mean(e.sent + e.received for e in first), 1
                ),
                "first_pass_pushes": sum(e.pushed for e in first),
                "first_pass_exchanges": len(first),
            },
        ),
        Figure(
            name="idle round wire bytes",
            value=per_round,
            unit="B/round",
            goal=None,
            at_least=False,
            measured=f"{per_round:8,.0f} B per round ({FANOUT} exchanges, HTTP included)",
            detail={
                "request_wire_bytes_per_exchange": round(wire_up / count, 1),
                "response_wire_bytes_per_exchange": round(wire_down / count, 1),
            },
        ),
    ]


# -- report ------------------------------------------------------------------------------------


def report(figures: Sequence[Figure]) -> str:
    """The table of figures, then what is needed to read each one."""
    lines = [f"{'figure':<26} {'measured':<52} {'value':>10}  {'goal':>9}  result", "-" * 110]
    for figure in figures:
        value = f"{figure.value:,.2f}" if figure.value < 100 else f"{figure.value:,.0f}"
        lines.append(
            f"{figure.name:<26} {figure.measured:<52} {value:>10}  "
            f"{figure.goal_text():>9}  {figure.verdict}"
        )
    for figure in figures:
        d = figure.detail
        if figure.name.startswith("sync"):
            lines.append(
                f"  {figure.name}: per-round ratios {d['ratios']}; server CPU per request "
                f"node {d['node_cpu_us_per_request']} us vs raw {d['raw_cpu_us_per_request']} "
                f"us (ratio {_cpu_ratio(d)}); load generator busy "
                f"{d['client_cpu_share_node']:.0%} (node) / "
                f"{d['client_cpu_share_raw']:.0%} (raw) of the time; body "
                f"{d['body_bytes']} B, {d['workers']} workers, {d['requests_per_run']:,} "
                "requests per run"
                + (
                    f"; small updates {d['update_bytes_median']:.0f} B"
                    f", all merged: {d['all_updates_merged']}"
                    if "update_bytes_median" in d
                    else ""
                )
            )
        elif figure.name == "replicated changes/s":
            lines.append(
                f"  {figure.name}: {d['changes_per_round']:,} changes over {d['entities']:,} "
                f"entities per round, batches of {d['batch']:,}; rounds {d['rates']}; write phase "
                f"at A (gossip interleaved) {d['write_phase_rates_at_a']} changes/s; B and C "
                f"complete {d['lag_after_last_write_s']} s after the last write"
            )
        elif figure.name == "status spread p50":
            lines.append(
                f"  status spread: {d['writes']} writes, {d['nodes']} nodes, interval "
                f"{d['gossip_interval_s']} s, fanout {d['fanout']}, {d['timeouts']} timeouts; "
                f"latencies ms {d['latencies_ms'][:12]}{' ...' if d['writes'] > 12 else ''}"
            )
        elif figure.name == "idle exchange bytes":
            lines.append(
                f"  idle exchanges: {d['exchanges']}, {d['requests_per_exchange']:.2f} "
                f"requests each; state vector {d['state_vector_bytes']} B "
                f"({d['state_vector_clients']} clients); state unchanged by the rounds: "
                f"{d['state_unchanged_by_rounds']}; first pass after settling (one exchange "
                f"per pair, not counted): {d['first_pass_pushes']} of "
                f"{d['first_pass_exchanges']} exchanges pushed data the peer had, "
                f"{d['first_pass_bytes_per_exchange']} B per exchange"
            )
        elif figure.name == "idle round wire bytes":
            lines.append(
                f"  wire bytes per exchange: request {d['request_wire_bytes_per_exchange']}, "
                f"response {d['response_wire_bytes_per_exchange']}"
            )
        elif figure.name == "live cluster sync B/s":
            lines.append(
                f"  live cluster: {d['requests_per_s_per_node']} sync requests/s per node, "
                f"{d['bytes_per_request_and_answer']} B per request and answer "
                f"over {d['window_s']} s"
            )
    return "\n".join(lines)


def _cpu_ratio(detail: dict[str, Any]) -> str:
    """Raw CPU per request over the node's: the req/s ratio if both were CPU-bound."""
    node, raw = detail["node_cpu_us_per_request"], detail["raw_cpu_us_per_request"]
    return f"{raw / node:.2f}" if node and raw else "n/a"


def profile_summary(profile_dir: Path, top: int = 25) -> str:
    """The top functions by own time of every profile written in ``profile_dir``."""
    out = []
    for path in sorted(profile_dir.glob("*.prof")):
        stats = pstats.Stats(str(path))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
        out.append(f"{path.stem}: {total:.2f} CPU s profiled; top {top} by own time")
        out.append(f"  {'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>9}  function")
        for (filename, line, func), (_, calls, own, cumulative, _) in rows[:top]:
            where = f"{_short(filename)}:{line}({func})" if line else func
            out.append(f"  {own:7.3f} {own / total:6.1%} {cumulative:7.3f} {calls:>9}  {where}")
        with open(path.with_suffix(".txt"), "w", encoding="utf-8") as stream:
            pstats.Stats(str(path), stream=stream).sort_stats("cumulative").print_stats(60)
    return "\n".join(out)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "sphaera_crdt/", "lib/python3"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1]
                if marker != "sphaera_crdt/"
                else ("sphaera_crdt/" + filename.split(marker, 1)[1])
            )
    return filename


async def run(scale: Scale, sections: Sequence[str], procs: Processes) -> list[Figure]:
    rng = random.Random(2024)
    figures: list[Figure] = []

    async def status() -> list[Figure]:
        async with cluster(procs, "n") as urls:
            found = await bench_status(scale, urls, rng)
            live.append(await live_traffic(urls, scale.live_window))
        return found

    live: list[Figure] = []
    steps: dict[str, Callable[[], Awaitable[list[Figure]]]] = {
        "sync": lambda: bench_sync(scale, procs),
        "e2e": lambda: bench_e2e(scale, procs),
        "status": status,
        "idle": lambda: bench_idle(scale),
    }
    for section, step in steps.items():
        if section not in sections:
            continue
        started = time.perf_counter()
        try:
            found = await step()
        finally:
            procs.stop_all()  # nothing of one section runs during the next
        figures.extend(found)
        summary = ", ".join(f"{f.name} {f.value:,.2f}" for f in found)
        print(f"  {section}: {summary} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return figures + live


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the processes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale every section down")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile the servers (CPU time) into DIR"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        metavar="LIST",
        help=f"comma-separated sections to run, of {','.join(SECTIONS)}",
    )
    parser.add_argument("--raw-server", metavar="HEX", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_server is not None:
        asyncio.run(raw_server(bytes.fromhex(args.raw_server)))
        return 0
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    scale = QUICK if args.quick else FULL
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    env = environment(aiohttp=metadata.version("aiohttp"), cpus=os.cpu_count())
    modified = " (package has uncommitted changes)" if env["package_modified"] else ""
    print(
        f"sphaera_crdt HTTP benchmark: {'quick' if args.quick else 'full'} scale, medians of "
        f"{scale.rounds} alternating rounds (sync), {scale.e2e_rounds} (replication); "
        f"Python {env['python']}, aiohttp {env['aiohttp']}, pycrdt {env['pycrdt']}, "
        f"{env['cpus']} CPUs, commit {env['commit']}{modified}",
        flush=True,
    )
    procs = Processes(args.profile)
    try:
        with terminate_on_sigterm():
            figures = asyncio.run(run(scale, sections, procs))
    finally:
        procs.close()
    print(report(figures))
    if args.profile is not None:
        print(profile_summary(args.profile))
    if args.json is not None:
        document = {
            "environment": env,
            "scale": asdict(scale),
            "command": [Path(sys.executable).name, *sys.argv],
            "figures": {figure.name: figure.to_json() for figure in figures},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
