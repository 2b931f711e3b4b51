"""Smoke test: the existence benchmark runs end to end at its quick scale (1k entities)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_existence.py"
FIGURES = (
    "full derivation",
    "topo-AND baseline",
    "incremental",
    "speedup",
    "eval mean",
    "eval p99",
    "setup",
)


def test_bench_existence_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in FIGURES:
        assert name in done.stdout, name
    results = json.loads(out.read_text())["results"]
    assert {(r["family"], r["entities"]) for r in results} == {("dag", 1000), ("cyclic", 1000)}
    for result in results:
        assert result["consistent"] is True
        assert result["full"]["engine_s"] > 0 and result["full"]["baseline_s"] > 0
        assert result["incremental"]["call_mean_s"] > 0
        assert result["incremental"]["evaluated_mean"] >= 0
        passed = result["goals"]["baseline_ratio"]
        assert ("PASS" if passed else "MISS") in done.stdout
    cyclic = next(r for r in results if r["family"] == "cyclic")
    assert cyclic["graph"]["cyclic_components"] > 0
