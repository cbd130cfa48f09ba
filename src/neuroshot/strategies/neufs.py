"""NeuFS (arXiv 2607.02423): Jaccard k-medoids over binary neuron signatures, one pick per cluster.

Faithful to the reference: ``budget`` clusters; inside each, items are scored
``tau * Q~ + (1 - tau) * (1 - D~)`` where Q is the consensus count (unique neurons in the
signature) and D the Jaccard distance to the medoid, both min-max normalised within the cluster.
Differences: clustering uses the maintained ``kmedoids`` package (FasterPAM, best of ``n_init``
seeded restarts) instead of the reference's own k-medoids, and the picks are ordered by cluster
size (largest first) for a stable static prompt order.
"""

from __future__ import annotations

import kmedoids
import numpy as np

from .._validation import check_in, check_whole
from ..neighbours import minmax
from ..probing import ProbeResult
from .base import Pick, Strategy, item_neurons, register


def jaccard_distances(probed: ProbeResult, rows: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard distances between the binary signatures of ``rows``."""
    binary = probed.signatures.subset(rows.tolist()).to_csr(binary=True).astype(np.float64)
    inter = (binary @ binary.T).toarray()
    sizes = np.asarray(binary.sum(axis=1)).ravel()
    union = sizes[:, None] + sizes[None, :] - inter
    return 1.0 - np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


@register
class NeuFSStrategy(Strategy):
    """Faithful NeuFS: ``budget`` Jaccard k-medoids clusters, per cluster argmax tau*Q~ + (1-tau)*(1-D~)."""

    name = "neufs"

    def __init__(self, tau: float = 0.5, n_init: int = 10, max_iter: int = 100) -> None:
        check_in("tau", tau, 0.0, 1.0)
        check_whole("n_init", n_init)
        check_whole("max_iter", max_iter)
        self.tau, self.n_init, self.max_iter = tau, n_init, max_iter

    def _select(self, probed, candidates, budget, labeled, rng):
        dist = jaccard_distances(probed, candidates)
        seeds = rng.integers(0, 2**31 - 1, size=self.n_init)
        runs = (kmedoids.fasterpam(dist, budget, max_iter=self.max_iter, init="random", random_state=int(seed), n_cpu=1)
                for seed in seeds)
        best = min(runs, key=lambda run: run.loss)  # the first of equally good restarts
        consensus = probed.scores.consensus[candidates]
        picks = []
        for cluster, medoid in enumerate(best.medoids):
            members = np.flatnonzero(best.labels == cluster)
            q = minmax(consensus[members])
            d = minmax(dist[members, medoid])
            score = self.tau * q + (1 - self.tau) * (1 - d)
            j = int(np.argmax(score))
            chosen = int(candidates[members[j]])
            shared = np.intersect1d(probed.signatures.item(chosen)[0], probed.signatures.item(int(candidates[medoid]))[0])
            picks.append(Pick(chosen, 0, float(score[j]), {
                "consensus": float(consensus[members[j]]), "dist_to_medoid": float(dist[members[j], medoid]),
                "cluster_size": float(len(members))}, cluster=cluster,
                neurons=item_neurons(probed, chosen, among=shared)))
        return sorted(picks, key=lambda p: -p.parts["cluster_size"])  # largest cluster first

