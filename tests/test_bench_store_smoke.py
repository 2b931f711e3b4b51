"""Smoke test: the store benchmark runs end to end at its quick scale and every figure is
produced and sane (whether a goal is met is the benchmark's to say)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from figures import check_row, figures_of, positive, ratio_of, run_benchmark, verdict

pytestmark = pytest.mark.slow

#: figure -> its unit (``ours`` and ``base`` are in it; ``ratio`` is ours / base)
UNITS = {
    "writes/s sequential: full": "writes/s",
    "writes/s sequential: normal": "writes/s",
    "writes/s concurrent: full": "writes/s",
    "writes/s concurrent: normal": "writes/s",
    "restart": "s",
    "restart vs raw pycrdt": "s",
    "disk after churn 400x5": "B",
    "disk after churn 100x20": "B",
}
#: how each unit is printed in a row
PRINTED = {"writes/s": " /s ", "s": " s ", "B": " B "}


def test_bench_store_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    printed = run_benchmark("bench_store.py", "--quick", "--json", str(out), timeout=60)
    document = json.loads(out.read_text())
    figures = figures_of(document, UNITS)
    for name, figure in figures.items():
        ratio_of(figure, name, "ours", "base")
        # The verdict is computed from the measurement, not written in.
        verdict(figure["passed"], figure["ratio"], figure["goal"])
        check_row(printed, name, PRINTED[UNITS[name]], figure["passed"])
    for name in UNITS:
        if name.startswith("writes/s"):
            positive(figures[name]["detail"]["commits_per_write"], f"{name}: commits per write")
    restart = figures["restart"]["detail"]
    assert restart["entities"] > 0 and restart["full_state_bytes"] > 0
