"""The convergence report a person reads: 80 columns, nothing cut short, goals explained."""

from __future__ import annotations

import io
import itertools
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from bench_sweeps import tiny_sweep
from click.testing import CliRunner
from rich.console import Console

from sphaera_crdt.cli import cli
from sphaera_crdt.sim.convergence_bench import json_text, show
from sphaera_crdt.sim.goals import evaluate_goals
from sphaera_crdt.sim.report import markdown_report, rich_report
from sphaera_crdt.sim.sweep import SweepResult


def _distribution(mean: float | None, p99: float | None) -> dict[str, Any]:
    return {"count": 3, "mean": mean, "p50": p99, "p99": p99, "max": p99}


def _row(strategy: str, **where: Any) -> dict[str, Any]:
    """A summary row with the widest figures a sweep writes."""
    return {
        "strategy": strategy,
        **where,
        "fanout": None if strategy == "naive" else where["fanout"],
        "trials": 3,
        "converged": 2,
        "state_rounds": _distribution(123.456, 130),
        "status_rounds": _distribution(123.456, 130),
        "flips_per_replica_entity": 12.3456,
        "partition_window_state": 1234.56,
        "bytes_to_state": 987.6e9,
        "delivered_ratio_to_state": 1234.56,
        "payload_ratio_to_state": 2345.67,
        "payload_ratio": 2345.67,
        "envelope_per_message": 1234.5,
        "raw_diff_per_change": 88.8,
        "bytes_episode": 987.6e9,
        "idle_bytes_per_round": 987.6e9,
    }


def _worst_document() -> tuple[dict[str, Any], dict[str, Any]]:
    """Every dimension varies, every figure is as wide as it gets, goals miss."""
    grid = {
        "replicas": (10, 10000),
        "fanout": (1, 12),
        "loss": (0.0, 0.125),
        "partition": (0, 16),
        "crashes": (0, 128),
        "entities": (20, 100000),
        "changes": (10, 1000),
    }
    summary = []
    # Two groups, all low and all high: every dimension varies, the table stays short.
    for values in zip(*grid.values(), strict=True):
        where = dict(zip(grid, values, strict=True))
        for strategy in ("gossip", "gossip-rounds", "full-state"):
            summary.append(_row(strategy, **where))
        if where["fanout"] == 1:
            summary.append(_row("naive", **where))
    ideal = [
        {
            "replicas": n,
            "fanout": f,
            "loss": loss,
            "rumors": c,
            "push-pull": {"rounds": _distribution(99.999, 120)},
        }
        for n, f, loss, c in itertools.product(
            grid["replicas"], grid["fanout"], grid["loss"], grid["changes"]
        )
    ]
    document = {"summary": summary, "ideal": ideal, "interrupted": True}
    document["goals"] = evaluate_goals(summary, ideal)
    timings = {
        "jobs": 2,
        "wall_seconds": 12345.6,
        "runs": [
            {"strategy": row["strategy"], "replicas": row["replicas"], "seconds": 1234.567}
            for row in summary
        ],
    }
    return document, timings


