"""A cluster of real ``sphaera serve`` processes behind fault proxies, with writers that
record every acknowledged write and the checks made after healing.

Theory of operation
-------------------
:class:`FaultCluster` starts one :class:`~faults.proxy.NodeProxy` per node, then the node
with ``--public-url`` naming the proxy, so that peers reach each other only through the
proxies (see :mod:`faults.proxy`), and small gossip and liveness settings (0.2 s and
1.5 s) so that faults show and heal within seconds. Seeds go through the proxies too.

While a scenario injects faults, :meth:`FaultCluster.writing` runs one writer per node
that talks to its node directly (a client is never cut off from its node): each write
declares a new entity ``w-<node>-<n>``, and every fourth one also patches the writer's own
attribute of one shared entity with ``n``. A write answered 2xx is *acknowledged* and goes
into the :class:`Ledger` with the time of its answer; a write answered otherwise, or cut
off, may or may not have happened, and is not checked. One server-sent event stream per
node records when each ``w-`` entity first exists there, which gives the visibility of a
write: the time from its acknowledgement until it exists on every node.

After healing, :meth:`FaultCluster.converge` polls every node's ``GET /v1/entities`` under
a bounded deadline until all hold the same records and statuses, every replica exists
everywhere and every acknowledged write is present on every node; at the deadline it
reports what is missing (lost writes) and how many nodes disagree (divergent reads)
instead. Nothing waits without a deadline and every process stops when the cluster closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
from procs import NodeProcess, Processes

from sphaera_crdt.core.trust import public_key_text
from sphaera_crdt.keys import generate_key, save_key

from .proxy import Faults, NodeProxy

__all__ = ["FaultCluster", "Ledger", "Outcome", "percentile", "table", "vmhwm_kib"]

INTERVAL: Final = 0.2
LIVENESS: Final = 1.5
#: How long a healed cluster may take to converge (the gossip backoff is capped at 3.2 s).
CONVERGE_DEADLINE: Final = 20.0
#: A bound on any node's peak resident memory in these scenarios (a node starts at ~55 MB).
MAX_NODE_HWM_KIB: Final = 300 * 1024
REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=2.0)
SHARED: Final = "shared"
WRITE_PAUSE: Final = (0.02, 0.08)


def vmhwm_kib(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class Ledger:
    """Every acknowledged write, and when each ``w-`` entity was first seen on each node."""

    #: entity -> (its attribute ``n``, the time it was acknowledged)
    created: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: writer -> the highest ``n`` acknowledged for its attribute of the shared entity
    shared: dict[str, int] = field(default_factory=dict)
    #: entity -> node -> the time it first existed there
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    #: patches of the shared entity acknowledged
    patches: int = 0
    attempted: int = 0

    @property
    def acknowledged(self) -> int:
        return len(self.created) + self.patches

    def missing(self, name: str, entities: Mapping[str, Any]) -> list[str]:
        """The acknowledged writes that node ``name``'s entities lack."""
        lost = []
        for entity, (number, _) in self.created.items():
            view = entities.get(entity)
            if view is None or view["attrs"] != {"n": number} or view["status"] != "exists":
                lost.append(f"{entity} on {name}")
        attrs = (entities.get(SHARED) or {}).get("attrs") or {}
        for writer, number in self.shared.items():
            found = attrs.get(writer)
            if type(found) is not int or found < number:
                lost.append(f"{SHARED}.{writer}>={number} on {name} (found {found!r})")
        return lost

    def visibility(self, names: Iterable[str]) -> list[float]:
        """Seconds from acknowledgement to existing on every node, per acknowledged entity
        seen everywhere (0 when it was everywhere before its answer arrived)."""
        names = list(names)
        delays = []
        for entity, (_, acked) in self.created.items():
            seen = self.seen.get(entity, {})
            if all(name in seen for name in names):
                delays.append(max(0.0, max(seen[name] for name in names) - acked))
        return delays


