"""What a convergence sweep prints: its tables, the goals' summary and the run times.

The figures are laid out once, as :class:`Section` values (a title, column headers, rows
of text, notes), and rendered two ways: rich tables for a terminal (:func:`rich_report`,
narrow enough for 80 columns: short strategy names, explained in a legend) and Markdown
(:func:`markdown_report`, full names). Each table compares the strategies side by side:
one row per combination of the swept values that vary, one column per strategy. Values
the whole sweep shares (a sweep over N only, say) move into a note under the table.

The goals close the report: how many checks were met, and for each miss one line with
the goal, the group of runs, and why (the check's note, written by :mod:`.goals`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .strategies import STRATEGIES

__all__ = [
    "GoalSummary",
    "Section",
    "bytes_text",
    "goal_summary",
    "markdown_report",
    "number_text",
    "rich_report",
    "sections",
]

#: (header, summary field, what the header means) of the values that name a group of runs
_DIMENSIONS: Final = (
    ("N", "replicas", "replicas"),
    ("f", "fanout", "fanout"),
    ("loss", "loss", "message loss"),
    ("part", "partition", "partition groups"),
    ("crash", "crashes", "replicas crashed"),
    ("E", "entities", "entities"),
    ("C", "changes", "changes"),
)
#: Column headers of the strategies in a terminal's 80 columns.
SHORT_NAMES: Final = {
    "gossip": "gossip",
    "gossip-rounds": "g-rounds",
    "full-state": "full",
    "naive": "naive",
}
INTERRUPTED: Final = (
    "Interrupted: only the runs that finished are here; groups may have fewer trials."
)
MARKDOWN_LEGEND: Final = (
    "ideal: the ideal push-pull epidemic at the same N, fanout and loss. naive forwarding "
    "sends to every peer: its figures are the same in every f row."
)
LEGEND: Final = (
    "gossip: the node's gossip (eager push, then rounds); g-rounds: gossip-rounds (rounds "
    "only); full: full-state push-pull; naive: naive forwarding (to every peer, so the same "
    "in every f row); ideal: the ideal push-pull epidemic."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """One table of the report: a title, column headers, rows of text and notes."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    #: How many leading columns name the row (the others are figures).
    keys: int
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"row {row} does not match the columns {self.columns}")


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


def _mean_text(value: float | None, digits: int) -> str:
    """A mean with a fixed number of decimals, so that a column's points line up."""
    return "-" if value is None else f"{value:,.{digits}f}"


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


