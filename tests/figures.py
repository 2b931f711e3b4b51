"""Checks for the benchmark smoke tests: every figure is produced and sane.

A smoke test runs a benchmark at its quick scale and reads what it wrote (its ``--json``
document, or its printed rows). A figure is sane when it is a number, finite, above zero
and in its unit, and when its verdict is the one its measurement gives. Whether a timed
goal is met is the benchmark's to say, never a test's: on a shared machine a verdict may
be either, but it must agree with the figure.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *arguments: str, timeout: float) -> str:
    """Run ``benchmarks/<script>`` with ``arguments``; return what it printed."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def positive(value: Any, what: str) -> float:
    """``value`` if it is a finite number above zero (not a bool); fail otherwise."""
    assert type(value) in (int, float), f"{what}: {value!r} is not a number"
    assert math.isfinite(value), f"{what}: {value!r} is not finite"
    assert value > 0, f"{what}: {value!r} is not above zero"
    return float(value)


def all_finite(document: Any, where: str = "document") -> None:
    """Fail if any number in a JSON document is NaN or infinite (``json`` reads both)."""
    if type(document) is float:
        assert math.isfinite(document), f"{where}: {document!r}"
    elif type(document) is list:
        for index, item in enumerate(document):
            all_finite(item, f"{where}[{index}]")
    elif type(document) is dict:
        for key, item in document.items():
            all_finite(item, f"{where}.{key}")


def ratio_of(figure: dict[str, Any], name: str, over: str, under: str) -> None:
    """The figure's ``ratio`` is ``figure[over] / figure[under]``, all three positive."""
    ratio = positive(figure["ratio"], f"{name}: ratio")
    measured = positive(figure[over], f"{name}: {over}")
    base = positive(figure[under], f"{name}: {under}")
    assert math.isclose(ratio, measured / base, rel_tol=1e-9), (name, ratio, measured, base)


def verdict(passed: Any, value: float, goal: float | None, *, at_least: bool = False) -> None:
    """``passed`` is what ``value`` against ``goal`` gives: ``None`` without a goal."""
    if goal is None:
        assert passed is None, (value, passed)
        return
    assert passed is (value >= goal if at_least else value <= goal), (value, goal, passed)


def row(printed: str, name: str) -> str:
    """The printed table row of the figure ``name`` (its first line that starts with it)."""
    rows = [line for line in printed.splitlines() if line.startswith(name)]
    assert rows, f"no row for {name!r} in:\n{printed}"
    return rows[0].rstrip()


def result_word(passed: bool | None) -> str:
    """The word a benchmark prints for a verdict."""
    return {True: "PASS", False: "MISS", None: "context"}[passed]


def figures_of(document: Any, units: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The figures of a benchmark's JSON document: every number finite, exactly the names
    of ``units``, each figure named and in its unit."""
    all_finite(document)
    figures: dict[str, dict[str, Any]] = document["figures"]
    assert set(figures) == set(units)
    for name, figure in figures.items():
        assert figure["name"] == name
        assert figure["unit"] == units[name], name
    return figures


def check_row(printed: str, name: str, unit_text: str, passed: bool | None) -> None:
    """The printed row of ``name`` shows ``unit_text`` and ends with its verdict."""
    line = row(printed, name)
    assert unit_text in line, line
    assert line.endswith(result_word(passed)), line
