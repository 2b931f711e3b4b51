"""The convergence plots: big enough to read, every series drawn, nothing clipped or hidden."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import pytest
from bench_sweeps import tiny_sweep
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from sphaera_crdt.sim.plots import DODGE, DPI, MIN_SIZE, figures, write_plots
from sphaera_crdt.sim.strategies import STRATEGIES


@pytest.fixture
def document() -> dict[str, Any]:
    return tiny_sweep().document


@functools.cache
def _figures() -> dict[str, Figure]:
    """The figures of the shared sweep, laid out as saving does (drawn once: it is slow)."""
    built = dict(figures(tiny_sweep().document))
    for figure in built.values():
        FigureCanvasAgg(figure).draw()
    return built


def _drawn(document: dict[str, Any]) -> dict[str, Figure]:
    assert document is tiny_sweep().document
    return _figures()


def _lines(ax: Any) -> dict[str, Line2D]:
    return {line.get_label(): line for line in ax.get_lines()}


def _panels(figure: Figure) -> list[Any]:
    return [ax for ax in figure.axes if ax.get_visible()]


def test_the_figures_are_big_and_sharp(document: dict[str, Any]) -> None:
    for name, figure in _drawn(document).items():
        assert figure.dpi == DPI >= 100, name
        assert figure.bbox.width >= MIN_SIZE[0] and figure.bbox.height >= MIN_SIZE[1], name


@pytest.mark.slow  # writing four PNGs of this size takes seconds
def test_the_files_are_big_sharp_pngs(document: dict[str, Any], tmp_path: Path) -> None:
    paths = write_plots(document, tmp_path)
    names = {path.name for path in paths}
    assert names == {
        "rounds_vs_n.png",
        "bytes_vs_n.png",
        "agreement.png",
        "agreement_partition.png",
    }
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            width, height = image.size
            dpi = image.info["dpi"]
        assert width >= MIN_SIZE[0] and height >= MIN_SIZE[1], (path.name, image.size)
        assert min(dpi) >= 100 and round(dpi[0]) == DPI, (path.name, dpi)


def test_legends_lie_inside_the_figure(document: dict[str, Any]) -> None:
    for name, figure in _drawn(document).items():
        assert figure.legends, name
        box = figure.bbox
        for legend in figure.legends:
            extent = legend.get_window_extent()
            assert extent.x0 >= box.x0 and extent.y0 >= box.y0, name
            assert extent.x1 <= box.x1 and extent.y1 <= box.y1, name
            for ax in _panels(figure):  # and below the panels, not over them
                assert extent.y1 <= ax.get_window_extent().y0 + 1, name


def _expected(
    summary: list[dict[str, Any]], key: str, loss: float, fanout: int
) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in summary:
        if row["partition"] or row["crashes"] or row["loss"] != loss:
            continue
        if row["fanout"] not in (fanout, None):
            continue
        value = row[key]["mean"] if isinstance(row[key], dict) else row[key]
        if value is not None:
            series.setdefault(row["strategy"], []).append((row["replicas"], value))
    return {name: sorted(points) for name, points in series.items()}


@pytest.mark.parametrize(
    ("name", "key"), [("rounds_vs_n.png", "state_rounds"), ("bytes_vs_n.png", "bytes_to_state")]
)
def test_every_strategy_of_every_panel_is_drawn_and_told_apart(
    document: dict[str, Any], name: str, key: str
) -> None:
    figure = _drawn(document)[name]
    sweep = document["sweep"]
    panels = _panels(figure)
    assert len(panels) == len(sweep["losses"]) * len(sweep["fanouts"])
    for ax, (loss, fanout) in zip(
        panels, itertools.product(sweep["losses"], sweep["fanouts"]), strict=True
    ):
        assert ax.get_title() == f"fanout {fanout}, loss {loss:g}"
        lines = _lines(ax)
        expected = _expected(document["summary"], key, loss, fanout)
        assert set(expected) == set(STRATEGIES)  # every strategy measured in this sweep
        for strategy, points in expected.items():
            line = lines[strategy]
            xs, ys = line.get_xdata(), line.get_ydata()
            assert list(ys) == [value for _, value in points], (name, strategy)
            for x, (n, _) in zip(xs, points, strict=True):  # shifted a little, no more
                assert n / DODGE**2 <= x <= n * DODGE**2
        styles = [(lines[s].get_linestyle(), lines[s].get_marker()) for s in expected]
        assert len(set(styles)) == len(styles), styles  # not by colour alone
        if name.startswith("rounds"):
            assert {"ideal push-pull", "ideal push"} <= set(lines)
    # The panels compare one quantity: one x scale and one y scale for all of them.
    first = panels[0]
    for ax in panels[1:]:
        assert first.get_shared_x_axes().joined(first, ax)
        assert first.get_shared_y_axes().joined(first, ax)


def test_the_agreement_panels_share_their_axes(document: dict[str, Any]) -> None:
    drawn = _drawn(document)
    for name, partitioned in (("agreement.png", False), ("agreement_partition.png", True)):
        figure = drawn[name]
        panels = _panels(figure)
        largest = max(document["sweep"]["replicas"])
        strategies = [
            strategy
            for strategy in STRATEGIES
            if any(
                run["scenario"]["strategy"] == strategy
                and run["scenario"]["replicas"] == largest
                and bool(run["scenario"]["partition"]) == partitioned
                and "trace" in run["figures"]
                for run in document["runs"]
            )
        ]
        assert [ax.get_title().split(":")[0] for ax in panels] == strategies
        for ax in panels:
            lines = _lines(ax)
            assert set(lines) == {
                "changes delivered",
                "state: replicas holding every change",
                "status: replicas with their final statuses",
            }
            run = next(
                run
                for run in document["runs"]
                if run["scenario"]["strategy"] == ax.get_title().split(":")[0]
                and run["scenario"]["replicas"] == largest
                and bool(run["scenario"]["partition"]) == partitioned
                and "trace" in run["figures"]
                and f"loss {run['scenario']['loss']:g}" in ax.get_title()
                and (
                    run["scenario"]["strategy"] == "naive"
                    or f"f={run['scenario']['fanout']}," in ax.get_title()
                )
            )
            trace = run["figures"]["trace"]
            view = run["figures"].get("final_view_trace") or []
            for label, points, column in (
                ("changes delivered", trace, 3),
                ("state: replicas holding every change", trace, 1),
                ("status: replicas with their final statuses", view, 1),
            ):
                assert list(lines[label].get_xdata()) == [point[0] for point in points]
                assert list(lines[label].get_ydata()) == [point[column] for point in points]
            styles = {line.get_linestyle() for line in lines.values()}
            assert len(styles) == 3
            assert panels[0].get_shared_x_axes().joined(panels[0], ax)
            assert panels[0].get_shared_y_axes().joined(panels[0], ax)
            assert ax.get_xlim() == panels[0].get_xlim()
