"""Smoke test: the command-line start-up benchmark runs end to end with few runs and every
figure is produced and sane (whether the 0.25 s goal is met is the benchmark's to say)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from figures import positive, result_word, row, run_benchmark, verdict

pytestmark = pytest.mark.slow

GOALS = ("sphaera --version", "sphaera entities")
CONTEXT = ("sphaera entities --json", "python -c pass")


def test_bench_cli_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    printed = run_benchmark("bench_cli.py", "--runs", "2", "--json", str(out), timeout=120)
    document = json.loads(out.read_text())
    figures = document["figures"]
    assert set(figures) == {*GOALS, *CONTEXT}
    for name, figure in figures.items():
        seconds = positive(figure["seconds"], name)
        assert len(figure["runs"]) == 2 and seconds == min(figure["runs"]), name
        assert (figure["goal"] is not None) is (name in GOALS), name
        verdict(figure["passed"], seconds, figure["goal"])
        line = row(printed, name)
        assert f"{seconds:.3f} s" in line and line.endswith(result_word(figure["passed"])), line
    floor = figures["python -c pass"]["seconds"]
    assert all(figures[name]["seconds"] > floor for name in GOALS)
    met = all(figures[name]["passed"] for name in GOALS)
    assert f"): {'met' if met else 'NOT met'}" in printed
