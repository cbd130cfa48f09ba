"""``neuron_coverage``: the neuron-aware default. Greedy facility location in task-critical-neuron space.

Each item is its signature restricted to the task-critical neurons, centred on the pool's mean
and scaled to unit length, so neurons every item uses alike do not make all items look the same.
The plan greedily maximises the share of the pool that has a neuron-similar annotated item,

    F(S) = 1/N * sum_x max_{s in S and the already annotated} max(0, cos(x, s))

over each item's ``n_neighbors`` nearest items (a monotone submodular objective): each pick
represents the neuron-activity patterns the earlier picks left uncovered, so near-duplicates
gain little and are not chosen twice. That is what per-query retrieval needs (every query has a
close annotated item) and what a static prompt needs (the demonstrations span the pool).

An earlier version covered single critical neurons (weighted by their total attribution) and
added influence and uncertainty bonuses; on validation slices of trec and banking77 (15 intents)
it trailed random, because the heaviest critical neurons fire for most items (so one pick covers
almost all weight) and the uncertainty bonus then chose ambiguous items. The bonuses remain as
options, off by default. ``balance=True`` divides a candidate's gain by 1 + the number of
chosen/annotated items of its (predicted or annotated) label.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

import numpy as np
from scipy import sparse

from ..embeddings import normalize_rows, pool_embeddings
from .._validation import check_choice, check_in, check_whole
from ..neighbours import (METHODS, MIXING_WEIGHTS, knn, label_agreement_weight, minmax, neuron_shift_scale,
                          neuron_triples, standardized_unit_rows)
from .base import Pick, Strategy, register


@register
class NeuronCoverageStrategy(Strategy):
    """Greedy facility location over centred critical-neuron signatures (cosine, ``n_neighbors`` graph)."""

    name = "neuron_coverage"

    def __init__(self, n_neighbors: int = 100, influence_weight: float = 0.0, uncertainty_weight: float = 0.0,
                 balance: bool = False, embedding_weight: float = 0.0, neighbours: str = "auto") -> None:
        check_in("influence_weight", influence_weight, 0.0)
        check_in("uncertainty_weight", uncertainty_weight, 0.0)
        check_in("embedding_weight", embedding_weight, 0.0, 1.0)
        check_whole("n_neighbors", n_neighbors)
        check_choice("neighbours", neighbours, METHODS)
        self.n_neighbors, self.balance = n_neighbors, balance
        self.influence_weight, self.uncertainty_weight = influence_weight, uncertainty_weight
        self.embedding_weight, self.neighbours = embedding_weight, neighbours

    def _select(self, probed, candidates, budget, labeled, rng):
        n = len(probed)
        restricted = probed.critical.restrict(probed.signatures)
        mean = np.asarray(restricted.mean(axis=0), dtype=np.float32).ravel()
        space = _space(probed, _centred_signatures(probed, restricted, mean), self.embedding_weight)
        neighbours = _unit_neighbours(space, self.n_neighbors, self.neighbours)
        del space  # at 10^6 items: ~2 GB that the graph need not share memory with
        graph = _graph(*neighbours)  # graph[c, x]: how well c represents x
        del neighbours
        best = np.zeros(n)  # per item: its best similarity to a chosen/annotated item
        for i in labeled:
            _cover(graph, int(i), best)
        bonus = self.influence_weight * minmax(probed.scores.influence) + self.uncertainty_weight * minmax(probed.scores.entropy)
        classes = probed.predicted.copy()
        if isinstance(labeled, Mapping):
            for i, label in labeled.items():
                classes[i] = probed.task.label_index(label)
        counts = np.bincount(classes[np.asarray(list(labeled), dtype=np.int64)], minlength=len(probed.task.labels))
        tiebreak = rng.random(n) * 1e-9

        def value(c: int, gain: float) -> float:
            total = gain + bonus[c]
            return (total / (1.0 + counts[classes[c]]) if self.balance else total) + tiebreak[c]

        # Lazy greedy (Minoux): a candidate's gain only shrinks as picks are made (and its label's count
        # only grows), so a value computed earlier bounds the current one; only the best bound is
        # re-evaluated. The picks are those of recomputing every gain at every step.
        gains = _gains(graph, best) / n
        heap = [(-value(c, gains[c]), c) for c in candidates.tolist()]
        heapq.heapify(heap)
        fresh = np.full(n, -1)  # the step at which each candidate's bound was last computed
        fresh[candidates] = 0
        picks = []
        while heap and len(picks) < budget:
            bound, c = heapq.heappop(heap)
            if fresh[c] < len(picks):
                gains[c] = _gain(graph, c, best) / n
                fresh[c] = len(picks)
                heapq.heappush(heap, (-value(c, gains[c]), c))
                continue
            represented = _cover(graph, c, best)
            picks.append(Pick(c, 0, -bound, {
                "coverage_gain": float(gains[c]), "represents": float(represented),
                "influence": float(probed.scores.influence[c]), "entropy": float(probed.scores.entropy[c])},
                neurons=_distinctive_neurons(probed, restricted, mean, c)))
            counts[classes[c]] += 1
        return picks


def _centred_signatures(probed, restricted: sparse.csr_matrix | None = None, mean: np.ndarray | None = None) -> np.ndarray:
    """``[N, n_critical]`` critical-neuron values minus the pool's mean."""
    restricted = probed.critical.restrict(probed.signatures) if restricted is None else restricted
    x = restricted.toarray().astype(np.float32)
    x -= np.asarray(restricted.mean(axis=0), dtype=np.float32).ravel() if mean is None else mean
    return x