@dataclass
class Outcome:
    """What one scenario run found after healing."""

    scenario: str
    faults: int
    messages_lost: int
    acknowledged: int
    lost: list[str]
    divergent: int
    converged_in: float | None
    visibility: list[float]
    peak_kib: dict[str, int]
    #: what the nodes saw differently when they did not converge
    disagreement: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Assert what every scenario promises."""
        assert self.acknowledged > 0, "no write was acknowledged: the scenario tested nothing"
        assert not self.lost, f"acknowledged writes lost: {self.lost[:20]}"
        assert self.divergent == 0, (
            f"{self.divergent} nodes disagree after healing: {self.disagreement}"
        )
        assert self.converged_in is not None, "no convergence within the deadline"
        heavy = {name: kib for name, kib in self.peak_kib.items() if kib > MAX_NODE_HWM_KIB}
        assert not heavy, f"peak memory (VmHWM, KiB) over {MAX_NODE_HWM_KIB}: {heavy}"

    def summary(self) -> str:
        p50 = percentile(self.visibility, 0.5)
        p99 = percentile(self.visibility, 0.99)
        took = "-" if self.converged_in is None else f"{self.converged_in:.1f}s"
        apart = f"; apart: {self.disagreement}" if self.disagreement else ""
        return (
            f"{self.scenario}: {self.faults} faults, {self.messages_lost} messages lost, "
            f"{self.acknowledged} acknowledged, {len(self.lost)} lost, {self.divergent} "
            f"divergent, converged in {took}, visibility p50 {p50:.2f}s p99 {p99:.2f}s "
            f"(visibility of {len(self.visibility)} writes){apart}"
        )


@dataclass
class Member:
    name: str
    proxy: NodeProxy
    process: NodeProcess
    args: list[str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.bound_url


class FaultCluster:
    """Nodes ``names`` behind fault proxies; an async context manager that stops them all.

    Args:
        names: The replica ids.
        faults: The fault plan all proxies share.
        data: A directory for ``--data`` per node (``None``: ``--memory``).
        env: Extra environment per node (``SPHAERA_CLOCK_OFFSET``).
        keys: A directory for signed mode: a key file per node and the trust file that
            lists them all, given to every node (``--key``, ``--trust``); ``None``:
            unsigned.
    """

    def __init__(
        self,
        names: Iterable[str],
        faults: Faults,
        *,
        data: Path | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        keys: Path | None = None,
    ) -> None:
        self.names = list(names)
        self.keys = keys
        self.faults = faults
        self.data = data
        self.env = {name: dict((env or {}).get(name, {})) for name in self.names}
        self.members: dict[str, Member] = {}
        self.ledger = Ledger()
        self.fault_events = 0
        self._procs = Processes()
        self._session: aiohttp.ClientSession | None = None
        self._proxies: list[NodeProxy] = []
        self._watching = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FaultCluster:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
        for name in self.names:
            proxy = NodeProxy(name, self.faults)
            self._proxies.append(proxy)
            await proxy.start()
        proxies = {proxy.name: proxy for proxy in self._proxies}
        first, *_ = self.names
        signed: dict[str, list[str]] = {name: [] for name in self.names}
        if self.keys is not None:
            self.keys.mkdir(parents=True, exist_ok=True)
            lines = []
            for name in self.names:
                key = generate_key()
                save_key(key, self.keys / f"{name}.key")
                lines.append(f"{name} {public_key_text(key)}\n")
            (self.keys / "trust.txt").write_text("".join(lines))
            for name in self.names:
                signed[name] = [
                    "--trust",
                    str(self.keys / "trust.txt"),
                    "--key",
                    str(self.keys / f"{name}.key"),
                ]
        started = []
        for index, name in enumerate(self.names):
            # Everyone is seeded with the first node, the first with the second.
            seed = proxies[self.names[1] if index == 0 else first].url
            args = [
                "--gossip-interval",
                str(INTERVAL),
                "--liveness",
                str(LIVENESS),
                "--public-url",
                proxies[name].url,
                "--peer",
                seed,
                *(["--data", str(self.data / name)] if self.data is not None else []),
                *signed[name],
            ]
            process = self._procs.start(name, args=args, env=self.env[name], wait=False)
            started.append(Member(name, proxies[name], process, args, self.env[name]))
        for member in started:
            await asyncio.to_thread(member.process.wait_listening)
            member.proxy.upstream = member.process.bound_url
            self.members[member.name] = member

    async def close(self) -> None:
        await self._stop_watching()
        for member in self.members.values():
            with contextlib.suppress(ProcessLookupError):
                member.process.popen.send_signal(signal.SIGCONT)
        for proxy in self._proxies:
            await proxy.close()
        if self._session is not None:
            await self._session.close()
        self._procs.close()

    # -- processes -------------------------------------------------------------------------

    def signal(self, name: str, signum: signal.Signals) -> None:
        self.members[name].process.popen.send_signal(signum)
        self.fault_events += signum in (signal.SIGSTOP, signal.SIGKILL)

    async def restart(self, name: str, *, env: Mapping[str, str] | None = None) -> None:
        """Start node ``name`` again (after it stopped or was killed), same arguments."""
        member = self.members[name]
        if member.process.popen.poll() is None:
            member.process.popen.kill()
        await asyncio.to_thread(member.process.popen.wait)
        if env is not None:
            member.env = dict(env)
        process = self._procs.start(name, args=member.args, env=member.env, wait=False)
        await asyncio.to_thread(process.wait_listening)
        member.process = process
        member.proxy.upstream = process.bound_url

    def peak_kib(self) -> dict[str, int]:
        return {name: vmhwm_kib(member.process.popen.pid) for name, member in self.members.items()}

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    async def entities(self, name: str) -> dict[str, Any] | None:
        """Node ``name``'s ``GET /v1/entities``, or ``None`` if it does not answer."""
        try:
            async with self.session.get(f"{self.members[name].url}/v1/entities") as answer:
                if answer.status != 200:
                    return None
                return dict(orjson.loads(await answer.read())["entities"])
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def signed(self, name: str) -> bool:
        """Whether node ``name`` says it runs in signed mode, under every node's key."""
        async with self.session.get(f"{self.members[name].url}/v1/replicas") as answer:
            found = orjson.loads(await answer.read())
        return found["signed"] is True and all(
            found["replicas"].get(other, {}).get("trusted") is True
            for other in self.names
            if other in found["replicas"]
        )

    async def statuses(self, name: str, prefix: str = "replica:") -> dict[str, str] | None:
        found = await self.entities(name)
        if found is None:
            return None
        return {key: view["status"] for key, view in found.items() if key.startswith(prefix)}

    async def until(
        self,
        condition: Callable[[], Awaitable[bool]],
        what: str,
        deadline: float = CONVERGE_DEADLINE,
    ) -> float:
        """Poll ``await condition()`` every 0.1 s until true; the seconds it took."""
        started = time.monotonic()
        while not await condition():
            if time.monotonic() - started > deadline:
                raise AssertionError(f"not within {deadline} s: {what}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def sees(self, observers: Iterable[str], replicas: Iterable[str], status: str) -> bool:
        """Whether every node in ``observers`` derives ``status`` for every replica."""
        replicas = list(replicas)
        for observer in observers:
            found = await self.statuses(observer)
            if found is None or any(found.get(f"replica:{r}") != status for r in replicas):
                return False
        return True

    async def members_alive(self) -> None:
        await self.until(
            lambda: self.sees(self.names, self.names, "exists"), "every replica alive everywhere"
        )

    # -- writers ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writing(self, rng: random.Random, per_node: int = 1) -> AsyncIterator[None]:
        """Run writers against every node while inside; the event watchers (one per node)
        start here and run until :meth:`converge` has seen the end."""
        url = self.members[self.names[0]].url
        async with self.session.put(f"{url}/v1/entities/{SHARED}", json={"kind": "fault"}) as r:
            assert r.status in (200, 201), await r.text()
        await self.until(self._shared_everywhere, "the shared entity everywhere")
        self._watchers = [
            asyncio.create_task(self._watch(name, self._watching), name=f"watch-{name}")
            for name in self.names
        ]
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(
                self._write(name, f"{name}{index}", random.Random(rng.random()), stop),
                name=f"write-{name}{index}",
            )
            for name in self.names
            for index in range(per_node)
        ]
        try:
            yield
        finally:
            stop.set()
            await _finish(writers)

    async def _stop_watching(self) -> None:
        self._watching.set()
        watchers, self._watchers = self._watchers, []
        await _finish(watchers)

    async def _shared_everywhere(self) -> bool:
        for name in self.names:
            found = await self.entities(name)
            if found is None or SHARED not in found:
                return False
        return True

    async def _write(self, node: str, writer: str, rng: random.Random, stop: asyncio.Event) -> None:
        ledger = self.ledger
        number = 0
        while not stop.is_set():
            number += 1
            url = self.members[node].url
            entity = f"w-{writer}-{number}"
            ledger.attempted += 1
            if await self._ok("PUT", f"{url}/v1/entities/{entity}", {"attrs": {"n": number}}):
                ledger.created[entity] = (number, time.monotonic())
            if number % 4 == 0:
                body = {"attrs": {writer: number}}
                if await self._ok("PATCH", f"{url}/v1/entities/{SHARED}", body):
                    ledger.shared[writer] = number
                    ledger.patches += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(*WRITE_PAUSE))

    async def _ok(self, method: str, url: str, body: Any) -> bool:
        try:
            async with self.session.request(method, url, json=body) as answer:
                await answer.read()
                assert answer.status < 500, f"{method} {url}: {answer.status}"
                return 200 <= answer.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False  # cut off: it may or may not have happened

    async def _watch(self, node: str, stop: asyncio.Event) -> None:
        """Note when each ``w-`` entity first exists on ``node`` (reconnecting as needed)."""
        seen = self.ledger.seen
        while not stop.is_set():
            try:
                async with aiohttp.ClientSession() as session:  # no total deadline: a stream
                    async with session.get(
                        f"{self.members[node].url}/v1/events",
                        timeout=aiohttp.ClientTimeout(sock_connect=2, sock_read=5),
                    ) as stream:
                        event = ""
                        while not stop.is_set():
                            line = await asyncio.wait_for(stream.content.readline(), 3.0)
                            if not line:
                                break
                            if line.startswith(b"event: "):
                                event = line[7:].strip().decode()
                            elif line.startswith(b"data: "):
                                now = time.monotonic()
                                for entity in _existing(event, orjson.loads(line[6:])):
                                    if entity.startswith("w-"):
                                        seen.setdefault(entity, {}).setdefault(node, now)
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    # -- after healing ---------------------------------------------------------------------

    async def converge(self, scenario: str, deadline: float = CONVERGE_DEADLINE) -> Outcome:
        """Wait (bounded) until every node agrees and holds every acknowledged write."""
        started = time.monotonic()
        converged_in: float | None = None
        lost: list[str] = []
        divergent = len(self.names)
        views: dict[str, dict[str, Any] | None] = {}
        while True:
            views = {name: await self.entities(name) for name in self.names}
            lost, divergent = self._judge(views)
            if not lost and divergent == 0:
                converged_in = time.monotonic() - started
                break
            if time.monotonic() - started > deadline:
                break
            await asyncio.sleep(0.2)
        await self._stop_watching()
        return Outcome(
            scenario=scenario,
            faults=self.fault_events,
            messages_lost=self.faults.injected,
            acknowledged=self.ledger.acknowledged,
            lost=lost,
            divergent=divergent,
            converged_in=converged_in,
            visibility=self.ledger.visibility(self.names),
            peak_kib=self.peak_kib(),
            disagreement=[] if converged_in is not None else _disagreement(views),
        )

    def _judge(self, views: Mapping[str, dict[str, Any] | None]) -> tuple[list[str], int]:
        """Acknowledged writes missing somewhere, and nodes whose view differs from the
        most common one (a node that does not answer, or sees a replica not alive,
        counts as divergent)."""
        lost: list[str] = []
        forms: dict[str, bytes] = {}
        for name, view in views.items():
            if view is None:
                lost.append(f"{name} does not answer")
                continue
            lost.extend(self.ledger.missing(name, view))
            alive = all(
                (view.get(f"replica:{r}") or {}).get("status") == "exists" for r in self.names
            )
            forms[name] = orjson.dumps(view, option=orjson.OPT_SORT_KEYS) if alive else b""
        counts: dict[bytes, int] = {}
        for form in forms.values():
            counts[form] = counts.get(form, 0) + 1
        common = max(counts, key=lambda form: counts[form]) if counts else b""
        agree = sum(1 for form in forms.values() if form == common and form)
        return lost, len(self.names) - agree


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Wait (bounded) for tasks told to stop; cancel stragglers; raise what failed."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"{task.get_name()} failed") from task.exception()


