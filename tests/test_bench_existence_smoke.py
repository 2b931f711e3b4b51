"""Smoke test: the existence benchmark runs end to end at its quick scale (1k entities) and
every figure is produced and sane (whether a goal is met is the benchmark's to say)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from figures import all_finite, positive, run_benchmark, verdict

pytestmark = pytest.mark.slow

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
    printed = run_benchmark("bench_existence.py", "--quick", "--json", str(out), timeout=60)
    for name in FIGURES:
        assert name in printed, name
    document = json.loads(out.read_text())
    all_finite(document)
    goals = document["goals"]
    results = document["results"]
    assert {(r["family"], r["entities"]) for r in results} == {("dag", 1000), ("cyclic", 1000)}
    for result in results:
        what = f"{result['family']} {result['entities']}"
        assert result["consistent"] is True
        full, incremental = result["full"], result["incremental"]
        # seconds: the medians of the samples, each sample a positive time
        for key in ("engine", "baseline", "first"):
            median = positive(full[f"{key}_s"], f"{what}: full {key}_s")
            samples = full[f"{key}_samples_s"]
            assert len(samples) == full["reps"] > 0
            assert all(positive(sample, f"{what}: {key} sample") for sample in samples)
            assert min(samples) <= median <= max(samples)
        ratio = positive(full["ratio"], f"{what}: full ratio")
        assert math.isclose(ratio, full["engine_s"] / full["baseline_s"], rel_tol=1e-9)
        for key in ("call_mean_s", "engine_mean_s", "step_mean_s", "call_median_s", "call_p99_s"):
            positive(incremental[key], f"{what}: incremental {key}")
        assert incremental["evaluated_mean"] >= 0 and incremental["evaluated_p99"] >= 0
        speedup = positive(result["speedup"], f"{what}: speedup")
        assert math.isclose(speedup, full["engine_s"] / incremental["call_mean_s"], rel_tol=1e-9)
        verdict(result["goals"]["baseline_ratio"], ratio, goals["baseline_ratio_max"])
        # The speedup goal is judged at its own size only; the quick scale is below it.
        assert result["entities"] < goals["speedup_size"]
        assert result["goals"]["speedup"] is None
        word = "PASS" if result["goals"]["baseline_ratio"] else "MISS"
        rows = [line for line in printed.splitlines() if f"{result['entities']:,}" in line]
        assert any(line.split()[0] == result["family"] and word in line for line in rows)
    cyclic = next(r for r in results if r["family"] == "cyclic")
    assert cyclic["graph"]["cyclic_components"] > 0
    growth = document["growth"]
    assert [row["case"] for row in growth] == [
        "chain, dependencies first",
        "chain, dependents first",
        "chain, random order",
        "ring turning undetermined",
    ]
    assert "upkeep growth" in printed
    for row in growth:
        what = f"growth {row['case']}"
        for key in ("small", "large"):
            median = positive(row[f"{key}_s"], f"{what}: {key}_s")
            samples = row[f"{key}_samples_s"]
            assert samples and all(positive(sample, what) for sample in samples)
            assert min(samples) <= median <= max(samples)
        ratio = positive(row["ratio"], f"{what}: ratio")
        assert math.isclose(ratio, row["large_s"] / row["small_s"], rel_tol=1e-9)
        verdict(row["goal"], ratio, goals["growth_ratio_max"])
        word = "PASS" if row["goal"] else "MISS"
        assert any(
            line.strip().startswith(row["case"]) and word in line for line in printed.splitlines()
        )
