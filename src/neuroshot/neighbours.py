"""Neighbour search and the small numeric helpers that strategies and retrievers share.

Strategies (what to annotate) and retrievers (which annotated items a prompt shows) are siblings
that never import each other; both build on this module.
"""

from __future__ import annotations

import numpy as np


def knn(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, cosines)``, each ``[N, k']``: every row's ``k' = min(k, N - 1)`` nearest other rows, nearest first.

    ``x`` must have unit rows. Computed in chunks of rows, so memory stays ``O(chunk * N)``.
    """
    n = len(x)
    k = min(int(k), n - 1)
    idx = np.zeros((n, max(k, 0)), dtype=np.int64)
    sim = np.zeros((n, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return idx, sim
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        s = x[rows] @ x.T
        s[np.arange(len(rows)), rows] = -np.inf  # never one's own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part_sim = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_sim, axis=1, kind="stable")
        idx[rows] = np.take_along_axis(part, order, axis=1)
        sim[rows] = np.take_along_axis(part_sim, order, axis=1)
    return idx, sim


def mmr_select(query_sim: np.ndarray, pair_sim: np.ndarray, k: int, lambda_: float,
               groups: np.ndarray | None = None, per_group: int | None = None) -> list[tuple[int, float]]:
    """Maximal marginal relevance: greedily ``argmax lambda * sim(q, d) - (1 - lambda) * max_chosen sim(d, s)``.

    With ``groups`` and ``per_group``, no group gets more than ``per_group`` picks (label balance).
    Returns (index, MMR score) in the order chosen.
    """
    n = len(query_sim)
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    taken: dict[int, int] = {}
    chosen: list[tuple[int, float]] = []
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(available, lambda_ * query_sim - (1 - lambda_) * penalty, -np.inf)
        if groups is not None and per_group is not None:
            full = [g for g, c in taken.items() if c >= per_group]
            score[np.isin(groups, full)] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        chosen.append((best, float(score[best])))
        available[best] = False
        redundancy = np.maximum(redundancy, pair_sim[best])
        if groups is not None:
            taken[int(groups[best])] = taken.get(int(groups[best]), 0) + 1
    return chosen


def minmax(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (all zeros when constant)."""
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 1e-12 else np.zeros_like(x)
