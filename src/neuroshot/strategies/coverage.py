"""``neuron_coverage``: the neuron-aware default. Greedy, submodular coverage of task-critical neurons.

Each item covers each critical neuron ``n`` to a degree ``c[x, n]`` in [0, 1] (its |attribution|
on ``n`` over the pool's largest). The plan greedily maximises

    F(S) = sum_n w_n * (1 - prod_{x in S} (1 - c[x, n]))  +  sum_{x in S} (a * influence~(x) + b * uncertainty~(x))

(a weighted coverage, monotone submodular, plus a modular bonus), so each pick adds the neurons
the earlier picks (and the already annotated items) left uncovered: near-duplicates gain little
and are not chosen twice. ``balance=True`` additionally divides a candidate's gain by
1 + the number of chosen/annotated items of its (predicted or annotated) label.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .base import Pick, Strategy, minmax, register


@register
class NeuronCoverageStrategy(Strategy):
    """Greedy weighted coverage of task-critical neurons, plus influence and uncertainty bonuses."""

    name = "neuron_coverage"

    def __init__(self, influence_weight: float = 0.3, uncertainty_weight: float = 0.3, balance: bool = False) -> None:
        if influence_weight < 0 or uncertainty_weight < 0:
            raise ValueError("weights must be >= 0")
        self.influence_weight, self.uncertainty_weight, self.balance = influence_weight, uncertainty_weight, balance

    def _select(self, pool, candidates, budget, labeled, rng):
        crit = pool.critical
        signed = crit.restrict(pool.signatures)
        degree = abs(signed).tocsc()
        col_max = degree.max(axis=0).toarray().ravel()
        degree = (degree @ _diag(1.0 / np.maximum(col_max, 1e-12))).tocsr()  # c[x, n] in [0, 1]
        residual = np.ones(len(crit))  # prod over chosen of (1 - c[x, n])
        for i in labeled:
            residual *= 1.0 - degree[i].toarray().ravel()
        bonus = self.influence_weight * minmax(pool.scores.influence) + self.uncertainty_weight * minmax(pool.scores.entropy)
        classes = pool.predicted.copy()
        if isinstance(labeled, Mapping):
            for i, label in labeled.items():
                classes[i] = pool.task.label_index(label)
        counts = np.bincount(classes[np.asarray(list(labeled), dtype=np.int64)], minlength=len(pool.task.labels))
        scale = max(float((degree[candidates] @ crit.weights).max()), 1e-12)  # best first-step coverage gain
        available = np.ones(len(pool), dtype=bool)
        available[np.setdiff1d(np.arange(len(pool)), candidates)] = False
        tiebreak = rng.random(len(pool)) * 1e-9
        picks = []
        for _ in range(budget):
            gain = degree @ (crit.weights * residual) / scale
            total = gain + bonus
            if self.balance:
                total = total / (1.0 + counts[classes])
            total = np.where(available, total + tiebreak, -np.inf)
            x = int(np.argmax(total))
            row = degree[x].toarray().ravel()
            newly = crit.weights * row * residual
            top = np.argsort(-newly)[:5]
            d_ff = pool.signatures.d_ff
            values = signed[x, top].toarray().ravel()
            picks.append(Pick(x, 0, float(total[x]), {
                "coverage_gain": float(gain[x]), "influence": float(pool.scores.influence[x]),
                "entropy": float(pool.scores.entropy[x])},
                neurons=[(int(crit.ids[t] // d_ff), int(crit.ids[t] % d_ff), float(v)) for t, v in zip(top, values) if newly[t] > 0]))
            residual *= 1.0 - row
            available[x] = False
            counts[classes[x]] += 1
        return picks


def _diag(values: np.ndarray):
    from scipy import sparse

    return sparse.diags(values)
