"""Convergence benchmark on the simulator: ``sphaera bench convergence`` from a checkout.

Run it from the repository root::

    python benchmarks/bench_convergence.py --replicas 10,100,1000 --out results/   # a sweep
    python benchmarks/bench_convergence.py --markdown results/convergence.json   # its tables

Every option of ``sphaera bench convergence`` works here (``--help`` lists them). With
``--markdown FILE`` it prints the tables of a finished sweep as Markdown instead, pivoted
by strategy, as they appear in ``benchmarks/README.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sphaera_crdt.cli import cli
from sphaera_crdt.sim.report import bytes_text, number_text

STRATEGIES = ("gossip", "gossip-rounds", "full-state", "naive")
#: (header, summary field) of the values that say which runs a row is about
DIMENSIONS = (
    ("N", "replicas"),
    ("f", "fanout"),
    ("loss", "loss"),
    ("partition", "partition"),
    ("crashes", "crashes"),
    ("entities", "entities"),
    ("changes", "changes"),
)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _groups(
    document: dict[str, Any],
) -> tuple[list[tuple[str, str]], dict[tuple[Any, ...], dict[str, Any]]]:
    """The varying dimensions and, per combination of them, each strategy's summary row."""
    summary = document["summary"]
    varying = [
        (header, field)
        for header, field in DIMENSIONS
        if len({row[field] for row in summary if row["strategy"] != "naive" or field != "fanout"})
        > 1
        or header in ("N", "f", "loss")
    ]
    fanouts = sorted({row["fanout"] for row in summary if row["fanout"] is not None})
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in summary:
        for fanout in fanouts if row["fanout"] is None else [row["fanout"]]:
            values = {**row, "fanout": fanout}
            key = tuple(values[field] for _, field in varying)
            groups.setdefault(key, {})[row["strategy"]] = row
    return varying, dict(sorted(groups.items(), key=lambda item: item[0]))


def markdown(path: Path) -> str:
    """The tables of a sweep, as Markdown."""
    document = json.loads(path.read_text())
    varying, groups = _groups(document)
    ideal = {
        (item["replicas"], item["fanout"], item["loss"], item["rumors"]): item
        for item in document["ideal"]
    }
    present = [name for name in STRATEGIES if any(name in group for group in groups.values())]
    dims = [header for header, _ in varying]

    def key_cells(key: tuple[Any, ...]) -> list[str]:
        return [f"{value:g}" if isinstance(value, float) else str(value) for value in key]

    def field(key: tuple[Any, ...], name: str) -> Any:
        return key[[f for _, f in varying].index(name)] if name in [f for _, f in varying] else None

    rounds_rows = []
    bytes_rows = []
    for key, group in groups.items():
        first = next(iter(group.values()))
        fanout = field(key, "fanout")
        item = ideal.get((first["replicas"], fanout, first["loss"], max(1, first["changes"])))
        cells = []
        for name in present:
            row = group.get(name)
            if row is None:
                cells.append("-")
                continue
            rounds = row["state_rounds"]
            cell = f"{number_text(rounds['mean'], 2)} ({number_text(rounds['p99'], 2)})"
            if row["converged"] < row["trials"]:
                cell += f" [{row['converged']}/{row['trials']} conv.]"
            cells.append(cell)
        for mode in ("push-pull", "push"):
            rounds = item[mode]["rounds"] if item else None
            cells.append(
                f"{number_text(rounds['mean'], 2)} ({number_text(rounds['p99'], 2)})"
                if rounds
                else "-"
            )
        status = [
            number_text(group[name]["status_rounds"]["mean"], 2) if name in group else "-"
            for name in present
        ]
        window = ""
        if "partition" in [f for _, f in varying] or first["partition"]:
            window = " / ".join(
                number_text(group[name]["partition_window_state"], 2) if name in group else "-"
                for name in present
            )
        rounds_rows.append(
            key_cells(key) + cells + [" / ".join(status)] + ([window] if window else [])
        )
        sizes = [
            bytes_text(group[name]["bytes_to_state"]) if name in group else "-" for name in present
        ]
        ratios = [
            number_text(group[name]["payload_ratio_to_state"], 2) if name in group else "-"
            for name in present
            if name != "naive"
        ]
        delivered = [
            number_text(group[name].get("delivered_ratio_to_state"), 2) if name in group else "-"
            for name in present
            if name != "naive"
        ]
        idle = [
            bytes_text(group[name]["idle_bytes_per_round"]) if name in group else "-"
            for name in present
            if name != "naive"
        ]
        bytes_rows.append(
            key_cells(key) + sizes + [" / ".join(ratios), " / ".join(delivered), " / ".join(idle)]
        )
    header = (
        dims
        + [f"{name} mean (p99)" for name in present]
        + ["ideal push-pull", "ideal push", "status rounds (" + " / ".join(present) + ")"]
    )
    if rounds_rows and len(rounds_rows[0]) > len(header):
        header.append("heal to state s (" + " / ".join(present) + ")")
    lines = ["Rounds to identical state (mean over trials, p99 in brackets):", ""]
    lines += _table(header, rounds_rows)
    others = [name for name in present if name != "naive"]
    lines += [
        "",
        "Bytes until identical state; update bytes sent, and arrived, per raw diff byte;"
        " idle bytes per round:",
        "",
    ]
    lines += _table(
        dims
        + [f"{name}" for name in present]
        + [
            "payload / raw (" + " / ".join(others) + ")",
            "delivered / raw (" + " / ".join(others) + ")",
            "idle per round (" + " / ".join(others) + ")",
        ],
        bytes_rows,
    )
    lines += ["", "Goals (every check is in the JSON; here the tally and the misses):", ""]
    tally: dict[tuple[str, str], list[int]] = {}
    misses = []
    for check in document["goals"]:
        counts = tally.setdefault((check["goal"], check["where"]["strategy"]), [0, 0, 0])
        counts[{True: 0, False: 1, None: 2}[check["passed"]]] += 1
        if check["passed"] is False:
            misses.append(
                [check["goal"], check["label"], check["measured_text"], check["limit_text"]]
            )
    lines += _table(
        ["goal", "strategy", "pass", "miss", "not measured"],
        [[goal, name, *map(str, counts)] for (goal, name), counts in tally.items()],
    )
    if misses:
        lines += ["", "Misses:", ""]
        lines += _table(["goal", "where", "measured", "limit"], misses)
    timings_path = path.with_name("timings.json")
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())
        cells: dict[tuple[str, int], list[float]] = {}
        for run in timings["runs"]:
            cells.setdefault((run["strategy"], run["replicas"]), []).append(run["seconds"])
        sizes_n = sorted({size for _, size in cells})
        time_rows = []
        for name in [n for n in STRATEGIES if any(s == n for s, _ in cells)]:
            values = [cells.get((name, size)) for size in sizes_n]
            time_rows.append([name] + ["-" if not v else f"{sum(v) / len(v):.1f}" for v in values])
        lines += ["", "Wall seconds per run (mean):", ""]
        lines += _table(["strategy"] + [f"N={size}" for size in sizes_n], time_rows)
        lines.append(
            f"\nWhole sweep: {timings['wall_seconds']:.0f} s with {timings['jobs']} worker(s)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--markdown"] and len(arguments) == 2:
        print(markdown(Path(arguments[1])))
    else:
        cli.main(args=["bench", "convergence", *arguments], prog_name="bench_convergence.py")
