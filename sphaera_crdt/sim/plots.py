"""PNG plots of a sweep (matplotlib, no pyplot): rounds and bytes against N, and status
agreement against state agreement over time.

* ``rounds_vs_n*.png``: mean rounds to identical state per strategy, the ideal epidemics
  measured in the same sweep, and (in the fanout-1 panels) the theory for fanout 1:
  push-pull ``log3 N + ln ln N``, push ``log2 N + ln N``. One panel per fanout and loss.
* ``bytes_vs_n*.png``: bytes sent until identical state, per strategy (log scales).
* ``agreement*.png``: for the largest N, against rounds since the changes, one panel per
  strategy (``agreement_partition*.png`` with a partition): the fraction of replicas
  holding every change (state agreement), the fraction of replicas whose statuses are
  already the final ones (status agreement) and the fraction of (replica, change) pairs
  delivered.

With several entity or change counts in one sweep, each combination gets its own files
(suffix ``_E<entities>_C<changes>``).

How the figures stay readable: each is at least 1200x800 px at :data:`DPI`; the panels of
one figure share their axes (they compare one quantity); every strategy has its own line
style and marker besides its colour, and its points are shifted a little along N
(:data:`DODGE`), so that two strategies with equal figures (gossip and naive forwarding
both take one round) stay visible side by side; the legend sits below the panels, in
the figure, laid out by matplotlib's constrained layout so that nothing is clipped.
:func:`figures` builds the figures without writing them (tests inspect their lines).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .epidemic import Mode, theory_rounds
from .strategies import STRATEGIES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DPI", "MIN_SIZE", "Style", "figures", "write_plots"]

#: Dots per inch of every PNG.
DPI: Final = 120
#: The smallest figure written, in pixels (width, height).
MIN_SIZE: Final = (1200, 800)
#: How far apart strategies' points are drawn along a log N axis (a factor per strategy).
DODGE: Final = 1.05


@dataclass(frozen=True, slots=True, kw_only=True)
class Style:
    """How one strategy's line is drawn: never told apart by colour alone."""

    color: str
    marker: str
    linestyle: str
    markersize: float
    filled: bool


STYLES: Final = {
    "gossip": Style(color="tab:blue", marker="o", linestyle="-", markersize=10, filled=True),
    "gossip-rounds": Style(
        color="tab:cyan", marker="s", linestyle="--", markersize=8, filled=False
    ),
    "full-state": Style(color="tab:red", marker="^", linestyle="-.", markersize=8, filled=True),
    "naive": Style(color="tab:orange", marker="v", linestyle=":", markersize=7, filled=False),
}


def figures(document: dict[str, Any]) -> list[tuple[str, Figure]]:
    """Every plot of ``document``: (file name, figure), not yet written."""
    sweep = document["sweep"]
    combos = [(e, c) for e in sweep["entities"] for c in sweep["changes"]]
    built: list[tuple[str, Figure]] = []
    for entities, changes in combos:
        suffix = "" if len(combos) == 1 else f"_E{entities}_C{changes}"
        rows = [
            row
            for row in document["summary"]
            if row["entities"] == entities and row["changes"] == changes
        ]
        plain = [row for row in rows if not row["partition"] and not row["crashes"]]
        ideal = [item for item in document["ideal"] if item["rumors"] == max(1, changes)]
        if plain:
            built.append((f"rounds_vs_n{suffix}.png", rounds_figure(plain, ideal, sweep)))
            built.append((f"bytes_vs_n{suffix}.png", bytes_figure(plain, sweep)))
        runs = [
            run
            for run in document["runs"]
            if run["scenario"]["entities"] == entities
            and run["scenario"]["changes"] == changes
            and "trace" in run["figures"]
            and not run["scenario"]["crashes"]
        ]
        for partitioned, name in ((False, "agreement"), (True, "agreement_partition")):
            chosen = [run for run in runs if bool(run["scenario"]["partition"]) == partitioned]
            if chosen:
                built.append((f"{name}{suffix}.png", agreement_figure(chosen)))
    return built


def write_plots(document: dict[str, Any], out: Path) -> list[Path]:
    """Write every plot of ``document`` into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(document):
        path = out / name
        figure.savefig(path, dpi=DPI)
        written.append(path)
    return written


def _figure(rows: int, columns: int, *, panel: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure of ``rows`` x ``columns`` panels of about ``panel`` inches each, never
    smaller than :data:`MIN_SIZE`, with constrained layout (it makes room for the legend
    and the labels instead of clipping them)."""
    from matplotlib.figure import Figure

    width = max(MIN_SIZE[0] / DPI, panel[0] * columns)
    height = max(MIN_SIZE[1] / DPI, panel[1] * rows + 1.2)  # the legend below
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    return figure, axes