def _space(probed, centred: np.ndarray, embedding_weight: float) -> np.ndarray:
    """The vectors coverage is measured on: unit centred neuron signatures, or with ``embedding_weight``
    > 0 those concatenated with unit centred sentence embeddings, scaled so that the cosine of two
    items is ``w * cos(embeddings) + (1 - w) * cos(neurons)``."""
    if embedding_weight <= 0.0:
        return centred
    emb = np.asarray(pool_embeddings(probed), dtype=np.float32)
    emb = emb - emb.mean(axis=0)
    parts = [np.sqrt(embedding_weight) * normalize_rows(emb), np.sqrt(1.0 - embedding_weight) * normalize_rows(centred)]
    return np.concatenate(parts, axis=1)


def _distinctive_neurons(probed, restricted: sparse.csr_matrix, mean: np.ndarray,
                         i: int) -> list[tuple[int, int, float]]:
    """The 5 critical neurons where item ``i`` departs most from the pool's mean: (layer, neuron, its value)."""
    values = restricted[i].toarray().ravel()
    top = np.argsort(-np.abs(values - mean))[:5]
    return neuron_triples(probed.critical.ids[top], values[top], probed.critical.d_ff)


def _similarity_graph(space: np.ndarray, n_neighbors: int, method: str = "auto") -> sparse.csr_matrix:
    """``[N, N]``: row ``c`` holds ``max(0, cos)`` to the items that have ``c`` among their nearest (and 1 to itself)."""
    return _graph(*_unit_neighbours(space, n_neighbors, method))


