"""PNG plots: learning curves (metric vs labels, one line per strategy, seed spread shaded), the
per-layer map of task-critical neurons, and forest plots of paired differences with their intervals.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed) and
written atomically. matplotlib comes with ``pip install neuroshot[eval]``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .errors import NeuroshotError
from .stats import verdict

__all__ = ["plot_learning_curves", "plot_critical_neurons", "plot_forest"]

SPREADS = ("minmax", "std")
# Line styles for many strategies: 20 colours x 7 markers (coprime, so colour+marker repeats only after
# 140 lines) x 4 dash styles; no two of the first 140 lines look alike.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_DASHES = ("-", "--", "-.", (0, (1, 1)))


def _figure(width: float, height: float, rows: int = 1, **kw):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NeuroshotError("plots need matplotlib: pip install neuroshot[eval]") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, 1, squeeze=False, **kw)[:, 0]


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise NeuroshotError(f"plots are written as PNG: the path must end in .png, got '{path.name}'")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getvalue())
    return path


def _line_style(i: int) -> dict:
    """Colour, marker and dash of the ``i``-th curve: distinct for the first 140 curves. The colours are
    tab20's, the ten saturated ones first (tab10's order, so few lines look as before), then their light twins."""
    from matplotlib import colormaps

    tab20 = list(colormaps["tab20"].colors)
    colours = tab20[0::2] + tab20[1::2]
    return dict(color=colours[i % len(colours)], marker=_MARKERS[i % len(_MARKERS)],
                linestyle=_DASHES[(i // len(colours)) % len(_DASHES)])


def plot_learning_curves(results: Iterable | Mapping[str, Mapping[int, Sequence[float]]], path: str | os.PathLike, *,
                         metric: str = "accuracy", spread: str = "minmax", baseline: str | None = "random",
                         title: str | None = None) -> Path:
    """Plot ``metric`` against the number of labels, one line per strategy (mean over seeds), the
    seed spread shaded (``"minmax"`` or ``"std"``); write a PNG to ``path`` and return it.

    ``results``: experiment records (:class:`~neuroshot.experiment.ExperimentRecord`) or curves
    ``{strategy: {budget: [values]}}``. With ``baseline`` among the strategies, its mean at its
    largest budget is drawn as a dotted line (the label-efficiency target).
    """
    from .experiment import learning_curves

    if spread not in SPREADS:
        raise NeuroshotError(f"spread must be one of {', '.join(SPREADS)}, got '{spread}'")
    curves = results if isinstance(results, Mapping) else learning_curves(results, metric)
    if not curves:
        raise NeuroshotError("nothing to plot: no results")
    return _save(_learning_curves_figure(curves, metric=metric, spread=spread, baseline=baseline, title=title), path)


def _learning_curves_figure(curves: Mapping[str, Mapping[int, Sequence[float]]], *, metric: str = "accuracy",
                            spread: str = "minmax", baseline: str | None = "random", title: str | None = None):
    """The learning-curve Figure (drawn, not saved): each strategy its own colour+marker+dash, so a
    dozen strategies stay tellable apart, and the legend right of the axes, off the data."""
    items = sorted(curves.items())
    seeds = [max((len(v) for v in curve.values()), default=0) for _, curve in items]
    labels = [f"{name} ({n} seed{'s' * (n != 1)})" for (name, _), n in zip(items, seeds)]
    entries = len(curves) + (baseline in curves and bool(curves[baseline]))
    # Legend beside the axes: widen by its text, and grow taller when its entries outnumber the plot height.
    width = 6.4 + 0.4 + 0.062 * max(len(label) for label in labels + [""])
    fig, (ax,) = _figure(width, max(4.2, 1.0 + 0.19 * entries))
    for i, ((_, curve), label, n) in enumerate(zip(items, labels, seeds)):
        budgets = np.array(sorted(curve))
        values = [np.asarray(curve[b], dtype=float) for b in budgets]
        mean = np.array([v.mean() for v in values])
        if spread == "minmax":
            low, high = np.array([v.min() for v in values]), np.array([v.max() for v in values])
        else:
            std = np.array([v.std() for v in values])
            low, high = mean - std, mean + std
        (line,) = ax.plot(budgets, mean, markersize=5, linewidth=1.4, label=label, **_line_style(i))
        if n > 1:
            ax.fill_between(budgets, low, high, color=line.get_color(), alpha=0.12, linewidth=0)
    if baseline in curves and curves[baseline]:
        top = max(curves[baseline])
        ax.axhline(float(np.mean(curves[baseline][top])), color="black", linestyle=":", linewidth=1,
                   label=f"{baseline} at {top} labels")
    ax.set_xlabel("labels (annotation budget)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric.replace('_', ' ')} vs labels (mean; shaded: seed "
                          f"{'min-max' if spread == 'minmax' else '± std'})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return fig


def plot_critical_neurons(critical, path: str | os.PathLike, *, bins: int = 64, title: str | None = None) -> Path:
    """Plot where the task-critical neurons are: a bar chart of their count per layer, and a heat
    strip of counts per layer x neuron-index bin. ``critical``: a
    :class:`~neuroshot.signatures.CriticalNeurons` or a :class:`~neuroshot.probing.ProbeResult`."""
    critical = getattr(critical, "critical", critical)
    if not hasattr(critical, "per_layer_counts"):
        raise NeuroshotError("plot_critical_neurons needs CriticalNeurons or a ProbeResult")
    counts = critical.per_layer_counts()
    layers = np.arange(critical.n_layers)
    bins = max(1, min(bins, critical.d_ff))
    heat = np.zeros((bins, critical.n_layers))
    ids = np.asarray(critical.ids)
    np.add.at(heat, ((ids % critical.d_ff) * bins // critical.d_ff, ids // critical.d_ff), 1)
    fig, (top, bottom) = _figure(max(6.4, 0.22 * critical.n_layers), 5.6, rows=2, sharex=True,
                                 gridspec_kw={"height_ratios": [1, 1.3]})
    top.bar(layers, counts, color="tab:blue")
    top.set_ylabel("critical neurons")
    top.set_title(title or f"{len(critical)} task-critical neurons ({critical.fraction:g} of "
                           f"{critical.n_layers} x {critical.d_ff}) per layer", fontsize=10)
    top.grid(axis="y", alpha=0.3)
    image = bottom.imshow(heat, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                          extent=(-0.5, critical.n_layers - 0.5, 0, critical.d_ff))
    bottom.set_xlabel("layer")
    bottom.set_ylabel("neuron index")
    fig.colorbar(image, ax=bottom, label="count", pad=0.01)
    return _save(fig, path)


FOREST_KEYS = ("group", "label", "mean", "low", "high")
# Verdict of an interval against 0: colour, marker and legend text.
_VERDICTS = {"win": ("tab:green", "^", "win: interval above 0"),
             "loss": ("tab:red", "v", "loss: interval below 0"),
             "tie": ("0.45", "o", "tie: interval spans 0")}
# Label colours avoid green, red and grey, which tell the verdict.
_LABEL_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                  "#aec7e8", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")


def _forest_row(row, index: int) -> dict:
    """One forest row as a dict of its five fields, from a mapping or an object; checked so that a
    bad row fails with a message naming it, not deep inside matplotlib."""
    missing = object()
    values = {key: row.get(key, missing) if isinstance(row, Mapping) else getattr(row, key, missing)
              for key in FOREST_KEYS}
    for key, value in values.items():
        if value is missing:
            raise NeuroshotError(f"forest row {index} has no '{key}' (rows need {', '.join(FOREST_KEYS)})")
    try:
        mean, low, high = (float(values[k]) for k in ("mean", "low", "high"))
    except (TypeError, ValueError):
        raise NeuroshotError(f"forest row {index}: mean, low and high must be numbers") from None
    if not all(np.isfinite((mean, low, high))):
        raise NeuroshotError(f"forest row {index} ({values['group']}, {values['label']}): mean, low and high "
                             f"must be finite, got {mean}, {low}, {high}")
    if low > high:
        raise NeuroshotError(f"forest row {index} ({values['group']}, {values['label']}): low {low:g} > high {high:g}")
    return dict(group=str(values["group"]), label=str(values["label"]), mean=mean, low=low, high=high)


def plot_forest(rows: Iterable, path: str | os.PathLike, *, title: str | None = None,
                xlabel: str = "paired difference (mean and 95% interval)") -> Path:
    """Forest plot of paired differences; write a PNG to ``path`` and return it.

    ``rows``: mappings or objects with ``group`` (a block of rows, e.g. a data set; blocks in order of
    first appearance, so a "mean over cells" group given last is drawn last), ``label`` (e.g.
    "recommended − random+knn"; one colour per label across groups), ``mean``, ``low`` and ``high``
    (the difference and its 95% interval). Each row is an interval with a marker at the mean, shaped
    and coloured by its verdict against the line at 0: win (interval above 0, green), loss (below,
    red) or tie (grey); the numbers are printed right of the axes.
    """
    return _save(_forest_figure(rows, title=title, xlabel=xlabel), path)


def _forest_figure(rows: Iterable, *, title: str | None = None,
                   xlabel: str = "paired difference (mean and 95% interval)"):
    """The forest-plot Figure (drawn, not saved), rows checked first; its height grows with the rows
    and the legend sits below the axes, off the data."""
    checked = [_forest_row(row, i) for i, row in enumerate(rows)]
    if not checked:
        raise NeuroshotError("nothing to plot: no forest rows")
    groups = list(dict.fromkeys(r["group"] for r in checked))
    labels = list(dict.fromkeys(r["label"] for r in checked))
    colour = {label: _LABEL_COLOURS[i % len(_LABEL_COLOURS)] for i, label in enumerate(labels)}
    # One header line per group, then its rows, top to bottom: line y shows names[y].
    names, headers = [], []
    for group in groups:
        headers.append(len(names))
        names.append(group)
        for r in (r for r in checked if r["group"] == group):
            r["y"] = len(names)
            names.append(r["label"])
    y = len(names)
    longest = max(len(name) for name in names + labels)
    fig, (ax,) = _figure(6.0 + 0.065 * longest, 1.9 + 0.26 * y + 0.2 * ((len(labels) + 3 + 2) // 3))
    for r in checked:
        outcome = verdict(r["low"], r["high"])
        tint, marker, _ = _VERDICTS[outcome]
        ax.errorbar(r["mean"], r["y"], xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="none",
                    ecolor=colour[r["label"]], elinewidth=2.2, capsize=3.5, capthick=1.5)
        ax.plot(r["mean"], r["y"], marker=marker, markersize=7.5, color=tint, markeredgecolor="black",
                markeredgewidth=0.6, linestyle="none", zorder=3)
        ax.annotate(f"{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]", xy=(1.02, r["y"]),
                    xycoords=("axes fraction", "data"), va="center", fontsize=8, color=tint,
                    fontweight="bold" if outcome != "tie" else "normal", family="monospace")
    ax.axvline(0.0, color="black", linewidth=1)
    for y0 in headers[1:]:
        ax.axhline(y0 - 0.5, color="0.75", linewidth=0.8)
    ax.set_yticks(range(y), names, fontsize=8.5)
    for name_y, tick in enumerate(ax.get_yticklabels()):
        if name_y in headers:
            tick.set_fontweight("bold")
    ax.set_ylim(y - 0.4, -0.6)
    ax.tick_params(axis="y", length=0)
    ax.locator_params(axis="x", nbins=6)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    counts = {v: sum(verdict(r["low"], r["high"]) == v for r in checked) for v in _VERDICTS}
    ax.set_title(title or f"paired differences: {counts['win']} win, {counts['loss']} loss, {counts['tie']} tie "
                          f"(of {len(checked)})", fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[label], linewidth=2.2, label=label) for label in labels]
    handles += [Line2D([], [], color=tint, marker=marker, markeredgecolor="black", markeredgewidth=0.6,
                       linestyle="none", markersize=7.5, label=text) for tint, marker, text in _VERDICTS.values()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8, frameon=False)
    return fig
