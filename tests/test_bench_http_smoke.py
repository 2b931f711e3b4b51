"""Smoke test: the HTTP benchmark runs end to end at its quick scale and every figure is
produced and sane (whether a goal is met is the benchmark's to say).

It starts real node processes on loopback, so it is slower than a unit test (about ten
seconds on an idle machine); the timeout leaves room for a busy one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from figures import check_row, figures_of, positive, run_benchmark, verdict

pytestmark = pytest.mark.slow

#: figure -> its unit; the first four have goals, the others are context
UNITS = {
    "sync req/s vs raw": "ratio",
    "replicated changes/s": "changes/s",
    "status spread p99": "intervals",
    "idle exchange bytes": "B",
    "sync+update req/s vs raw": "ratio",
    "status spread p50": "intervals",
    "idle round wire bytes": "B/round",
    "live cluster sync B/s": "B/s/node",
}
GOALS = tuple(UNITS)[:4]
#: how each unit is printed in a row's measurement
PRINTED = {
    "ratio": " req/s vs raw ",
    "changes/s": " changes/s ",
    "intervals": " intervals ",
    "B": " B ",
    "B/round": " B per round ",
    "B/s/node": " B/s per node",
}


def test_bench_http_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    printed = run_benchmark("bench_http.py", "--quick", "--json", str(out), timeout=120)
    document = json.loads(out.read_text())
    figures = figures_of(document, UNITS)
    for name, figure in figures.items():
        value = positive(figure["value"], name)
        assert (figure["goal"] is not None) is (name in GOALS), name
        verdict(figure["passed"], value, figure["goal"], at_least=figure["at_least"])
        check_row(printed, name, PRINTED[UNITS[name]], figure["passed"])
    sync = figures["sync req/s vs raw"]["detail"]
    for key in ("node_rps", "raw_rps"):
        assert all(positive(rate, f"sync {key}") for rate in sync[key])
    assert figures["sync+update req/s vs raw"]["detail"]["all_updates_merged"] is True
    assert figures["status spread p50"]["detail"]["timeouts"] == 0
    rates = figures["replicated changes/s"]["detail"]["rates"]
    assert rates and all(positive(rate, "replicated changes/s") for rate in rates)
