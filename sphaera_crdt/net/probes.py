"""The probe runner: carries out the probes :class:`~sphaera_crdt.core.probes.ProbeSchedule`
finds due, in an asyncio loop, and records each outcome as this replica's observation.

Every check runs as its own task under a deadline of the probe's ``timeout`` and a
semaphore of ``max_in_flight``, so a slow or hung target costs at most its timeout and
never blocks the loop (``exec`` runs through an asyncio subprocess, killed at the
deadline). A check that cannot start -- a refused connection, a missing program -- is an
observation with ``ok: false`` and the error.

Targets are policy, not data: a node runs probes only when told to (``--run-probes``),
``exec`` probes only with ``allow_exec``, and http/tcp probes only to hosts that
:class:`~sphaera_crdt.core.probes.ProbeTargets` allows. A probe this node may not run is
not run and not recorded (it would otherwise claim evidence it never gathered); it is
counted in :attr:`ProbeRunner.refused` and logged once.

Embedders run the same object in their own loop: ``await runner.run()`` as a task, or
``await runner.run_due()`` to run what is due once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import aiohttp

from ..core.probes import DEFAULT_ALLOW, Probe, ProbeSchedule, ProbeTargets
from ..core.replica import Replica
from ..core.views import RecordChange
from ..errors import InputError, SphaeraError

__all__ = ["ProbeRunner"]

#: Bytes of a check's output (or an error's text) kept in the observation's value.
MAX_OUTPUT: Final = 200
_log = logging.getLogger("sphaera_crdt.probes")


def _text(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:MAX_OUTPUT]


class ProbeRunner:
    """Runs the probes a replica's records ask this replica to run.

    Args:
        replica: The replica whose records are read and whose observations are written;
            only the loop that runs this object may touch it.
        allow: Hosts or CIDR networks http and tcp probes may contact.
        allow_exec: Whether ``exec`` probes run.
        max_in_flight: Checks running at once at most.
        clock: Seconds as float, for scheduling (monotonic by default).
        logger: Where refusals are logged.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        allow: Iterable[str] = DEFAULT_ALLOW,
        allow_exec: bool = False,
        max_in_flight: int = 16,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise InputError(f"max in flight must be at least 1, not {max_in_flight}")
        self.replica = replica
        self.targets = ProbeTargets(allow)
        self.allow_exec = allow_exec
        self.clock = clock
        self.log = logger or _log
        self.schedule = ProbeSchedule(replica.id)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        #: entity -> why this node does not run its probe
        self.refused: dict[str, str] = {}
        #: checks completed (whatever their outcome)
        self.runs = 0
        self._probes: dict[str, tuple[Probe, str | None]] = {}
        self._dirty: set[str] = set()
        self._unsubscribe: Callable[[], None] | None = None

    # -- what to run ----------------------------------------------------------------------

    def probes(self) -> dict[str, tuple[Probe, str | None]]:
        """Every declared entity's readable probe, with its owner.

        Unreadable probes (a peer's garbage) and retracted entities' probes are skipped.
        The whole state is read once; after that only the entities whose records changed.
        """
        if self._unsubscribe is None:
            self._unsubscribe = self.replica.subscribe_records(self._record_changed)
            self._probes = {}
            self._dirty = set(self.replica.entities())
        for entity in self._dirty:
            self._probes.pop(entity, None)
            view = self.replica.entity(entity)
            if view is None or view.probe is None or view.reason == "retracted":
                continue
            probe = Probe.read(view.probe)
            if probe is not None:
                self._probes[entity] = (probe, view.owner)
        self._dirty.clear()
        return self._probes

    def _record_changed(self, change: RecordChange) -> None:
        if change.kind == "entity":
            self._dirty.add(change.id)

    def refusal(self, probe: Probe) -> str | None:
        """Why this node does not run ``probe`` (``None`` if it does)."""
        if probe.kind == "exec":
            return None if self.allow_exec else "exec probes need --allow-exec"
        if not self.targets.allows(probe.host):
            return f"host {probe.host!r} is not allowed by --probe-allow"
        return None

    def start_due(self) -> list[asyncio.Task[None]]:
        """Start every check that is due and not already running; the tasks started."""
        now = self.clock()
        started = []
        probes = self.probes()
        for entity in self.schedule.due(probes, now):
            if entity in self._running:
                continue
            probe = probes[entity][0]
            why = self.refusal(probe)
            self.schedule.started(entity, now)
            if why is not None:
                if self.refused.get(entity) != why:
                    self.log.warning("probe of %s not run: %s", entity, why)
                self.refused[entity] = why
                continue
            self.refused.pop(entity, None)
            task = asyncio.create_task(self._run(entity, probe), name=f"sphaera-probe-{entity}")
            self._running[entity] = task
            started.append(task)
        return started

    async def run_due(self) -> int:
        """Run every due check and wait for them; how many ran."""
        tasks = self.start_due()
        if tasks:
            await asyncio.gather(*tasks)
        return len(tasks)

    async def run(self, tick: float = 0.5) -> None:
        """Start due checks, looking at least every ``tick`` seconds, until cancelled."""
        try:
            while True:
                self.start_due()
                # Wake early for a probe due sooner than a tick (``every`` may be 0.1 s).
                due = self.schedule.next_due()
                delay = tick if due is None else min(tick, max(0.05, due - self.clock()))
                await asyncio.sleep(delay)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel running checks and close the HTTP session. Idempotent."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- running one check ----------------------------------------------------------------

    async def _run(self, entity: str, probe: Probe) -> None:
        try:
            async with self._slots:
                ok, value = await self.check(probe)
            try:
                self.replica.observe(entity, ok=ok, value=value, ttl=probe.ttl)
            except SphaeraError as exc:  # e.g. this node's clock is refused
                self.log.warning("probe of %s not recorded: %s", entity, exc)
            self.runs += 1
        finally:
            self._running.pop(entity, None)

    async def check(self, probe: Probe) -> tuple[bool, Any]:
        """Run one check within its timeout: ``(ok, value)``; never raises for the target."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(probe.timeout):
                ok, value = await _CHECKS[probe.kind](self, probe)
        except TimeoutError:
            return False, {"error": f"timed out after {probe.timeout} s"}
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            return False, {"error": _text(f"{type(exc).__name__}: {exc}")}
        value["ms"] = round((time.perf_counter() - started) * 1000, 1)
        return ok, value

    async def _http(self, probe: Probe) -> tuple[bool, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        assert isinstance(probe.target, str)
        async with self._session.get(probe.target, allow_redirects=False) as response:
            return response.status == probe.expect, {"status": response.status}

    async def _tcp(self, probe: Probe) -> tuple[bool, dict[str, Any]]:
        assert isinstance(probe.target, str)
        port = int(probe.target.rpartition(":")[2])
        _, writer = await asyncio.open_connection(probe.host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, {}

    async def _exec(self, probe: Probe) -> tuple[bool, dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            *probe.target,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            output = await process.stdout.read(MAX_OUTPUT)
            # The rest is drained, never kept: a chatty check must not fill memory.
            while await process.stdout.read(65536):
                pass
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        return code == 0, {"exit": code, "out": _text(output)}


_CHECKS: Final = {"http": ProbeRunner._http, "tcp": ProbeRunner._tcp, "exec": ProbeRunner._exec}