def _grid(sweep: dict[str, Any]) -> tuple[Figure, Any]:
    return _figure(len(sweep["losses"]), len(sweep["fanouts"]), panel=(5.0, 3.6))


def _series(rows: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (row["replicas"], row[key]["mean"] if isinstance(row[key], dict) else row[key])
        for row in rows
    )
    present = [(n, value) for n, value in points if value is not None]
    return [n for n, _ in present], [value for _, value in present]


def _plot_strategy(ax: Axes, strategy: str, xs: list[int], ys: list[float]) -> None:
    """One strategy's points, shifted along the log N axis by its place in STRATEGIES."""
    style = STYLES[strategy]
    shift = DODGE ** (STRATEGIES.index(strategy) - (len(STRATEGIES) - 1) / 2)
    ax.plot(
        [x * shift for x in xs],
        ys,
        color=style.color,
        marker=style.marker,
        linestyle=style.linestyle,
        markersize=style.markersize,
        markerfacecolor=style.color if style.filled else "none",
        markeredgewidth=1.5,
        linewidth=1.8,
        alpha=0.9,
        label=strategy,
    )


def _strategy_rows(
    rows: list[dict[str, Any]], strategy: str, loss: float, fanout: int
) -> list[dict[str, Any]]:
    return [
        row
        for row in rows
        if row["strategy"] == strategy and row["loss"] == loss and row["fanout"] in (fanout, None)
    ]


