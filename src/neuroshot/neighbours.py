"""Neighbour search and the small numeric helpers that strategies and retrievers share.

Strategies (what to annotate) and retrievers (which annotated items a prompt shows) are siblings
that never import each other; both build on this module.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_choice
from .errors import NeuroshotError


EXACT_LIMIT = 20_000  # up to this many rows, ``method="auto"`` compares every pair
METHODS = ("auto", "exact", "hnsw", "ivf")


def knn(x: np.ndarray, k: int, chunk: int | None = None, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(indices, cosines)``, each ``[N, k']``: every row's ``k' = min(k, N - 1)`` nearest other rows, nearest first.

    ``x`` must have unit rows. ``method="exact"`` compares every pair in chunks of rows (memory
    ``O(chunk * N)``, time ``O(N^2)``); ``"hnsw"`` searches a FAISS HNSW graph and ``"ivf"`` a FAISS
    inverted-file index (both approximate; ``pip install "neuroshot[scale]"``); ``"auto"`` is exact
    up to :data:`EXACT_LIMIT` rows and IVF above it when FAISS is installed (at 10^6 rows on 2 cores
    IVF planned in a third of HNSW's time and less memory: ``benchmarks/scale.py``).
    """
    check_choice("method", method, METHODS)
    n = len(x)
    k = min(int(k), n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if method == "auto":
        method = "ivf" if n > EXACT_LIMIT and _faiss() is not None else "exact"
    if method == "hnsw":
        return _knn_hnsw(np.ascontiguousarray(x, dtype=np.float32), k)
    if method == "ivf":
        return _knn_ivf(np.ascontiguousarray(x, dtype=np.float32), k)
    return _knn_exact(x, k, chunk or max(1, min(4096, (64 << 20) // (4 * n))))


def _knn_exact(x: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
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


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _knn_hnsw(x: np.ndarray, k: int, m: int = 32, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Approximate neighbours from a FAISS HNSW index on inner products (cosines of unit rows).

    The index is built on one thread, so the same rows always give the same graph (FAISS's parallel
    insertion order is not fixed); the searches, which are deterministic, use every thread.
    """
    faiss = _faiss()
    if faiss is None:
        raise NeuroshotError('approximate neighbours need FAISS: pip install "neuroshot[scale]"')
    n, d = x.shape
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(2 * (k + 1), 64)
    return _search_all(index, x, k, chunk)


def _knn_ivf(x: np.ndarray, k: int, nprobe: int = 8, chunk: int = 65_536, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate neighbours from a FAISS IVF-Flat index on inner products (cosines of unit rows).

    ``sqrt(nprobe * N)`` lists (which balances finding the lists against scanning them), from 10
    k-means iterations on a seeded sample of 39 rows per list; each row then scans its ``nprobe``
    nearest lists. Every step is deterministic on any number of threads, so unlike the HNSW graph
    the whole build runs in parallel.
    """
    faiss = _faiss()
    if faiss is None:
        raise NeuroshotError('approximate neighbours need FAISS: pip install "neuroshot[scale]"')
    n, d = x.shape
    nlist = max(1, min(int(np.sqrt(nprobe * n)), n // 39))  # FAISS wants >= 39 training rows per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, 10
    sample = np.random.default_rng(seed).choice(n, size=min(n, 39 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = min(nprobe, nlist)
    return _search_all(index, x, k, chunk)


def _search_all(index, x: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest other rows in ``index`` (which holds ``x``), nearest first."""
    n = len(x)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s, i = index.search(x[start:stop], k + 1)
        rows = np.arange(start, stop)[:, None]
        s = np.where((i == rows) | (i < 0), -np.inf, s)  # drop oneself (and empty slots)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        idx[start:stop] = np.take_along_axis(i, order, axis=1)
        sim[start:stop] = np.take_along_axis(s, order, axis=1)
    bad = ~np.isfinite(sim)  # fewer than k found: point at oneself with similarity 0
    idx[bad] = np.nonzero(bad)[0]
    sim[bad] = 0.0
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