Cell = Callable[[dict[str, Any]], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Grid:
    """The summary rows grouped by the varying dimensions: one group per table row."""

    varying: tuple[tuple[str, str, str], ...]
    fixed: tuple[str, ...]
    #: (key cells, the values of the row's runs with naive's fanout filled in, the summary
    #: row of each strategy)
    groups: tuple[tuple[tuple[str, ...], dict[str, Any], dict[str, dict[str, Any]]], ...]
    strategies: tuple[str, ...]

    @classmethod
    def of(cls, summary: list[dict[str, Any]]) -> _Grid:
        fanouts = sorted({row["fanout"] for row in summary if row["fanout"] is not None})

        def values(field: str) -> set[Any]:
            # naive has no fanout of its own: it appears in the row of every fanout
            return {row[field] for row in summary if field != "fanout" or row[field] is not None}

        varying = tuple(dim for dim in _DIMENSIONS if len(values(dim[1])) > 1)
        fixed = tuple(
            f"{header}={_value_text(min(values(field)))} ({meaning})"
            for header, field, meaning in _DIMENSIONS
            if values(field) and (header, field, meaning) not in varying
        )
        groups: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
        for row in summary:
            for fanout in (fanouts or [None]) if row["fanout"] is None else [row["fanout"]]:
                expanded = {**row, "fanout": fanout}
                key = tuple(expanded[field] for _, field, _ in varying)
                groups.setdefault(key, (expanded, {}))[1][row["strategy"]] = row
        ordered = sorted(groups.items(), key=lambda item: item[0])
        present = tuple(
            name for name in STRATEGIES if any(row["strategy"] == name for row in summary)
        )
        return cls(
            varying=varying,
            fixed=fixed,
            groups=tuple(
                (tuple(_value_text(v) for v in key), values_, group)
                for key, (values_, group) in ordered
            ),
            strategies=present,
        )

    def section(
        self,
        title: str,
        cell: Cell,
        *,
        names: dict[str, str],
        only: Iterable[str] | None = None,
        extra: tuple[tuple[str, Cell], ...] = (),
        notes: tuple[str, ...] = (),
    ) -> Section:
        """A table with one column per strategy (``only`` those), then ``extra`` columns."""
        chosen = [name for name in self.strategies if only is None or name in set(only)]
        rows = tuple(
            (
                *key,
                *(cell(group[name]) if name in group else "-" for name in chosen),
                *(column(values) for _, column in extra),
            )
            for key, values, group in self.groups
        )
        return Section(
            title=title,
            columns=(
                *(header for header, _, _ in self.varying),
                *(names[name] for name in chosen),
                *(header for header, _ in extra),
            ),
            rows=rows,
            keys=len(self.varying),
            notes=notes,
        )


def sections(
    document: dict[str, Any], *, names: dict[str, str] | None = None, digits: int = 1
) -> list[Section]:
    """The figures of a sweep, table by table (strategies named by ``names``)."""
    names = names or {name: name for name in STRATEGIES}
    summary = document["summary"]
    if not summary:
        return []
    grid = _Grid.of(summary)
    ideal = {
        (item["replicas"], item["fanout"], item["loss"], item["rumors"]): item
        for item in document["ideal"]
    }

    def ideal_cell(values: dict[str, Any]) -> str:
        key = (values["replicas"], values["fanout"], values["loss"], max(1, values["changes"]))
        item = ideal.get(key)
        if item is None:
            return "-"
        rounds = item["push-pull"]["rounds"]
        return f"{_mean_text(rounds['mean'], digits)} ({number_text(rounds['p99'])})"

    def rounds_cell(row: dict[str, Any]) -> str:
        rounds = row["state_rounds"]
        text = f"{_mean_text(rounds['mean'], digits)} ({number_text(rounds['p99'])})"
        return text + ("*" if row["converged"] < row["trials"] else "")

    unconverged = any(row["converged"] < row["trials"] for row in summary)
    result = [
        grid.section(
            "Rounds to identical state: mean (p99)",
            rounds_cell,
            names=names,
            extra=(("ideal", ideal_cell),),
            notes=(
                "A round is one gossip interval, counted from the changes."
                + (
                    " *: not every trial converged (means over those that did)."
                    if unconverged
                    else ""
                ),
            ),
        ),
        grid.section(
            "Rounds to agreed statuses (mean)",
            lambda row: _mean_text(row["status_rounds"]["mean"], digits),
            names=names,
            notes=("Every replica holds the final status of every entity.",),
        ),
        grid.section(
            "Status flips per replica and entity (mean)",
            lambda row: number_text(row["flips_per_replica_entity"], 3),
            names=names,
        ),
    ]
    if any(row["partition"] for row in summary):
        result.append(
            grid.section(
                "Seconds from a partition's heal to identical state (mean)",
                lambda row: (
                    "-" if not row["partition"] else number_text(row["partition_window_state"], 2)
                ),
                names=names,
            )
        )
    result += [
        grid.section(
            "Bytes sent until identical state (mean)",
            lambda row: bytes_text(row["bytes_to_state"]),
            names=names,
            notes=("Bodies of sync requests and answers, lost ones included.",),
        ),
        grid.section(
            "Update bytes per raw diff byte and replica: delivered (sent)",
            lambda row: (
                f"{number_text(row['delivered_ratio_to_state'], 2)} "
                f"({number_text(row['payload_ratio_to_state'], 2)})"
            ),
            names=names,
            only=("gossip", "gossip-rounds", "full-state"),
            notes=(
                "Until identical state. 1.00: each replica received each change once, in "
                "the smallest Yrs encoding. With loss p, sent >= delivered / (1 - p).",
            ),
        ),
        grid.section(
            "Idle bytes per round, after agreement (mean)",
            lambda row: bytes_text(row["idle_bytes_per_round"]),
            names=names,
            only=("gossip", "gossip-rounds", "full-state"),
        ),
    ]
    return [section for section in result if section.columns[section.keys :]]


def _where(check: dict[str, Any], names: dict[str, str], shown: set[str]) -> str:
    """The check's group of runs: its strategy and the values the sweep varies."""
    where = check["where"]
    parts = [names.get(where["strategy"], where["strategy"])]
    for header, field, _ in _DIMENSIONS:
        if field in shown and where[field] is not None:
            parts.append(f"{header}={_value_text(where[field])}")
    return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class GoalSummary:
    """The closing summary: a headline, one line per goal, a line per miss and per reason
    a goal went unmeasured."""

    headline: str
    goals: tuple[tuple[str, bool], ...]  # (line, whether every check of the goal passed)
    misses: tuple[str, ...]
    unmeasured: tuple[str, ...]


def goal_summary(document: dict[str, Any], *, names: dict[str, str] | None = None) -> GoalSummary:
    """Which goals were met; for each miss, where and why in one line."""
    names = names or {name: name for name in STRATEGIES}
    checks = document["goals"]
    if not checks:
        return GoalSummary(
            headline="Goals: none could be checked (the sweep has none of the runs they need).",
            goals=(),
            misses=(),
            unmeasured=(),
        )
    summary = document["summary"]
    shown = {
        field
        for _, field, _ in _DIMENSIONS
        if len({row[field] for row in summary if row[field] is not None}) > 1
    }
    tally: dict[str, list[int]] = {}
    for check in checks:
        counts = tally.setdefault(check["goal"], [0, 0, 0])
        counts[{True: 0, False: 1, None: 2}[check["passed"]]] += 1
    met = sum(counts[0] for counts in tally.values())
    missed = sum(counts[1] for counts in tally.values())
    goals = []
    for goal, (passed, failed, unmeasured) in tally.items():
        text = f"{goal}: {passed} of {passed + failed + unmeasured} met"
        if unmeasured:
            text += f", {unmeasured} not measured"
        goals.append((text, not failed and not unmeasured))
    misses = tuple(
        f"{check['goal']}, {_where(check, names, shown)}: "
        + (check["note"] or f"{check['measured_text']}; limit {check['limit_text']}")
        for check in checks
        if check["passed"] is False
    )
    reasons: dict[str, int] = {}
    for check in checks:
        if check["passed"] is None:
            key = f"{check['goal']}: {check['note'] or 'not measured'}"
            reasons[key] = reasons.get(key, 0) + 1
    return GoalSummary(
        headline=f"Goals: {met} of {len(checks)} checks met, {missed} missed.",
        goals=tuple(goals),
        misses=misses,
        unmeasured=tuple(f"{key} ({count} checks)" for key, count in reasons.items()),
    )


def timings_section(timings: dict[str, Any]) -> Section:
    """Mean wall seconds per run, by strategy and N (how run time grows with N)."""
    cells: dict[tuple[str, int], list[float]] = {}
    for run in timings["runs"]:
        cells.setdefault((run["strategy"], run["replicas"]), []).append(run["seconds"])
    sizes = sorted({size for _, size in cells})
    strategies = [name for name in STRATEGIES if any(s == name for s, _ in cells)]
    rows = tuple(
        (
            name,
            *(
                "-" if not cells.get((name, size)) else f"{_mean(cells[name, size]):.2f}"
                for size in sizes
            ),
        )
        for name in strategies
    )
    return Section(
        title="Wall seconds per run (mean)",
        columns=("strategy", *(f"N={size}" for size in sizes)),
        rows=rows,
        keys=1,
        notes=(_whole_sweep(timings),),
    )


def _whole_sweep(timings: dict[str, Any]) -> str:
    """The wall time of the sweep and what ran it (timings without a pool predate Ray)."""
    text = f"Whole sweep: {timings['wall_seconds']:.0f} s"
    workers = timings.get("jobs")
    if timings.get("pool") == "ray":
        return text + (f" on a Ray cluster of {workers} CPUs." if workers else " on a Ray cluster.")
    return text + (f" with {workers} worker(s)." if workers else ".")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _rich_table(section: Section) -> RenderableType:
    """The title, the table and its notes (title and notes span the whole width: a narrow
    table would wrap them word by word)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index, header in enumerate(section.columns):
        # fold, never an ellipsis: a figure cut short reads as a different figure
        table.add_column(
            header, justify="right" if index >= section.keys else "left", overflow="fold"
        )
    for row in section.rows:
        table.add_row(*row)
    parts: list[RenderableType] = [Text(section.title, style="bold"), table]
    parts += [Text(note, style="dim") for note in section.notes]
    return Group(*parts)


def _split(section: Section, width: int) -> list[Section]:
    """``section`` as tables that fit ``width`` columns, each with the key columns and as
    many figure columns as fit (one at least)."""

    def column_width(index: int) -> int:
        return max(len(section.columns[index]), *(len(row[index]) for row in section.rows))

    # SIMPLE_HEAD without edges: a space either side of a column and one between them
    def fits(indexes: list[int]) -> bool:
        return sum(column_width(i) for i in indexes) + 3 * (len(indexes) - 1) <= width

    keys = list(range(section.keys))
    chunks: list[list[int]] = [[]]
    for index in range(section.keys, len(section.columns)):
        if chunks[-1] and not fits(keys + chunks[-1] + [index]):
            chunks.append([])
        chunks[-1].append(index)
    if len(chunks) == 1:
        return [section]
    return [
        Section(
            title=section.title
            + ("" if number == 0 else f" (continued, {number + 1}/{len(chunks)})"),
            columns=tuple(section.columns[i] for i in keys + chunk),
            rows=tuple(tuple(row[i] for i in keys + chunk) for row in section.rows),
            keys=section.keys,
            notes=section.notes if number == len(chunks) - 1 else (),
        )
        for number, chunk in enumerate(chunks)
    ]


def _bullets(lines: Iterable[str], style: str = "") -> Table:
    """Lines with a hanging indent, so that a wrapped line stays readable at 80 columns."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=2, justify="right")
    grid.add_column(overflow="fold")
    for line in lines:
        grid.add_row("-", Text(line, style=style))
    return grid


def rich_report(
    document: dict[str, Any], timings: dict[str, Any] | None, *, width: int = 80
) -> RenderableType:
    """The whole report for a terminal ``width`` columns wide: legend, tables (split where
    they would not fit), run times, then the goals."""
    parts: list[RenderableType] = [Text(LEGEND, style="dim")]
    if document.get("interrupted"):  # files of older versions have no such field
        parts.insert(0, Text(INTERRUPTED, style="bold red"))
    fixed = _Grid.of(document["summary"]).fixed if document["summary"] else ()
    if fixed:
        parts.append(Text("Every run: " + ", ".join(fixed) + ".", style="dim"))
    tables = sections(document, names=SHORT_NAMES)
    if timings is not None and timings["runs"]:
        tables.append(timings_section(timings))
    for section in tables:
        for part in _split(section, width):
            parts += [Text(""), _rich_table(part)]
    goals = goal_summary(document, names=SHORT_NAMES)
    parts += [Text(""), Text(goals.headline, style="bold")]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=2, justify="right")
    grid.add_column(overflow="fold")
    for line, all_met in goals.goals:
        grid.add_row(
            Text("ok", style="green") if all_met else Text("!!", style="red"),
            Text(line),
        )
    parts.append(grid)
    if goals.misses:
        parts += [Text("Misses, and why:", style="bold"), _bullets(goals.misses)]
    if goals.unmeasured:
        parts += [Text("Not measured:", style="bold"), _bullets(goals.unmeasured)]
    return Group(*parts)


