"""Model-light baselines: seeded random picks and highest zero-shot label entropy."""

from __future__ import annotations

import numpy as np

from .base import Pick, Strategy, item_neurons, register


@register
class RandomStrategy(Strategy):
    """Seeded uniform sample of the unlabeled pool."""

    name = "random"

    def _select(self, probed, candidates, budget, labeled, rng):
        chosen = rng.choice(candidates, size=budget, replace=False)
        return [Pick(int(i), 0, 0.0, neurons=item_neurons(probed, int(i))) for i in chosen]


@register
class EntropyStrategy(Strategy):
    """Items with the highest label entropy under the zero-shot prompt (classic uncertainty sampling)."""

    name = "entropy"

    def _select(self, probed, candidates, budget, labeled, rng):
        entropy = probed.scores.entropy[candidates]
        order = np.lexsort((rng.random(len(candidates)), -entropy))[:budget]  # random tie-break
        return [Pick(int(candidates[o]), 0, float(entropy[o]), {"entropy": float(entropy[o])},
                     neurons=item_neurons(probed, int(candidates[o]))) for o in order]
