"""Smoke test: the scale benchmark runs one gossip run per N in a fresh process and reports
its time, events and peak memory, with their growth (whether growth is linear is the
benchmark's to show, at full scale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from figures import all_finite, positive, run_benchmark

pytestmark = pytest.mark.slow


def test_bench_scale_quick_reports_time_and_memory_per_n(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    printed = run_benchmark("bench_scale.py", "--quick", "--json", str(out), timeout=300)
    document = json.loads(out.read_text())
    all_finite(document)
    runs = document["runs"]
    assert [run["replicas"] for run in runs] == [100, 200]
    for run in runs:
        assert run["converged"] is True
        for name in ("build_seconds", "run_seconds", "wall_seconds", "cpu_seconds"):
            positive(run[name], f"N = {run['replicas']}: {name}")
        # each run in its own process: its peak is above the interpreter's before building
        assert run["peak_bytes"] > run["start_peak_bytes"] > 0
        positive(run["bytes_per_replica"], "bytes per replica")
        assert f"| {run['replicas']:,} |" in printed
    small, large = runs
    assert large["events"] > small["events"]
    assert small["growth"] == {"replicas": 1.0, "wall": 1.0, "cpu": 1.0, "memory": 1.0}
    assert large["growth"]["replicas"] == 2.0
    positive(large["growth"]["memory"], "memory growth")
    assert len(document["environment"]["load_average"]) == 3
    assert "N = 200:" in printed and "load average at the end" in printed