def _disagreement(views: Mapping[str, dict[str, Any] | None], limit: int = 6) -> list[str]:
    """The entities whose status or reason differ between nodes, with each node's."""
    found = []
    keys = sorted({key for view in views.values() if view for key in view})
    for key in keys:
        seen = {
            name: (view or {}).get(key, {}).get("status", "-")
            + ": "
            + str((view or {}).get(key, {}).get("reason", "-"))
            for name, view in views.items()
        }
        if len(set(seen.values())) > 1:
            found.append(f"{key}: {seen}")
            if len(found) == limit:
                break
    return found


def _existing(event: str, data: Any) -> list[str]:
    """The entities an event says exist (a snapshot: all that exist; a change: its own)."""
    if event == "snapshot":
        return [key for key, view in data["entities"].items() if view["status"] == "exists"]
    if event == "change" and data.get("after") == "exists":
        return [data["entity"]]
    return []


def table(outcomes: list[Outcome]) -> str:
    """One row per scenario and a total: runs, faults, acknowledged writes, lost,
    divergent reads, visibility p50/p99."""
    rows = []
    by_name: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_name.setdefault(outcome.scenario, []).append(outcome)
    header = (
        "| scenario | runs | faults | messages lost | acknowledged writes | lost | "
        "divergent reads | visibility p50 | visibility p99 |"
    )
    rows.append(header)
    rows.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, group in [*by_name.items(), ("total", outcomes)]:
        delays = [delay for outcome in group for delay in outcome.visibility]
        rows.append(
            f"| {name} | {len(group)} | {sum(o.faults for o in group)} | "
            f"{sum(o.messages_lost for o in group)} | {sum(o.acknowledged for o in group)} | "
            f"{sum(len(o.lost) for o in group)} | {sum(o.divergent for o in group)} | "
            f"{_seconds(percentile(delays, 0.5))} | {_seconds(percentile(delays, 0.99))} |"
        )
    return "\n".join(rows)


def _seconds(value: float) -> str:
    return "-" if value != value else f"{value:.2f} s"
