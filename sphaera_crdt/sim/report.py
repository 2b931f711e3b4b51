"""Rich tables of a sweep: rounds, bytes, goals and run times.

Columns whose value is the same in every row (a sweep over N only, say) move into the
table's caption, so that the tables stay narrow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from rich.table import Table

__all__ = [
    "bytes_table",
    "bytes_text",
    "goals_table",
    "number_text",
    "rounds_table",
    "timings_table",
]

#: (header, summary field) of the columns that say which runs a row is about
_DIMENSIONS: Final = (
    ("N", "replicas"),
    ("f", "fanout"),
    ("loss", "loss"),
    ("part", "partition"),
    ("crash", "crashes"),
    ("E", "entities"),
    ("C", "changes"),
)

Cell = Callable[[dict[str, Any]], str]


def number_text(value: Any, digits: int = 1) -> str:
    """A figure for a table: ``-`` for none, whole numbers without decimals."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return f"{int(value):,}"


def bytes_text(value: float | None) -> str:
    """A byte count in B, kB, MB or GB (``-`` for none)."""
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _dimension(row: dict[str, Any], field: str) -> str:
    value = row[field]
    if field == "fanout" and value is None:
        return "all"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(document: dict[str, Any], title: str, metrics: list[tuple[str, Cell]]) -> Table:
    rows = document["summary"]
    varying = [
        (header, field)
        for header, field in _DIMENSIONS
        if len({_dimension(row, field) for row in rows}) > 1
    ]
    fixed = [
        f"{header}={_dimension(rows[0], field)}"
        for header, field in _DIMENSIONS
        if rows and (header, field) not in varying
    ]
    table = Table(title=title, caption=" ".join(fixed) if fixed else None)
    table.add_column("strategy")
    for header, _ in varying:
        table.add_column(header, justify="right")
    for header, _ in metrics:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(
            row["strategy"],
            *(_dimension(row, field) for _, field in varying),
            *(cell(row) for _, cell in metrics),
        )
    return table


def rounds_table(document: dict[str, Any]) -> Table:
    """Rounds and time to agreement, with the ideal epidemic alongside."""
    ideal = {
        (item["replicas"], item["fanout"], item["loss"], item["rumors"]): item
        for item in document["ideal"]
    }

    def ideal_cell(row: dict[str, Any]) -> str:
        item = ideal.get((row["replicas"], row["fanout"], row["loss"], max(1, row["changes"])))
        if item is None:
            return "-"
        rounds = item["push-pull"]["rounds"]
        return f"{number_text(rounds['mean'], 2)} ({number_text(rounds['p99'])})"

    metrics: list[tuple[str, Cell]] = [
        ("conv", lambda row: f"{row['converged']}/{row['trials']}"),
        (
            "rounds (p99)",
            lambda row: (
                f"{number_text(row['state_rounds']['mean'], 2)} "
                f"({number_text(row['state_rounds']['p99'])})"
            ),
        ),
        ("ideal pp (p99)", ideal_cell),
        ("status rounds", lambda row: number_text(row["status_rounds"]["mean"], 2)),
        ("state s", lambda row: number_text(row["state_time"], 2)),
        ("status s", lambda row: number_text(row["status_time"], 2)),
        ("flips/entity", lambda row: number_text(row["flips_per_replica_entity"], 3)),
    ]
    if any(row["partition"] for row in document["summary"]):
        metrics.append(("heal->state s", lambda row: number_text(row["partition_window_state"], 2)))
        metrics.append(
            ("heal->status s", lambda row: number_text(row["partition_window_status"], 2))
        )
    return _table(
        document, "Rounds to agreement (means over trials; a round is an interval)", metrics
    )


def bytes_table(document: dict[str, Any]) -> Table:
    """Bytes and messages per strategy."""
    metrics: list[tuple[str, Cell]] = [
        ("bytes->state", lambda row: bytes_text(row["bytes_to_state"])),
        ("msgs->state", lambda row: number_text(row["messages_to_state"], 0)),
        ("bytes episode", lambda row: bytes_text(row["bytes_episode"])),
        ("B/change/replica", lambda row: number_text(row["bytes_per_change_per_replica"])),
        ("raw diff/change", lambda row: number_text(row["raw_diff_per_change"])),
        ("payloadxraw->state", lambda row: number_text(row["payload_ratio_to_state"], 2)),
        ("payloadxraw episode", lambda row: number_text(row["payload_ratio"], 2)),
        ("envelope/msg", lambda row: number_text(row["envelope_per_message"])),
        ("idle/round", lambda row: bytes_text(row["idle_bytes_per_round"])),
    ]
    return _table(
        document, "Bytes (means over trials; bodies of sync requests and answers)", metrics
    )


def goals_table(document: dict[str, Any]) -> Table:
    """Every goal check: where, measured, limit, PASS / MISS."""
    table = Table(title="Goals (measured in this run)")
    for header in ("goal", "where", "measured", "limit", "result"):
        table.add_column(header)
    for check in document["goals"]:
        passed = check["passed"]
        result = (
            "[green]PASS[/green]"
            if passed
            else "[red]MISS[/red]"
            if passed is False
            else "[yellow]not measured[/yellow]"
        )
        table.add_row(
            check["goal"], check["label"], check["measured_text"], check["limit_text"], result
        )
    return table


def timings_table(timings: dict[str, Any]) -> Table:
    """Mean wall seconds per run, by strategy and N (how run time grows with N)."""
    cells: dict[tuple[str, int], list[float]] = {}
    for run in timings["runs"]:
        cells.setdefault((run["strategy"], run["replicas"]), []).append(run["seconds"])
    sizes = sorted({size for _, size in cells})
    strategies = sorted({strategy for strategy, _ in cells})
    table = Table(title=f"Wall seconds per run (mean), {timings['jobs']} worker(s)")
    table.add_column("strategy")
    for size in sizes:
        table.add_column(f"N={size}", justify="right")
    for strategy in strategies:
        row = [strategy]
        for size in sizes:
            values = cells.get((strategy, size))
            row.append("-" if not values else f"{sum(values) / len(values):.2f}")
        table.add_row(*row)
    return table
