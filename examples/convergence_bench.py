"""A convergence benchmark run from Python: a small sweep, its JSON, and one plot.

``run_convergence`` is what ``sphaera bench convergence`` runs: every scenario of the
sweep on the deterministic simulator (real replicas gossiping over a simulated network on
a simulated clock), written to ``convergence.json``. This example runs a sweep small
enough to take seconds, loads the JSON it wrote, prints the rounds each strategy took to
reach identical state beside the ideal epidemic's, and draws them in one PNG. (The
gossip pushes each change to its peers as soon as it is made, besides its rounds, so it
can beat the ideal epidemic, which spreads news only in rounds.)

Run: python examples/convergence_bench.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from sphaera_crdt.sim.convergence_bench import Sweep, run_convergence
from sphaera_crdt.sim.pools import ProcessPool

SWEEP = Sweep(
    replicas=(4, 8, 16),
    fanouts=(1, 2),
    losses=(0.1,),
    strategies=("gossip", "full-state"),
    entities=(5,),
    changes=(5,),
    trials=2,
    ideal_trials=50,
    seed=0,
)


def rounds_by_line(document: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Mean rounds to identical state per line of the plot: ``{label: {N: rounds}}``.

    The simulated strategies come from the summary rows (one per combination, averaged
    over the trials); the ideal epidemic (push-pull, the lower bound a gossip can hope
    for) from the ``ideal`` entries.
    """
    lines: dict[str, dict[int, float]] = {}
    for row in document["summary"]:
        label = f"{row['strategy']}, fanout {row['fanout']}"
        lines.setdefault(label, {})[row["replicas"]] = row["state_rounds"]["mean"]
    for ideal in document["ideal"]:
        label = f"ideal push-pull, fanout {ideal['fanout']}"
        lines.setdefault(label, {})[ideal["replicas"]] = ideal["push-pull"]["rounds"]["mean"]
    return lines


def plot(lines: dict[str, dict[int, float]], path: Path) -> None:
    """One line per strategy and fanout; markers and dashes tell them apart, not colour."""
    # Imported here, not at the top: the sweep's worker processes import this module
    # again, and need none of it.
    import matplotlib

    matplotlib.use("Agg")  # draw to files; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    figure, axes = plt.subplots(figsize=(12, 8), dpi=100)
    markers = "osD^v<>"
    for index, (label, points) in enumerate(sorted(lines.items())):
        sizes = sorted(points)
        axes.plot(
            sizes,
            [points[n] for n in sizes],
            marker=markers[index % len(markers)],
            linestyle="--" if label.startswith("ideal") else "-",
            label=label,
        )
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({n for points in lines.values() for n in points}))
    axes.get_xaxis().set_major_formatter(ScalarFormatter())
    axes.set_xlabel("replicas (N)")
    axes.set_ylabel("mean gossip rounds to identical state")
    axes.set_title("Rounds to converge after a burst of changes")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for the JSON and the PNG")
    args = parser.parse_args()
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="sphaera-bench-"))

    scenarios = len(SWEEP.scenarios())
    print(f"running {scenarios} scenarios and {len(SWEEP.ideal_jobs())} ideal epidemics")
    # The tables and progress bar that the command prints are not needed here: quiet.
    run_convergence(
        SWEEP,
        out=out,
        pool=ProcessPool(workers=2),
        plots=False,
        profile=None,
        console=Console(quiet=True),
    )

    document = json.loads((out / "convergence.json").read_text(encoding="utf-8"))
    print(f"loaded {out / 'convergence.json'}: {len(document['runs'])} runs")
    lines = rounds_by_line(document)
    sizes = sorted({n for points in lines.values() for n in points})
    print("mean rounds to identical state")
    print(f"  {'':32}" + "".join(f"{f'N={n}':>8}" for n in sizes))
    for label, points in sorted(lines.items()):
        print(f"  {label:32}" + "".join(f"{points.get(n, float('nan')):8.2f}" for n in sizes))

    path = out / "rounds.png"
    plot(lines, path)
    print(f"saved the plot to {path}")


if __name__ == "__main__":
    main()
