"""Smoke test: the core benchmark runs end to end at its quick scale and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_core.py"
FIGURES = ("write cost: update", "write cost: observe", "merge cost", "delta bytes", "growth")


def test_bench_core_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in FIGURES:
        assert name in done.stdout
    figures = json.loads(out.read_text())["figures"]
    for name in FIGURES:
        figure = figures[name]
        assert figure["ratio"] > 0
        assert figure["passed"] in (True, False)
        assert ("PASS" if figure["passed"] else "MISS") in done.stdout
