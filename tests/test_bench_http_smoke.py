"""Smoke test: the HTTP benchmark runs end to end at its quick scale and reports every figure.

It starts real node processes on loopback, so it is slower than a unit test (about ten
seconds on an idle machine); the timeout leaves room for a busy one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_http.py"
GOALS = (
    "sync req/s vs raw",
    "replicated changes/s",
    "status spread p99",
    "idle exchange bytes",
)
CONTEXT = (
    "sync+update req/s vs raw",
    "status spread p50",
    "idle round wire bytes",
    "live cluster sync B/s",
)


def test_bench_http_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["figures"]
    for name in GOALS + CONTEXT:
        assert name in done.stdout
        assert figures[name]["value"] > 0
    for name in GOALS:
        passed = figures[name]["passed"]
        assert passed in (True, False)
        assert ("PASS" if passed else "MISS") in done.stdout
    for name in CONTEXT:
        assert figures[name]["passed"] is None
    assert figures["sync+update req/s vs raw"]["detail"]["all_updates_merged"] is True
    assert figures["status spread p50"]["detail"]["timeouts"] == 0
