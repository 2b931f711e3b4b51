"""Command-line start-up benchmark: how long a ``sphaera`` command takes, start to exit.

Run it from the repository root::

    python benchmarks/bench_cli.py                  # best of 5 runs of each command
    python benchmarks/bench_cli.py --runs 2         # fewer runs, a smoke test
    python benchmarks/bench_cli.py --json out.json  # also write every figure as JSON

It starts one idle node (``sphaera serve --memory`` on 127.0.0.1, port 0) and stops it
when it ends. Each command is run as ``python -m sphaera_crdt ...`` (what the ``sphaera``
script runs) from this checkout, with its output captured; a figure is the best (least)
wall-clock time of its runs, from starting the process until it has exited. The floor is
``python -c pass``: the interpreter's own start-up, which no command can beat.

The figures:

sphaera --version
    Prints the version. Goal: at most 0.25 s.
sphaera entities
    Lists the idle node's entities as a table (one request). Goal: at most 0.25 s.
sphaera entities --json
    The same as JSON. Context.
python -c pass
    The floor. Context.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from benchenv import environment

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a client command may take from start to exit.
GOAL = 0.25
LISTENING = re.compile(r"^sphaera: replica \S+ listening on (\S+)")


@dataclass(frozen=True, slots=True)
class Figure:
    """One command's start-to-exit time: the best of ``runs``, and its verdict."""

    name: str
    seconds: float
    runs: list[float]
    goal: float | None
    passed: bool | None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's package, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("SPHAERA_TOKEN", None)
    return env


@contextmanager
def idle_node() -> Iterator[str]:
    """An idle ``sphaera serve --memory`` process on 127.0.0.1; yields its URL."""
    command = [sys.executable, "-m", "sphaera_crdt", "serve", "--id", "bench", "--memory"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = LISTENING.match(line)
        if match is None:
            raise SystemExit(f"the node did not start: {line!r}")
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def best_of(name: str, argv: Sequence[str], runs: int, goal: float | None) -> Figure:
    """Run ``argv`` ``runs`` times; the figure is the least wall-clock time."""
    env = _env()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False, timeout=60)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.decode()}")
    seconds = min(times)
    return Figure(name, seconds, times, goal, None if goal is None else seconds <= goal)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the figures and whether the goal is met, write JSON if asked."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (best of)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    env = environment()
    print(
        f"sphaera_crdt CLI start-up benchmark: best of {args.runs} wall-clock runs; "
        f"Python {env['python']}, commit {env['commit']}",
        flush=True,
    )
    sphaera = [sys.executable, "-m", "sphaera_crdt"]
    with idle_node() as url:
        figures = [
            best_of("sphaera --version", [*sphaera, "--version"], args.runs, GOAL),
            best_of("sphaera entities", [*sphaera, "entities", "--url", url], args.runs, GOAL),
            best_of(
                "sphaera entities --json",
                [*sphaera, "entities", "--json", "--url", url],
                args.runs,
                None,
            ),
            best_of("python -c pass", [sys.executable, "-c", "pass"], args.runs, None),
        ]
    for figure in figures:
        verdict = {True: "PASS", False: "MISS", None: "context"}[figure.passed]
        goal = "" if figure.goal is None else f"goal <= {figure.goal:.2f} s"
        print(f"{figure.name:<26}{figure.seconds:>7.3f} s   {goal:<16}{verdict}")
    met = all(figure.passed is not False for figure in figures)
    print(f"start-up goal ({GOAL:.2f} s for a client command): {'met' if met else 'NOT met'}")
    if args.json is not None:
        document = {
            "environment": env,
            "runs": args.runs,
            "goal_seconds": GOAL,
            "figures": {figure.name: asdict(figure) for figure in figures},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
