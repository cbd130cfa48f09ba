"""Paired comparisons of two pipelines on the same test items and seeds, with bootstrap intervals.

A difference between two ways of choosing demonstrations is only a claim with its interval:
with 300 test items one item is a third of a point, and seeds move small models by several
points. Both pipelines are scored on the same items with the same seeds, so the comparison is
paired: per (seed, item), ``correct_a - correct_b``. The 95% interval resamples seeds and items
with replacement (two-way bootstrap: one draw of seeds and one of items per replicate, every
pair of a drawn seed and a drawn item counted), which accounts for both sources of noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import NeuroshotError

__all__ = ["PairedDifference", "Comparison", "paired_difference", "mean_difference", "compare_records", "mean_std"]

N_BOOT = 2000


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over seeds and items, and its bootstrap interval ``[low, high]``.

    ``verdict`` is ``"win"`` when the interval lies above 0, ``"loss"`` below 0, else ``"tie"``.
    ``replicates`` holds the bootstrap means (for averaging cells with :func:`mean_difference`).
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    n_items: int
    confidence: float = 0.95
    replicates: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.verdict})"

    def __neg__(self) -> PairedDifference:
        """``b - a`` from ``a - b``."""
        return PairedDifference(-self.mean, -self.high, -self.low, self.n_seeds, self.n_items, self.confidence,
                                -self.replicates)


def verdict(low: float, high: float) -> str:
    """``"win"`` when the interval ``[low, high]`` lies entirely above 0, ``"loss"`` entirely below, else ``"tie"``."""
    return "win" if low > 0 else "loss" if high < 0 else "tie"


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"mean ± std"`` over seeds (population std), the mean alone for one value, ``"-"`` for none:
    the one way every table in the CLI, demo, recipes and benchmarks prints a spread."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return "-"
    return f"{a.mean():.{digits}f}" + (f" ± {a.std():.{digits}f}" if a.size > 1 else "")


def paired_difference(a: np.ndarray | Sequence, b: np.ndarray | Sequence, *, n_boot: int = N_BOOT,
                      confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Paired ``a - b`` with a two-way (seeds x items) percentile bootstrap interval.

    ``a`` and ``b``: per-item scores (1/0 correct), shape ``[seeds, items]`` or ``[items]`` (one
    seed), the same items in the same order for both.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape != b.shape:
        raise NeuroshotError(f"paired scores must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    diff = a - b
    if not 0.0 < confidence < 1.0:
        raise NeuroshotError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise NeuroshotError(f"n_boot must be at least 1, got {n_boot}")
    # per replicate, multinomial counts over seeds and over items: mean = w_s' D w_i / (S I)
    rng = np.random.default_rng(seed)
    n_seeds, n_items = diff.shape
    seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(np.float64)
    item_w = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(np.float64)
    reps = np.einsum("bs,si,bi->b", seed_w, diff, item_w) / (n_seeds * n_items)
    return _summary(float(diff.mean()), reps, diff.shape, confidence)


def mean_difference(cells: Sequence[PairedDifference], *, confidence: float = 0.95) -> PairedDifference:
    """The average of several cells' differences (e.g. every set and budget), with an interval from
    averaging their bootstrap replicates (cells resampled independently, with equal weight)."""
    if not cells:
        raise NeuroshotError("nothing to average: no cells")
    sizes = {len(c.replicates) for c in cells}
    if len(sizes) != 1 or 0 in sizes:
        raise NeuroshotError("cells need bootstrap replicates of one length (from paired_difference)")
    reps = np.mean([c.replicates for c in cells], axis=0)
    mean = float(np.mean([c.mean for c in cells]))
    return _summary(mean, reps, (sum(c.n_seeds for c in cells), sum(c.n_items for c in cells)), confidence)


def _as_matrix(x, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise NeuroshotError(f"{name}: expected scores of shape [seeds, items], got {list(np.shape(x))}")
    if not np.isfinite(m).all():
        raise NeuroshotError(f"{name}: scores contain NaN or infinite values")
    return m


def _summary(mean: float, reps: np.ndarray, shape: tuple[int, int], confidence: float) -> PairedDifference:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(reps, [tail, 1.0 - tail])
    return PairedDifference(mean, float(low), float(high), int(shape[0]), int(shape[1]), confidence, reps)


@dataclass(frozen=True)
class Comparison:
    """``reference`` minus ``other`` at one budget (or over all budgets: ``budget=None``)."""

    reference: str
    other: str
    budget: int | None
    difference: PairedDifference


def compare_records(records: Sequence, gold: Sequence[str], reference: str, *, calibrated: bool = False,
                    n_boot: int = N_BOOT, seed: int = 0) -> list[Comparison]:
    """Paired differences of ``reference`` minus every other pipeline in ``records``
    (:class:`~neuroshot.experiment.ExperimentRecord`, one test set), per budget over the seeds both
    ran, and averaged over the budgets both ran. ``gold``: the test labels, in test order."""
    by_cell: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for r in records:
        name = r.pipeline or r.strategy
        by_cell.setdefault((name, r.budget), {})[r.seed] = r.correct(gold, calibrated)
    names = list(dict.fromkeys(name for name, _ in by_cell))
    if reference not in names:
        raise NeuroshotError(f"no results for the reference '{reference}' (have: {', '.join(names)})")
    out = []
    for other in (n for n in names if n != reference):
        cells = []
        for budget in sorted({b for n, b in by_cell if n == reference}):
            mine, theirs = by_cell[(reference, budget)], by_cell.get((other, budget), {})
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                continue
            diff = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds], n_boot=n_boot, seed=seed)
            cells.append(diff)
            out.append(Comparison(reference, other, budget, diff))
        if len(cells) > 1:
            out.append(Comparison(reference, other, None, mean_difference(cells)))
    return out
