"""The fault suite's long mode: every scenario many times, then one table.

Run from the project's root::

    python tests/faults/long_run.py --iterations 5          # or SPHAERA_FAULTS_ITERATIONS=5

Each iteration runs every scenario of :mod:`faults.scenarios` once (in a random order,
each on a fresh cluster with a seed drawn from ``--seed``) and prints its outcome; the
end prints a table per scenario and in total: runs, faults injected (partitions, cuts,
message-loss periods, stops, kills, skewed clocks), messages the proxies lost,
acknowledged writes, lost writes, divergent reads (nodes that disagreed after the
convergence deadline) and the visibility p50/p99 (seconds from a write's acknowledgement
until it exists on every node, measured from each node's event stream). The exit status
is 1 if a write was lost or a node diverged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from faults.cluster import Outcome, table  # noqa: E402
from faults.scenarios import SCENARIOS, run  # noqa: E402


async def long_run(iterations: int, seed: int, names: list[str]) -> list[Outcome]:
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    for iteration in range(iterations):
        order = list(names)
        rng.shuffle(order)
        for name in order:
            with tempfile.TemporaryDirectory(prefix="sphaera-faults-") as tmp:
                try:
                    outcome = await run(SCENARIOS[name], random.Random(rng.random()), Path(tmp))
                except AssertionError as exc:  # a fault that did not show or heal in time
                    print(f"[{iteration + 1}/{iterations}] {name}: FAILED: {exc}", flush=True)
                    raise
            outcomes.append(outcome)
            print(f"[{iteration + 1}/{iterations}] {outcome.summary()}", flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=int(os.environ.get("SPHAERA_FAULTS_ITERATIONS", "3")),
        help="runs of every scenario (default: $SPHAERA_FAULTS_ITERATIONS or 3)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the whole run")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeat); default: all",
    )
    args = parser.parse_args()
    started = time.monotonic()
    outcomes = asyncio.run(long_run(args.iterations, args.seed, args.scenario or list(SCENARIOS)))
    print()
    print(table(outcomes))
    print(f"\n{len(outcomes)} runs in {time.monotonic() - started:.0f} s, seed {args.seed}")
    failed = any(outcome.lost or outcome.divergent for outcome in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