def _rendered(document: dict[str, Any], timings: dict[str, Any] | None, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(rich_report(document, timings, width=width))
    return console.export_text()


def _assert_readable(text: str, width: int = 80) -> None:
    assert "…" not in text
    lines = text.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, too_long


@pytest.fixture
def tiny() -> SweepResult:
    return tiny_sweep()


def test_the_widest_report_fits_80_columns_and_cuts_nothing_short() -> None:
    document, timings = _worst_document()
    text = _rendered(document, timings)
    _assert_readable(text)
    # Nothing was cut: every figure and every strategy's short name is there whole.
    for figure in ("123.5 (130)*", "987.6 GB", "1,234.56 (2,345.67)", "100.0 (120)", "12.346"):
        assert figure in text, figure
    for name in ("gossip", "g-rounds", "full", "naive", "ideal"):
        assert f" {name} " in text or text.count(name) > 1
    assert "continued" in text  # seven varying dimensions do not fit with four strategies
    assert text.startswith("Interrupted")
    assert "Misses, and why:" in text


def test_a_real_sweep_reads_at_80_columns_with_its_goals(tiny: SweepResult) -> None:
    text = _rendered(tiny.document, tiny.timings)
    _assert_readable(text)
    for title in (
        "Rounds to identical state",
        "Rounds to agreed statuses",
        "Bytes sent until identical state",
        "Update bytes per raw diff byte",
        "Wall seconds per run",
    ):
        assert title in text
    checks = tiny.document["goals"]
    met = sum(check["passed"] is True for check in checks)
    assert f"Goals: {met} of {len(checks)} checks met" in text
    for check in checks:
        if check["passed"] is False:
            assert check["note"], check  # every miss says why
            assert check["note"][:30] in " ".join(text.split())


def test_markdown_holds_the_same_tables_with_full_names(tiny: SweepResult) -> None:
    text = markdown_report(tiny.document, tiny.timings)
    assert "| N | f | loss | part | gossip | gossip-rounds | full-state | naive | ideal |" in text
    assert "**Goals:" in text
    header_rows = [line for line in text.splitlines() if line.startswith("|---")]
    assert len(header_rows) >= 6
    assert "…" not in text


def test_json_format_prints_the_document(tiny: SweepResult) -> None:
    console = Console(record=True, width=80, file=io.StringIO())
    show(tiny, "json", console)
    text = console.export_text()
    assert text == json_text(tiny.document, compact=True)
    assert json.loads(text)["summary"] == tiny.document["summary"]


def test_the_command_prints_each_format_and_keeps_stdout_clean(tmp_path: Path) -> None:
    args = [
        "bench", "convergence", "--replicas", "4", "--fanout", "1", "--loss", "0",
        "--entities", "4", "--changes", "2", "--strategies", "gossip", "--trials", "1",
        "--ideal-trials", "5", "--no-plots", "--profile", str(tmp_path / "profile"),
    ]  # fmt: skip
    runner = CliRunner()
    printed = {}
    for name in ("json", "markdown", "table"):
        out = tmp_path / name
        result = runner.invoke(
            cli, [*args, "--out", str(out), "--format", name], prog_name="sphaera"
        )
        assert result.exit_code == 0, result.output
        assert "wrote convergence.json" in result.stderr and "wrote" not in result.stdout
        printed[name] = result.stdout
    assert printed["json"] == (tmp_path / "json" / "convergence.json").read_text()
    assert printed["markdown"].startswith("ideal: the ideal push-pull epidemic")
    assert "Goals:" in printed["table"] and "|---" not in printed["table"]
    _assert_readable(printed["table"])
    # Not a terminal and no --format: Markdown, the format that reads well in a file.
    default = runner.invoke(cli, [*args, "--out", str(tmp_path / "default")], prog_name="sphaera")
    assert default.exit_code == 0 and default.stdout.startswith("ideal: the ideal")


def test_bench_help_names_no_file_outside_the_package() -> None:
    runner = CliRunner()
    for command in (["bench", "--help"], ["bench", "convergence", "--help"]):
        result = runner.invoke(cli, command, prog_name="sphaera")
        assert result.exit_code == 0
        assert "benchmarks/" not in result.output and ".py" not in result.output
        assert "README" not in result.output


def test_the_checkout_script_prints_a_finished_sweep_as_markdown(
    tiny: SweepResult, tmp_path: Path
) -> None:
    script = Path(__file__).parent.parent / "benchmarks" / "bench_convergence.py"
    module = runpy.run_path(str(script))  # not as __main__: defines markdown() only
    (tmp_path / "convergence.json").write_text(json_text(tiny.document, compact=True))
    without_timings = module["markdown"](tmp_path / "convergence.json")
    assert without_timings == markdown_report(tiny.document, None)
    (tmp_path / "timings.json").write_text(json_text(tiny.timings))
    text = module["markdown"](tmp_path / "convergence.json")
    assert text == markdown_report(tiny.document, tiny.timings)
    assert "Wall seconds per run" in text and "Wall seconds" not in without_timings
