"""PNG plots: learning curves (metric vs labels, one line per strategy, seed spread shaded) and the
per-layer map of task-critical neurons.

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

__all__ = ["plot_learning_curves", "plot_critical_neurons"]

SPREADS = ("minmax", "std")


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
    fig, (ax,) = _figure(6.4, 4.2)
    for name, curve in sorted(curves.items()):
        budgets = np.array(sorted(curve))
        values = [np.asarray(curve[b], dtype=float) for b in budgets]
        mean = np.array([v.mean() for v in values])
        if spread == "minmax":
            low, high = np.array([v.min() for v in values]), np.array([v.max() for v in values])
        else:
            std = np.array([v.std() for v in values])
            low, high = mean - std, mean + std
        seeds = max(len(v) for v in values)
        (line,) = ax.plot(budgets, mean, marker="o", label=f"{name} ({seeds} seed{'s' * (seeds != 1)})")
        if seeds > 1:
            ax.fill_between(budgets, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    if baseline in curves and curves[baseline]:
        top = max(curves[baseline])
        ax.axhline(float(np.mean(curves[baseline][top])), color="grey", linestyle=":", linewidth=1,
                   label=f"{baseline} at {top} labels")
    ax.set_xlabel("labels (annotation budget)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric.replace('_', ' ')} vs labels (mean; shaded: seed "
                          f"{'min-max' if spread == 'minmax' else '± std'})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


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