def _markdown_table(section: Section) -> list[str]:
    lines = [f"**{section.title}**", ""]
    lines.append("| " + " | ".join(section.columns) + " |")
    lines.append(
        "|" + "".join("---|" if i < section.keys else "---:|" for i in range(len(section.columns)))
    )
    lines += ["| " + " | ".join(row) + " |" for row in section.rows]
    if section.notes:
        lines += ["", *section.notes]
    return [*lines, ""]


def markdown_report(document: dict[str, Any], timings: dict[str, Any] | None) -> str:
    """The whole report as Markdown: tables with full strategy names, run times, goals."""
    lines: list[str] = [f"**{INTERRUPTED}**", ""] if document.get("interrupted") else []
    lines += [MARKDOWN_LEGEND, ""]
    fixed = _Grid.of(document["summary"]).fixed if document["summary"] else ()
    if fixed:
        lines += ["Every run: " + ", ".join(fixed) + ".", ""]
    for section in sections(document, digits=2):
        lines += _markdown_table(section)
    if timings is not None and timings["runs"]:
        lines += _markdown_table(timings_section(timings))
    goals = goal_summary(document)
    lines += [f"**{goals.headline}**", ""]
    lines += [
        f"- {line}" + ("" if all_met else " (**not all met**)") for line, all_met in goals.goals
    ]
    if goals.misses:
        lines += ["", "Misses, and why:", ""] + [f"- {line}" for line in goals.misses]
    if goals.unmeasured:
        lines += ["", "Not measured:", ""] + [f"- {line}" for line in goals.unmeasured]
    return "\n".join(lines).rstrip() + "\n"
