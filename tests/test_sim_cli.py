"""`sphaera bench convergence` end to end at tiny sizes: tables, JSON, plots."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from figures import all_finite, positive

from sphaera_crdt.cli import cli
from sphaera_crdt.sim.goals import GOALS


@pytest.mark.slow
def test_bench_convergence_writes_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "convergence",
            "--replicas", "4,10",
            "--fanout", "1,2",
            "--loss", "0,0.2",
            "--partition", "0,2",
            "--changes", "3",
            "--entities", "8",
            "--trials", "1",
            "--ideal-trials", "5",
            "--jobs", "1",
            "--seed", "5",
            "--out", str(out),
        ],
        prog_name="sphaera",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for title in (
        "Rounds to identical state",
        "Rounds to agreed statuses",
        "Bytes",
        "Goals",
        "Wall seconds",
    ):
        assert title in result.output
    document = json.loads((out / "convergence.json").read_text())
    assert document["sweep"]["replicas"] == [4, 10]
    strategies = {run["scenario"]["strategy"] for run in document["runs"]}
    assert strategies == {"gossip", "gossip-rounds", "full-state", "naive"}
    assert {check["goal"] for check in document["goals"]} >= {"rounds", "bytes per change"}
    assert {check["goal"] for check in document["goals"]} <= set(GOALS)
    all_finite(document)
    for check in document["goals"]:
        # A goal is judged (PASS or MISS) exactly when it was measured, against its limit.
        assert (check["passed"] is None) is (check["measured"] is None), check
        if check["measured"] is not None:
            assert check["passed"] in (True, False) and check["limit"] is not None, check
            assert all(value >= 0 for value in check["measured"].values()), check
    for run in document["runs"]:
        if run["scenario"]["strategy"] == "gossip":  # the project's gossip always converges
            figures = run["figures"]
            assert figures["converged"] is True, run["scenario"]
            positive(figures["bytes_per_change"], "bytes per change")
            positive(figures["raw_diff_bytes"], "raw diff bytes")
            positive(figures["traffic_total"]["bytes"], "bytes in all")
    assert {item["replicas"] for item in document["ideal"]} == {4, 10}
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {key: value for key, value in document.items() if key != "runs"}
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings["runs"]) == len(document["runs"])
    for name in ("rounds_vs_n", "bytes_vs_n", "agreement", "agreement_partition"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        # IHDR: width and height, big-endian, right after the chunk's length and type
        width, height = struct.unpack(">II", png.read_bytes()[16:24])
        assert width >= 1200 and height >= 800, (name, width, height)


def test_bench_convergence_refuses_unknown_strategies(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "convergence", "--strategies", "gossip,smoke", "--out", str(tmp_path)],
        prog_name="sphaera",
    )
    assert result.exit_code == 2
    assert "smoke" in result.output
