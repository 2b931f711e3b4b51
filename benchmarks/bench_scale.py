"""How one simulated gossip run grows with N: wall time, CPU time and peak memory.

Run it from the repository root::

    python benchmarks/bench_scale.py                          # N = 1,000 2,000 5,000 10,000
    python benchmarks/bench_scale.py --replicas 1000,10000    # some sizes
    python benchmarks/bench_scale.py --quick --json out.json  # N = 100, 200 (the smoke test)

Each N runs in a fresh child process (``python bench_scale.py --one N``), so that its peak
memory (``VmHWM``, the resident high-water mark; ``ru_maxrss`` where ``/proc`` is missing)
is its own and no allocator arena is left from a smaller run. The run is the sweep's
``gossip`` scenario: fanout 2, no loss, 20 entities, 10 changes, seed 1. The figures:
seconds to build the replicas, seconds to run to agreement (and the settle and idle
rounds), the events the loop ran, the peak memory, and each one's growth over the
smallest N (a linear simulator shows about the growth of N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchenv import environment

FULL = (1000, 2000, 5000, 10000)
QUICK = (100, 200)


def peak_bytes() -> int:
    """This process's peak resident memory, in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def one(replicas: int) -> dict[str, Any]:
    """Build and run one gossip scenario of ``replicas`` replicas; its figures."""
    from sphaera_crdt.sim.runner import Scenario, Simulation

    scenario = Scenario(
        strategy="gossip", replicas=replicas, fanout=2, entities=20, changes=10, seed=1
    )
    before = peak_bytes()
    cpu, wall = time.process_time(), time.perf_counter()
    simulation = Simulation(scenario)
    built, built_cpu = time.perf_counter(), time.process_time()
    result = simulation.run()
    ended, ended_cpu = time.perf_counter(), time.process_time()
    return {
        "replicas": replicas,
        "converged": result.figures["converged"],
        "state_rounds": result.figures["state"]["rounds"],
        "events": result.events,
        "build_seconds": round(built - wall, 3),
        "run_seconds": round(ended - built, 3),
        "wall_seconds": round(ended - wall, 3),
        "cpu_seconds": round(ended_cpu - cpu, 3),
        "build_cpu_seconds": round(built_cpu - cpu, 3),
        "start_peak_bytes": before,
        "peak_bytes": peak_bytes(),
    }


def measure(replicas: int) -> dict[str, Any]:
    """Run :func:`one` in a fresh child process."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", str(replicas)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"N = {replicas} failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return figures


def with_growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its growth over the first: of N, of wall time, of peak memory, and of
    the memory the replicas took (peak less the interpreter's before building)."""
    first = rows[0]
    base_memory = first["peak_bytes"] - first["start_peak_bytes"]
    for row in rows:
        memory = row["peak_bytes"] - row["start_peak_bytes"]
        row["bytes_per_replica"] = round(memory / row["replicas"])
        row["growth"] = {
            "replicas": round(row["replicas"] / first["replicas"], 3),
            "wall": round(row["wall_seconds"] / first["wall_seconds"], 3),
            "cpu": round(row["cpu_seconds"] / first["cpu_seconds"], 3),
            "memory": round(memory / base_memory, 3),
        }
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| N | build s | run s | wall s | CPU s | events | peak MB | KB per replica "
        "| growth: N | wall | CPU | memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        growth = row["growth"]
        lines.append(
            f"| {row['replicas']:,} | {row['build_seconds']:.1f} | {row['run_seconds']:.1f} "
            f"| {row['wall_seconds']:.1f} | {row['cpu_seconds']:.1f} | {row['events']:,} "
            f"| {row['peak_bytes'] / 1e6:.0f} | {row['bytes_per_replica'] / 1e3:.0f} "
            f"| {growth['replicas']:g}x | {growth['wall']:.2f}x | {growth['cpu']:.2f}x "
            f"| {growth['memory']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", help="replica counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one)))
        return 0
    sizes = (
        tuple(int(item) for item in args.replicas.split(","))
        if args.replicas
        else (QUICK if args.quick else FULL)
    )
    env = environment(load_average=[round(load, 2) for load in os.getloadavg()])
    print(
        f"sphaera_crdt scale benchmark: one gossip run (f = 2, E = 20, C = 10, seed 1) per N, "
        f"each in a fresh process; load average {env['load_average']}, "
        f"commit {env['commit']}",
        flush=True,
    )
    rows = []
    for size in sizes:
        row = measure(size)
        rows.append(row)
        print(
            f"N = {size:,}: {row['wall_seconds']:.1f} s wall, {row['cpu_seconds']:.1f} s CPU, "
            f"{row['events']:,} events, peak {row['peak_bytes'] / 1e6:.0f} MB, "
            f"converged {row['converged']}",
            flush=True,
        )
    rows = with_growth(rows)
    print(table(rows))
    end_load = [round(load, 2) for load in os.getloadavg()]
    print(f"load average at the end: {end_load}")
    if args.json is not None:
        document = {"environment": {**env, "load_average_end": end_load}, "runs": rows}
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
