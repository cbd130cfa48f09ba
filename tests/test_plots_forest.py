"""Plots: the forest plot of paired differences, and learning curves that stay readable with many strategies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from neuroshot.errors import NeuroshotError  # noqa: E402
from neuroshot.plots import _forest_figure, _learning_curves_figure, plot_forest, plot_learning_curves  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
GROUPS = ("trec", "sst2", "mean over cells")
LABELS = ("recommended − random+knn", "recommended − kmeans", "recommended − typiclust")
# Per label: an interval above 0 (win), spanning 0 (tie), below 0 (loss).
INTERVALS = {LABELS[0]: (0.05, 0.02, 0.08), LABELS[1]: (0.01, -0.02, 0.04), LABELS[2]: (-0.04, -0.07, -0.01)}


def _rows(groups=GROUPS) -> list[dict]:
    return [dict(group=g, label=label, mean=m, low=lo, high=hi)
            for g in groups for label, (m, lo, hi) in INTERVALS.items()]


def _no_overlap(a, b) -> bool:
    """Two display-space boxes share no area (touching edges allowed)."""
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def _inside(inner, outer) -> bool:
    """``inner`` lies within ``outer``, give or take a pixel of rounding."""
    return (inner.x0 >= outer.x0 - 1 and inner.y0 >= outer.y0 - 1
            and inner.x1 <= outer.x1 + 1 and inner.y1 <= outer.y1 + 1)


def test_forest_writes_a_readable_png_that_grows_with_the_rows(tmp_path):
    path = plot_forest(_rows(), tmp_path / "forest.png", title="3 sets x 3 comparisons")
    assert path == tmp_path / "forest.png" and path.read_bytes()[:8] == PNG
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 400 <= image.shape[0] <= 2000 and 500 <= image.shape[1] <= 2000
    assert image[..., :3].std() > 0.05  # something drawn, not a blank canvas
    small = imread(plot_forest(_rows(GROUPS[:1]), tmp_path / "small.png"))
    assert small.shape[0] < image.shape[0] - 100
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary behind


def test_forest_accepts_objects_with_attributes(tmp_path):
    rows = [SimpleNamespace(**row) for row in _rows()]
    assert np.array_equal(imread(plot_forest(rows, tmp_path / "objects.png")),
                          imread(plot_forest(_rows(), tmp_path / "dicts.png")))


def test_forest_layout_verdicts_and_colours():
    """Groups in order of appearance as bold headers, one colour per label across groups, the mean's
    marker coloured by its verdict, and the legend off the data."""
    fig = _forest_figure(_rows())
    (ax,) = fig.axes
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [name for g in GROUPS for name in (g, *LABELS)]
    assert [t.get_fontweight() for t in ax.get_yticklabels()][::4] == ["bold"] * 3
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first group on top
    means = [line for line in ax.get_lines() if line.get_marker() in ("^", "v", "o")]
    verdicts = {"^": "#2ca02c", "v": "#d62728", "o": to_hex("0.45")}
    assert [line.get_marker() for line in means] == ["^", "o", "v"] * 3
    assert all(to_hex(line.get_color()) == verdicts[line.get_marker()] for line in means)
    bars = [to_hex(c.get_color()[0]) for c in ax.collections]
    assert len(bars) == 9 and bars[:3] == bars[3:6] == bars[6:] and len(set(bars[:3])) == 3
    assert not {"#2ca02c", "#d62728"} & set(bars)  # label colours never read as a verdict
    assert any(line.get_xdata()[0] == 0 == line.get_xdata()[1] for line in ax.get_lines())  # the line at 0
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert _no_overlap(box, ax.get_window_extent(renderer)) and _inside(box, fig.bbox)
    assert all(_inside(t.get_window_extent(renderer), fig.bbox) for t in ax.texts)  # the numbers are not cut


@pytest.mark.parametrize("rows, message", [
    ([], "no forest rows"),
    (iter(()), "no forest rows"),
    ([dict(group="trec", label="a", mean=0.1, low=0.3, high=0.2)], "low 0.3 > high 0.2"),
    ([dict(group="trec", label="a", mean=0.1, low=0.0)], "has no 'high'"),
    ([SimpleNamespace(group="trec", mean=0.1, low=0.0, high=0.2)], "has no 'label'"),
    ([dict(group="trec", label="a", mean=float("nan"), low=0.0, high=0.2)], "finite"),
    ([dict(group="trec", label="a", mean="x", low=0.0, high=0.2)], "must be numbers"),
])
def test_forest_rejects_bad_rows(tmp_path, rows, message):
    with pytest.raises(NeuroshotError, match=message):
        plot_forest(rows, tmp_path / "forest.png")
    assert not (tmp_path / "forest.png").exists()


def test_forest_path_must_be_png(tmp_path):
    with pytest.raises(NeuroshotError, match=".png"):
        plot_forest(_rows(), tmp_path / "forest.pdf")


def _curves(n: int) -> dict[str, dict[int, list[float]]]:
    rng = np.random.default_rng(n)
    names = ["random"] + [f"strategy_{i:02d}" for i in range(n - 1)]
    return {name: {b: list(0.3 + 0.01 * i + 0.05 * np.log(b) + rng.normal(0, 0.02, 3)) for b in (8, 18, 50)}
            for i, name in enumerate(names)}


@pytest.mark.parametrize("n", [14, 24])
def test_learning_curves_lines_are_distinct_and_the_legend_is_off_the_data(n):
    curves = _curves(n)
    fig = _learning_curves_figure(curves)
    (ax,) = fig.axes
    fig.canvas.draw()
    lines = [line for line in ax.get_lines() if line.get_label().split(" (")[0] in curves]
    assert len(lines) == n
    looks = {(to_hex(line.get_color()), line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(looks) == n
    if n <= 20:  # tab20: every strategy its own colour, not only its own colour+marker+dash
        assert len({to_hex(line.get_color()) for line in lines}) == n
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    assert len(legend.get_texts()) == n + 1  # the strategies and the baseline's target line
    box = legend.get_window_extent(renderer)
    assert _no_overlap(box, ax.get_window_extent(renderer)), "the legend covers the data"
    assert _inside(box, fig.bbox), "the legend is cut off"


def test_plot_learning_curves_still_writes_png(tmp_path):
    path = plot_learning_curves(_curves(14), tmp_path / "curves.png", spread="std", title="trec")
    assert path.read_bytes()[:8] == PNG
    image = imread(path)
    assert image.shape[1] > image.shape[0] >= 400  # widened for the legend beside the axes
