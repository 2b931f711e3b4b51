"""PNG plots of a sweep (matplotlib, Agg backend): rounds and bytes against N, and
status agreement against state agreement over time.

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
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .epidemic import Mode, theory_rounds
from .strategies import STRATEGIES

__all__ = ["write_plots"]

_STYLE = {
    "gossip": ("tab:blue", "o"),
    "gossip-rounds": ("tab:cyan", "s"),
    "full-state": ("tab:red", "^"),
    "naive": ("tab:orange", "v"),
}


def write_plots(document: dict[str, Any], out: Path) -> list[Path]:
    """Write every plot of ``document`` into ``out``; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    sweep = document["sweep"]
    combos = [(e, c) for e in sweep["entities"] for c in sweep["changes"]]
    written: list[Path] = []
    for entities, changes in combos:
        suffix = "" if len(combos) == 1 else f"_E{entities}_C{changes}"
        rows = [
            row
            for row in document["summary"]
            if row["entities"] == entities and row["changes"] == changes
        ]
        plain = [row for row in rows if not row["partition"] and not row["crashes"]]
        ideal = [item for item in document["ideal"] if item["rumors"] == max(1, changes)]
        written.append(_rounds(plain, ideal, sweep, out / f"rounds_vs_n{suffix}.png"))
        written.append(_bytes(plain, sweep, out / f"bytes_vs_n{suffix}.png"))
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
                written.append(_agreement(chosen, out / f"{name}{suffix}.png"))
    return written


def _grid(sweep: dict[str, Any]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    losses, fanouts = sweep["losses"], sweep["fanouts"]
    figure, axes = plt.subplots(
        len(losses),
        len(fanouts),
        figsize=(3.6 * len(fanouts), 2.9 * len(losses)),
        squeeze=False,
        sharex=True,
    )
    return figure, axes


def _series(rows: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (row["replicas"], row[key]["mean"] if isinstance(row[key], dict) else row[key])
        for row in rows
    )
    present = [(n, value) for n, value in points if value is not None]
    return [n for n, _ in present], [value for _, value in present]


def _rounds(
    rows: list[dict[str, Any]], ideal: list[dict[str, Any]], sweep: dict[str, Any], path: Path
) -> Path:
    figure, axes = _grid(sweep)
    sizes = sorted(sweep["replicas"])
    for i, loss in enumerate(sweep["losses"]):
        for j, fanout in enumerate(sweep["fanouts"]):
            ax = axes[i][j]
            for strategy in STRATEGIES:
                chosen = [
                    row
                    for row in rows
                    if row["strategy"] == strategy
                    and row["loss"] == loss
                    and row["fanout"] in (fanout, None)
                ]
                xs, ys = _series(chosen, "state_rounds")
                if xs:
                    color, marker = _STYLE[strategy]
                    ax.plot(xs, ys, color=color, marker=marker, label=strategy)
            for mode, style in (("push-pull", "--"), ("push", ":")):
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
                        label=f"ideal {mode}",
                    )
            if fanout == 1 and len(sizes) > 1:
                grid = _log_grid(sizes[0], sizes[-1])
                theory: tuple[tuple[Mode, str], ...] = (
                    ("push-pull", "tab:green"),
                    ("push", "tab:purple"),
                )
                for mode, color in theory:
                    ax.plot(
                        grid,
                        [theory_rounds(n, mode) for n in grid],
                        color=color,
                        linewidth=0.8,
                        alpha=0.7,
                        label=f"theory {mode} (f=1)",
                    )
            _sizes_axis(ax, sizes)
            ax.set_title(f"fanout {fanout}, loss {loss:g}", fontsize=9)
            ax.set_ylabel("rounds to identical state", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    _legend(figure, axes)
    return _save(figure, path)


def _bytes(rows: list[dict[str, Any]], sweep: dict[str, Any], path: Path) -> Path:
    figure, axes = _grid(sweep)
    for i, loss in enumerate(sweep["losses"]):
        for j, fanout in enumerate(sweep["fanouts"]):
            ax = axes[i][j]
            for strategy in STRATEGIES:
                chosen = [
                    row
                    for row in rows
                    if row["strategy"] == strategy
                    and row["loss"] == loss
                    and row["fanout"] in (fanout, None)
                ]
                xs, ys = _series(chosen, "bytes_to_state")
                if xs:
                    color, marker = _STYLE[strategy]
                    ax.plot(xs, ys, color=color, marker=marker, label=strategy)
            _sizes_axis(ax, sorted(sweep["replicas"]))
            ax.set_yscale("log")
            ax.set_title(f"fanout {fanout}, loss {loss:g}", fontsize=9)
            ax.set_ylabel("bytes until identical state", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    _legend(figure, axes)
    return _save(figure, path)


def _agreement(runs: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

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
    figure, axes = plt.subplots(
        1, len(strategies), figsize=(3.4 * len(strategies), 3.2), squeeze=False, sharey=True
    )
    for ax, strategy in zip(axes[0], strategies, strict=True):
        run = chosen[strategy]
        trace = run["figures"]["trace"]
        times = [point[0] for point in trace]
        ax.step(
            times,
            [point[3] for point in trace],
            where="post",
            color="tab:gray",
            linewidth=0.8,
            label="changes delivered",
        )
        ax.step(
            times,
            [point[1] for point in trace],
            where="post",
            color="tab:blue",
            label="state: replicas holding every change",
        )
        view = run["figures"].get("final_view_trace") or []
        ax.step(
            [point[0] for point in view],
            [point[1] for point in view],
            where="post",
            color="tab:orange",
            label="status: replicas with their final statuses",
        )
        scenario = run["scenario"]
        extra = f", {scenario['partition']} groups" if scenario["partition"] else ""
        ax.set_title(
            f"{strategy}: N={largest}, f={'all' if strategy == 'naive' else fanout}, "
            f"loss {loss:g}{extra}",
            fontsize=8,
        )
        ax.set_xlabel("rounds since the changes", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction", fontsize=8)
    _legend(figure, axes)
    return _save(figure, path)


def _sizes_axis(ax: Any, sizes: list[int]) -> None:
    """A log axis of replica counts, ticked at the sizes measured."""
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(size) for size in sizes])
    ax.minorticks_off()
    ax.set_xlabel("replicas N", fontsize=8)


def _log_grid(low: int, high: int, points: int = 40) -> list[float]:
    if high <= low:
        return [float(low)]
    ratio = (high / low) ** (1 / (points - 1))
    return [low * ratio**step for step in range(points)]


def _legend(figure: Any, axes: Any) -> None:
    handles: dict[str, Any] = {}
    for row in axes:
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(4, len(handles)),
        fontsize=7,
        frameon=False,
    )
    rows = len(axes)
    figure.tight_layout(rect=(0, (0.08 + 0.03 * (len(handles) > 4)) / rows**0.5, 1, 1))


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