def _unit_neighbours(space: np.ndarray, n_neighbors: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest rows and cosines; scales the rows of ``space`` to unit length in place (no
    copy of an ``[N, d]`` matrix at scale)."""
    space /= np.maximum(np.linalg.norm(space, axis=1, keepdims=True), 1e-12)
    return knn(space, n_neighbors, method=method)


def _graph(idx: np.ndarray, sim: np.ndarray) -> sparse.csr_matrix:
    """The coverage graph of a kNN list: ``[c, x] = max(0, cos)`` where ``c`` is among ``x``'s nearest,
    and 1 on the diagonal. Built straight from the list as a CSR matrix (no COO copy, 32-bit indices)."""
    n, k = idx.shape
    rows = sparse.csr_matrix((np.clip(sim.ravel(), 0.0, 1.0), idx.ravel().astype(np.int32),
                              np.arange(0, n * k + 1, k, dtype=np.int64)), shape=(n, n))
    return (rows.T + sparse.identity(n, dtype=rows.dtype, format="csr")).tocsr()


def _gains(graph: sparse.csr_matrix, best: np.ndarray) -> np.ndarray:
    """Per candidate, ``sum_x max(0, graph[c, x] - best[x])``."""
    improvement = np.maximum(graph.data - best[graph.indices], 0.0)
    return sparse.csr_matrix((improvement, graph.indices, graph.indptr), shape=graph.shape).sum(axis=1).A1


def _gain(graph: sparse.csr_matrix, c: int, best: np.ndarray) -> float:
    """``_gains`` of one candidate."""
    lo, hi = graph.indptr[c], graph.indptr[c + 1]
    return float(np.maximum(graph.data[lo:hi] - best[graph.indices[lo:hi]], 0.0).sum())


def _cover(graph: sparse.csr_matrix, c: int, best: np.ndarray) -> int:
    """Record ``c`` as chosen; returns how many items now have ``c`` as their closest chosen item."""
    lo, hi = graph.indptr[c], graph.indptr[c + 1]
    cols, values = graph.indices[lo:hi], graph.data[lo:hi]
    better = values > best[cols]
    best[cols[better]] = values[better]
    return int(better.sum())


@register
class AdaptiveCoverageStrategy(NeuronCoverageStrategy):
    """``neuron_coverage`` in the space the labels so far favour: facility location over neurons and
    MiniLM mixed with the weight the ``hybrid`` retriever would choose on the annotated items.

    Before ``min_labels`` items are annotated the weight is ``embedding_weight`` (0.5, both spaces
    alike). From then on (in an active loop without re-probing: ``active:adaptive_coverage`` with
    ``reprobe=False``, the recommended pipeline) each round plans where per-query retrieval will
    look: the weight whose nearest annotated neighbours (leave-one-out) most often share an item's
    label, on the same similarities the retriever fits (:func:`~neuroshot.neighbours.label_agreement_weight`).
    Only labels already paid for are read.
    The weight a plan used is in ``embedding_weight_``.
    """

    name = "adaptive_coverage"

    def __init__(self, n_neighbors: int = 100, embedding_weight: float = 0.5, neighbours: str = "auto",
                 balance: bool = False, min_labels: int = 8) -> None:
        super().__init__(n_neighbors=n_neighbors, balance=balance, embedding_weight=embedding_weight,
                         neighbours=neighbours)
        self.min_labels = check_whole("min_labels", min_labels)

    def _select(self, probed, candidates, budget, labeled, rng):
        self.embedding_weight_ = self._weight(probed, labeled)
        fixed = NeuronCoverageStrategy(n_neighbors=self.n_neighbors, balance=self.balance,
                                       embedding_weight=self.embedding_weight_, neighbours=self.neighbours)
        picks = fixed._select(probed, candidates, budget, labeled, rng)
        for pick in picks:
            pick.parts["embedding_weight"] = self.embedding_weight_
        return picks

    def _weight(self, probed, labeled) -> float:
        """The hybrid retriever's leave-one-out weight on the annotated items, or ``embedding_weight``."""
        if not isinstance(labeled, Mapping) or len(labeled) < max(self.min_labels, 2):
            return float(self.embedding_weight)
        rows = sorted(labeled)
        annotated = probed.subset(rows)
        values = annotated.critical.restrict(annotated.signatures).toarray()
        neurons = standardized_unit_rows(values, *neuron_shift_scale(values))
        embeddings = pool_embeddings(annotated)
        return float(label_agreement_weight(embeddings @ embeddings.T, neurons @ neurons.T,
                                            [labeled[i] for i in rows], 4, MIXING_WEIGHTS))

    def get_params(self):
        return {"n_neighbors": self.n_neighbors, "embedding_weight": self.embedding_weight,
                "neighbours": self.neighbours, "balance": self.balance, "min_labels": self.min_labels}
