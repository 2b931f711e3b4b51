"""Smoke test: the store benchmark runs end to end at its quick scale and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_store.py"
FIGURES = (
    "writes/s sequential: full",
    "writes/s sequential: normal",
    "writes/s concurrent: full",
    "writes/s concurrent: normal",
    "restart",
    "disk after churn",
)


def test_bench_store_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for name in FIGURES:
        assert name in done.stdout
    figures = json.loads(out.read_text())["figures"]
    assert len(figures) == len(FIGURES) + 1  # two churn shapes
    for name, figure in figures.items():
        assert figure["ratio"] > 0
        if figure["goal"] is None:
            assert figure["passed"] is None
            continue
        # The verdict is computed from the measurement, not written in.
        assert figure["passed"] is (figure["ratio"] <= figure["goal"])
        verdict = "PASS" if figure["passed"] else "MISS"
        row = next(line for line in done.stdout.splitlines() if line.startswith(name))
        assert row.rstrip().endswith(verdict)
