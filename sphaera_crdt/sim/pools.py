"""Where a sweep's runs go: this process, a pool of local worker processes, or a Ray cluster.

Theory of operation
-------------------
Every run of a sweep is seeded on its own and returns its figures, so it can run anywhere
and in any order: the sweep sorts what comes back, and the document is the same whichever
pool ran it. A pool only carries jobs out: :meth:`Pool.run` calls ``runner(job)`` for
every job somewhere and hands each outcome to ``done`` in the order they finish, in the
calling process (where the progress bar and the saved results are).

* :class:`InProcess` runs them one after another here (for profiling; for tests).
* :class:`ProcessPool` runs them on ``workers`` local processes, a fresh process per run,
  so that a run's time and memory do not depend on the runs before it (the allocator's
  arenas, warm caches).
* :class:`RayPool` sends each run as a Ray task to an existing cluster (or to a Ray
  instance it starts here, with ``address="local"``); a task's worker process also serves
  one run only (``max_calls=1``). The ``ray`` package is the optional ``[ray]`` extra,
  imported only when a sweep goes there; the cluster's nodes need the same version of
  this package installed, since a task imports the runner by name.

An interruption (``KeyboardInterrupt``: Ctrl-C, or SIGTERM translated by the command)
stops every run still going or waiting, without waiting for it, and propagates: the
outcomes already handed to ``done`` are the ones that finished.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar, Final, Protocol, TypeVar

from ..errors import PoolUnavailable

__all__ = ["LOCAL_RAY", "InProcess", "Pool", "ProcessPool", "RayPool"]

J = TypeVar("J")
R = TypeVar("R")

#: The ``address`` that has :class:`RayPool` start a Ray instance on this machine.
LOCAL_RAY: Final = "local"
#: Object store of a Ray instance started here: runs return a few kB of figures each.
LOCAL_OBJECT_STORE: Final = 100 * 1024 * 1024


class Pool(Protocol):
    """Runs jobs somewhere and hands their outcomes back here."""

    @property
    def name(self) -> str:
        """What runs the jobs, for the timings (``in-process``, ``processes``, ``ray``)."""

    def run(self, work: Sequence[J], runner: Callable[[J], R], done: Callable[[R], None]) -> int:
        """Call ``runner(job)`` for every job of ``work`` (in that order of priority) and
        ``done(outcome)`` here as each finishes; returns how many ran at once at most.

        Raises:
            PoolUnavailable: The jobs cannot go where this pool sends them.
        """


@dataclass(frozen=True, slots=True, kw_only=True)
class InProcess:
    """Every job in this process, one after another."""

    name: ClassVar[str] = "in-process"

    def run(self, work: Sequence[J], runner: Callable[[J], R], done: Callable[[R], None]) -> int:
        for job in work:
            done(runner(job))
        return 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessPool:
    """``workers`` local processes at a time, a fresh one per job.

    ``runner`` must be a module-level function, and every job and outcome picklable, so
    that a worker can receive and answer them. Workers ignore Ctrl-C: the terminal sends
    it to them too, and the pool (in this process) is what decides to stop them.
    """

    workers: int
    name: ClassVar[str] = "processes"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"a process pool needs at least one worker, not {self.workers}")

    def run(self, work: Sequence[J], runner: Callable[[J], R], done: Callable[[R], None]) -> int:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, runner.__module__])
        waiting = list(reversed(work))
        running: dict[Connection, BaseProcess] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    answers, answer = context.Pipe(duplex=False)
                    worker = context.Process(
                        target=_serve, args=(runner, waiting.pop(), answer), daemon=True
                    )
                    worker.start()
                    answer.close()  # the worker holds the sending end now
                    running[answers] = worker
                for ready in wait(list(running)):
                    assert isinstance(ready, Connection)
                    done(_answer(ready, running.pop(ready)))
        except BaseException:
            # An interrupted sweep stops its workers at once: a run at large N goes on for
            # minutes.
            for process in running.values():
                process.terminate()
            for answers, process in running.items():
                process.join()
                answers.close()
            raise
        return min(self.workers, len(work))


def _serve(runner: Callable[[J], R], job: J, answer: Connection) -> None:
    """A worker: run ``job`` and send back its outcome, or the exception it raised with
    its traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        outcome = runner(job)
    except Exception as exc:
        answer.send((False, exc, traceback.format_exc()))
    else:
        answer.send((True, outcome, ""))
    finally:
        answer.close()


def _answer(answers: Connection, process: BaseProcess) -> Any:
    """The outcome a worker sent; its exception raised here, with the worker's traceback
    as a note."""
    try:
        ok, value, trace = answers.recv()
    except EOFError:
        process.join()
        raise PoolUnavailable(
            f"a worker process died without an answer (exit status {process.exitcode}; "
            "out of memory?)"
        ) from None
    finally:
        answers.close()
    process.join()
    if not ok:
        value.add_note(f"in the worker process:\n{trace}")
        raise value
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RayPool:
    """Every job a Ray task on the cluster at ``address``.

    ``address`` is what ``ray.init`` takes: ``auto`` (the cluster this machine belongs
    to), ``HOST:PORT`` of a head node, ``ray://HOST:PORT`` (Ray Client), or
    :data:`LOCAL_RAY` to start a Ray instance on this machine for the sweep (on
    127.0.0.1, without a dashboard) and stop it afterwards. A sweep started inside a Ray
    driver that is already connected uses that connection and leaves it open.
    """

    address: str
    name: ClassVar[str] = "ray"

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise ValueError("a Ray address is needed (auto, HOST:PORT, ray://..., local)")

    def run(self, work: Sequence[J], runner: Callable[[J], R], done: Callable[[R], None]) -> int:
        ray = _ray()
        connected_here = not ray.is_initialized()
        if connected_here:
            self._connect(ray)
        pending: list[Any] = []
        try:
            workers = int(ray.cluster_resources().get("CPU", 0))
            # One run per worker process, as in the local pool: a run's memory and time
            # do not depend on the runs before it.
            task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(runner)
            pending = [task.remote(job) for job in work]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for reference in ready:
                    done(ray.get(reference))
        except BaseException:
            for reference in pending:
                ray.cancel(reference, force=True)
            raise
        finally:
            if connected_here:
                ray.shutdown()
        return max(1, min(workers, len(work)))

    def _connect(self, ray: Any) -> None:
        options: dict[str, Any] = {
            "address": self.address,
            "log_to_driver": False,  # the workers' output would cut through the progress bar
            "logging_level": logging.WARNING,
        }
        if self.address == LOCAL_RAY:
            options.update(
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1",
            )
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            raise PoolUnavailable(f"cannot reach the Ray cluster at {self.address}: {exc}") from exc


def _ray() -> Any:
    """The ``ray`` module (untyped here: it is an optional extra, absent from most
    installations, and the type checker must not depend on it)."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise PoolUnavailable(
            "running a sweep on Ray needs the ray package: pip install 'sphaera-crdt[ray]'"
        ) from exc
