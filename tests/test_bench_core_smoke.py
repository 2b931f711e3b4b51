"""Smoke test: the core benchmark runs end to end at its quick scale and every figure is
produced and sane (whether a goal is met is the benchmark's to say)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from figures import check_row, figures_of, ratio_of, run_benchmark, verdict

pytestmark = pytest.mark.slow

#: figure -> its unit (``ours`` and ``raw`` are in it; ``ratio`` is ours / raw)
UNITS = {
    "write cost: update": "us/op",
    "write cost: observe": "us/op",
    "merge cost": "us/op",
    "merge, first writes": "us/op",
    "merge, first writes: the walk alone": "us/op",
    **{
        name + size: "s"
        for name in (
            "ingest: merge",
            "ingest: restore",
            "ingest: restore, nothing of its own to move",
            "ingest: raw pycrdt moving the entries restore moves",
            "ingest: merge, both with the collector on",
        )
        for size in ("", ", large")
    },
    "delta bytes": "B",
    "delta bytes, a day later": "B",
    "growth": "B",
    "forget churn": "B",
    "signed: update": "us/op",
    "signed: observe": "us/op",
    "signed: merge, one change a delta": "us/op",
    "signed: merge unchecked, vs unsigned merge": "us/op",
    "signed: seal check alone, vs unsigned merge": "us/op",
    "signed: merge, 8 changes a delta": "us/op",
    "signed: ingest merge": "s",
    "signed: ingest restore": "s",
    "signed: bytes": "B",
}


def test_bench_core_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    printed = run_benchmark("bench_core.py", "--quick", "--json", str(out), timeout=120)
    document = json.loads(out.read_text())
    figures = figures_of(document, UNITS)
    for name, figure in figures.items():
        ratio_of(figure, name, "ours", "raw")
        verdict(figure["passed"], figure["ratio"], figure["goal"])
        check_row(printed, name, f" {UNITS[name]} ", figure["passed"])
    assert figures["merge cost"]["detail"]["operations"] > 0
    signed_bytes = figures["signed: bytes"]
    assert signed_bytes["ours"] > signed_bytes["raw"]  # seals take room
    assert 0 < signed_bytes["detail"]["bytes_per_entry"] < 200
