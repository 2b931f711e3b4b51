"""Convergence benchmark on the simulator: ``sphaera bench convergence`` from a checkout.

Run it from the repository root::

    python benchmarks/bench_convergence.py --replicas 10,100,1000 --out results/   # a sweep
    python benchmarks/bench_convergence.py --markdown results/convergence.json   # its tables

Every option of ``sphaera bench convergence`` works here (``--help`` lists them; its
``--format markdown`` prints a sweep's report as Markdown). ``--markdown FILE`` prints the
report of a finished sweep from its ``convergence.json`` (and the ``timings.json`` beside
it) without running anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sphaera_crdt.cli import cli
from sphaera_crdt.sim.report import markdown_report


def markdown(path: Path) -> str:
    """The report of a finished sweep, as Markdown."""
    document = json.loads(path.read_text(encoding="utf-8"))
    timings_path = path.with_name("timings.json")
    timings = (
        json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.exists() else None
    )
    return markdown_report(document, timings)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--markdown"] and len(arguments) == 2:
        print(markdown(Path(arguments[1])), end="")
    else:
        cli.main(args=["bench", "convergence", *arguments], prog_name="bench_convergence.py")