def rounds_figure(
    rows: list[dict[str, Any]], ideal: list[dict[str, Any]], sweep: dict[str, Any]
) -> Figure:
    """Mean rounds to identical state against N: a panel per loss (rows) and fanout."""
    figure, axes = _grid(sweep)
    sizes = sorted(sweep["replicas"])
    for i, loss in enumerate(sweep["losses"]):
        for j, fanout in enumerate(sweep["fanouts"]):
            ax = axes[i][j]
            for strategy in STRATEGIES:
                xs, ys = _series(_strategy_rows(rows, strategy, loss, fanout), "state_rounds")
                if xs:
                    _plot_strategy(ax, strategy, xs, ys)
            for mode, style, marker in (("push-pull", "--", "x"), ("push", ":", "+")):
                points = sorted(
                    (item["replicas"], item[mode]["rounds"]["mean"])
                    for item in ideal
                    if item["fanout"] == fanout and item["loss"] == loss
                )
                if points:
                    ax.plot(
                        [n for n, _ in points],
                        [value for _, value in points],
                        color="black",
                        linestyle=style,
                        marker=marker,
                        markersize=8,
                        label=f"ideal {mode}",
                    )
            if fanout == 1 and len(sizes) > 1:
                grid = _log_grid(sizes[0], sizes[-1])
                theory: tuple[tuple[Mode, str, Any], ...] = (
                    ("push-pull", "tab:green", (0, (1, 1))),
                    ("push", "tab:purple", (0, (3, 1, 1, 1, 1, 1))),
                )
                for mode, color, dashes in theory:
                    ax.plot(
                        grid,
                        [theory_rounds(n, mode) for n in grid],
                        color=color,
                        linestyle=dashes,
                        linewidth=1.2,
                        alpha=0.8,
                        label=f"theory {mode} (f=1)",
                    )
            _sizes_axis(ax, sizes, bottom=i == len(sweep["losses"]) - 1)
            ax.set_title(f"fanout {fanout}, loss {loss:g}", fontsize=11)
            if j == 0:
                ax.set_ylabel("rounds to identical state", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylim(bottom=0)
    _legend(figure, axes)
    return figure


def bytes_figure(rows: list[dict[str, Any]], sweep: dict[str, Any]) -> Figure:
    """Bytes sent until identical state against N (log scales)."""
    figure, axes = _grid(sweep)
    for i, loss in enumerate(sweep["losses"]):
        for j, fanout in enumerate(sweep["fanouts"]):
            ax = axes[i][j]
            for strategy in STRATEGIES:
                xs, ys = _series(_strategy_rows(rows, strategy, loss, fanout), "bytes_to_state")
                if xs:
                    _plot_strategy(ax, strategy, xs, ys)
            _sizes_axis(ax, sorted(sweep["replicas"]), bottom=i == len(sweep["losses"]) - 1)
            ax.set_yscale("log")
            ax.set_title(f"fanout {fanout}, loss {loss:g}", fontsize=11)
            if j == 0:
                ax.set_ylabel("bytes sent until identical state", fontsize=10)
            ax.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


#: Below this many rounds the agreement plots' x axis is linear (it starts at 0).
AGREEMENT_LINEAR_UNTIL: Final = 0.01
#: (trace column, label, colour, line style, width) of the agreement plots' curves read
#: from the trace (the status curve comes from the final view's trace)
_AGREEMENT_CURVES: Final = (
    (3, "changes delivered", "tab:gray", ":", 1.6),
    (1, "state: replicas holding every change", "tab:blue", "-", 2.0),
)


def agreement_figure(runs: list[dict[str, Any]]) -> Figure:
    """For the largest N, agreement against rounds: a panel per strategy, one x scale."""
    largest = max(run["scenario"]["replicas"] for run in runs)
    runs = [run for run in runs if run["scenario"]["replicas"] == largest]
    fanouts = sorted({run["scenario"]["fanout"] for run in runs})
    fanout = min(fanouts, key=lambda value: abs(value - 2))
    loss = min(run["scenario"]["loss"] for run in runs)
    chosen: dict[str, dict[str, Any]] = {}
    for run in runs:
        scenario = run["scenario"]
        if scenario["loss"] != loss:
            continue
        if scenario["strategy"] != "naive" and scenario["fanout"] != fanout:
            continue
        chosen.setdefault(scenario["strategy"], run)
    strategies = [name for name in STRATEGIES if name in chosen]
    columns = 2 if len(strategies) > 2 else len(strategies)
    figure, axes = _figure(math.ceil(len(strategies) / columns), columns, panel=(6.0, 3.6))
    panels = [ax for row in axes for ax in row]
    for ax, strategy in zip(panels, strategies, strict=False):
        run = chosen[strategy]
        trace = run["figures"]["trace"]
        times = [point[0] for point in trace]
        for column, label, color, style, width in _AGREEMENT_CURVES:
            ax.step(
                times,
                [point[column] for point in trace],
                where="post",
                color=color,
                linestyle=style,
                linewidth=width,
                label=label,
            )
        view = run["figures"].get("final_view_trace") or []
        ax.step(
            [point[0] for point in view],
            [point[1] for point in view],
            where="post",
            color="tab:orange",
            linestyle="--",
            linewidth=2.0,
            label="status: replicas with their final statuses",
        )
        scenario = run["scenario"]
        extra = f", {scenario['partition']} groups" if scenario["partition"] else ""
        ax.set_title(
            f"{strategy}: N={largest}, f={'all' if strategy == 'naive' else fanout}, "
            f"loss {loss:g}{extra}",
            fontsize=11,
        )
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in panels[len(strategies) :]:
        ax.set_visible(False)  # an odd number of strategies leaves one panel empty
    for row in axes:
        row[0].set_ylabel("fraction of replicas", fontsize=10)
    for ax in panels[-columns:]:
        ax.set_xlabel("rounds since the changes (log scale above 0.01)", fontsize=10)
        ax.xaxis.set_tick_params(labelbottom=True)
    # One x scale for every panel, and a log one: the eager push agrees within a tenth of
    # a round, the rounds take several; on a linear scale one of them would be a sliver.
    panels[0].set_xscale("symlog", linthresh=AGREEMENT_LINEAR_UNTIL, linscale=0.3)
    panels[0].set_xlim(left=0)
    _legend(figure, axes)
    return figure


def _sizes_axis(ax: Axes, sizes: list[int], *, bottom: bool) -> None:
    """A log axis of replica counts, ticked at the sizes measured."""
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(size) for size in sizes])
    ax.minorticks_off()
    if len(sizes) > 1:
        # room for the strategies' dodge either side of the outermost sizes
        ax.set_xlim(sizes[0] / DODGE**3, sizes[-1] * DODGE**3)
    if bottom:
        ax.set_xlabel("replicas N", fontsize=10)


def _log_grid(low: int, high: int, points: int = 40) -> list[float]:
    if high <= low:
        return [float(low)]
    ratio = (high / low) ** (1 / (points - 1))
    return [low * ratio**step for step in range(points)]


def _legend(figure: Figure, axes: Any) -> None:
    """One legend for all panels, below them (``outside``: constrained layout keeps it in
    the figure and moves the panels up to make room)."""
    handles: dict[str, Any] = {}
    for row in axes:
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=min(4, len(handles)),
        fontsize=10,
        frameon=False,
    )
