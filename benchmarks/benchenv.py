"""What every benchmark records about where it ran (versions, platform and commit), and the
``main`` of the benchmarks made of sections."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any


def git(*args: str) -> str | None:
    """Output of a git command in this checkout, or ``None`` if git is not available."""
    try:
        done = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(**extra: Any) -> dict[str, Any]:
    """Python, pycrdt, platform and commit (and whether the package has local changes)."""
    changes = git("status", "--porcelain", "--", "sphaera_crdt")
    return {
        "python": platform.python_version(),
        "pycrdt": metadata.version("pycrdt"),
        "platform": platform.platform(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "package_modified": None if changes is None else bool(changes),
        **extra,
    }


def run_sections(
    argv: Sequence[str] | None,
    *,
    doc: str | None,
    title: str,
    sections: Sequence[Callable[[Any], list[Any]]],
    scales: tuple[Any, Any],
    report: Callable[[list[Any]], str],
    versions: Callable[[dict[str, Any]], str],
    **extra: Any,
) -> int:
    """The ``main`` of a benchmark made of sections that each return figures.

    Parses ``--quick`` (the second of ``scales``), ``--json PATH`` and ``--only SECTION``
    (repeatable; the section's function name without ``bench_``), runs every section
    at the scale, printing each one's ratios as it ends, then prints ``report(figures)``
    and writes the figures with the environment (``extra`` joins it) if asked.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale every section down")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    names = [section.__name__.removeprefix("bench_") for section in sections]
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(names)}",
    )
    args = parser.parse_args(argv)
    if args.only:
        sections = [s for s, name in zip(sections, names, strict=True) if name in args.only]
    scale = scales[1] if args.quick else scales[0]
    env = environment(**extra)
    modified = " (package has uncommitted changes)" if env["package_modified"] else ""
    print(
        f"sphaera_crdt {title} benchmark: {'quick' if args.quick else 'full'} scale, "
        f"{scale.reps} alternating reps, medians; {versions(env)}, commit {env['commit']}"
        f"{modified}",
        flush=True,
    )
    figures: list[Any] = []
    for section in sections:
        started = time.perf_counter()
        done = section(scale)
        figures.extend(done)
        print(
            f"  {', '.join(f'{f.name} {f.ratio:.2f}x' for f in done)} "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(report(figures))
    if args.json is not None:
        document = {
            "environment": env,
            "scale": asdict(scale),
            "figures": {figure.name: figure.to_json() for figure in figures},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0
