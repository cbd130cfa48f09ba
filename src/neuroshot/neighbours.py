"""Neighbour search and the small numeric helpers that strategies and retrievers share.

Strategies (what to annotate) and retrievers (which annotated items a prompt shows) are siblings
that never import each other; both build on this module.
"""

from __future__ import annotations

import logging

import numpy as np

from ._validation import check_choice
from .errors import NeuroshotError


EXACT_LIMIT = 20_000  # up to this many rows, ``method="auto"`` compares every pair
METHODS = ("auto", "exact", "hnsw", "ivf")
log = logging.getLogger(__name__)


def knn(x: np.ndarray, k: int, chunk: int | None = None, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(indices, cosines)``, each ``[N, k']``: every row's ``k' = min(k, N - 1)`` nearest other rows, nearest first.

    ``x`` must have unit rows. ``method="exact"`` compares every pair in chunks of rows (memory
    ``O(chunk * N)``, time ``O(N^2)``); ``"hnsw"`` searches a FAISS HNSW graph and ``"ivf"`` a FAISS
    inverted-file index (both approximate; ``pip install "neuroshot[scale]"``); ``"auto"`` is exact
    up to :data:`EXACT_LIMIT` rows and IVF above it when FAISS is installed (IVF overtakes exact
    between 2 x 10^4 and 5 x 10^4 rows: benchmarks/README.md, "Planning at scale").
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
    return _knn_exact(x, k, chunk or _rows_per_chunk(n))


def _knn_exact(x: np.ndarray, k: int, chunk: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact neighbours of ``rows`` (default: every row), ``chunk`` rows at a time."""
    rows = np.arange(len(x)) if rows is None else rows
    idx = np.zeros((len(rows), k), dtype=np.int64)
    sim = np.zeros((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        idx[part], sim[part] = _knn_exact_rows(x, rows[part], k)
    return idx, sim


def _rows_per_chunk(n: int) -> int:
    """Rows whose similarities to all ``n`` rows fit in about 64 MiB."""
    return max(1, min(4096, (64 << 20) // (4 * n)))


def _knn_exact_rows(x: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest other rows of ``x[rows]``, nearest first."""
    s = x[rows] @ x.T
    s[np.arange(len(rows)), rows] = -np.inf  # never one's own neighbour
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    part_sim = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-part_sim, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_sim, order, axis=1)


def _faiss(required: bool = False):
    try:
        import faiss
    except ImportError:
        if required:
            raise NeuroshotError('approximate neighbours need FAISS: pip install "neuroshot[scale]"') from None
        return None
    return faiss


def _knn_hnsw(x: np.ndarray, k: int, m: int = 32, ef_construction: int = 200,
              chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Approximate neighbours from a FAISS HNSW index on inner products (cosines of unit rows).

    The index is built on one thread, so the same rows always give the same graph (FAISS's parallel
    insertion order is not fixed); the searches, which are deterministic, use every thread. The
    greedy coverage plan amplifies missed neighbours: on 10^4 synthetic signatures (k = 100) a
    recall of 0.972 (``efConstruction`` 64, ``efSearch`` 2k) kept 70% of the exact plan's picks and
    0.9995 kept 85%; ``efConstruction`` 200 with ``efSearch`` 4k reached 0.9997 and 99%, at about
    2.4x the build time (``benchmarks/scale.py``).
    """
    faiss = _faiss(required=True)
    n, d = x.shape
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(4 * (k + 1), 64)
    return _search_all(index, x, k, chunk)


def _knn_ivf(x: np.ndarray, k: int, nprobe: int = 8, chunk: int = 65_536, seed: int = 0,
             target_recall: float = 0.998) -> tuple[np.ndarray, np.ndarray]:
    """Approximate neighbours from a FAISS IVF-Flat index on inner products (cosines of unit rows).

    ``sqrt(nprobe * N)`` lists (which balances finding the lists against scanning them), from 10
    k-means iterations on a seeded sample of 39 rows per list; each row then scans its nearest
    lists: ``nprobe`` of them, doubled until the recall measured on a seeded sample of rows reaches
    ``target_recall`` (:func:`_tuned_nprobe`). Every step is deterministic on any number of
    threads, so unlike the HNSW graph the whole build runs in parallel.
    """
    faiss = _faiss(required=True)
    n, d = x.shape
    nlist = max(1, min(int(np.sqrt(nprobe * n)), n // 39))  # FAISS wants >= 39 training rows per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, 10
    sample = np.random.default_rng(seed).choice(n, size=min(n, 39 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = _tuned_nprobe(index, x, k, min(nprobe, nlist), nlist, target_recall, seed)
    return _search_all(index, x, k, chunk)


def _tuned_nprobe(index, x: np.ndarray, k: int, nprobe: int, nlist: int, target_recall: float, seed: int,
                  rows: int = 256) -> int:
    """The smallest of ``nprobe, 2 nprobe, ...`` (at most ``nlist``: every list, an exact search) whose
    recall of the ``k`` nearest on a seeded sample of ``rows`` rows reaches ``target_recall``.

    How many lists a row must scan depends on the data: on synthetic signatures with clear groups 8
    suffice (recall 0.997 at 2 x 10^5 rows), on the hybrid space of 3,000 real trec questions 8 of
    76 lists found 0.88 of the neighbours and the plan kept half of the exact plan's picks; 32 found
    0.9986 and the same picks. On 3,000 sst2 reviews a recall of 0.9974 still changed 12% of the
    picks (budget 50), hence the default target of 0.998 (``benchmarks/scale.py --agreement``).
    """
    n = len(x)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, rows), replace=False))
    truth = _knn_exact(x, k, _rows_per_chunk(n), sample)[0]
    while True:
        index.nprobe = nprobe
        found, _ = _search_all(index, x[sample], k, len(sample), own=sample)
        recall = np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, truth)]) / k
        if recall >= target_recall or nprobe >= nlist:
            log.info("IVF neighbours: %d of %d lists scanned per row (recall %.4f on %d sampled rows)",
                     nprobe, nlist, recall, len(sample))
            return nprobe
        nprobe = min(2 * nprobe, nlist)


def _search_all(index, x: np.ndarray, k: int, chunk: int,
                own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest other rows in ``index``, nearest first; ``own[i]`` is row ``i``'s
    position in the index (``i`` itself when ``x`` is all the index holds)."""
    n = len(x)
    own = np.arange(n) if own is None else np.asarray(own)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s, i = index.search(x[start:stop], k + 1)
        s = np.where((i == own[start:stop, None]) | (i < 0), -np.inf, s)  # drop oneself (and empty slots)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        idx[start:stop] = np.take_along_axis(i, order, axis=1)
        sim[start:stop] = np.take_along_axis(s, order, axis=1)
    bad = ~np.isfinite(sim)  # fewer than k found: point at oneself with similarity 0
    idx[bad] = own[np.nonzero(bad)[0]]
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
    chosen: list[tuple[int, float]] = []
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(available, lambda_ * query_sim - (1 - lambda_) * penalty, -np.inf)
        if groups is not None and per_group is not None:
            kinds, counts = np.unique(groups[[i for i, _ in chosen]], return_counts=True)
            score[np.isin(groups, kinds[counts >= per_group])] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        chosen.append((best, float(score[best])))
        available[best] = False
        redundancy = np.maximum(redundancy, pair_sim[best])
    return chosen


MIXING_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # MiniLM weights the leave-one-out rule chooses among
STANDARDIZE_FROM = 8  # annotated items from which neuron values are z-scored with their own statistics


def neuron_shift_scale(values: np.ndarray, standardize: bool = True):
    """``(shift, scale)`` for :func:`standardized_unit_rows`: the rows' own mean and spread from
    ``STANDARDIZE_FROM`` rows on (so neurons that fire alike for every item weigh little), else none."""
    if standardize and len(values) >= STANDARDIZE_FROM:
        return values.mean(0), values.std(0) + 1e-6
    return 0.0, 1.0


def label_agreement_weight(embedding_pair: np.ndarray, neuron_pair: np.ndarray, labels, neighbours: int,
                           weights: tuple[float, ...]) -> float:
    """The weight ``w`` among ``weights`` under which ``w * embedding_pair + (1 - w) * neuron_pair`` puts
    the most same-label items among each labelled item's ``neighbours`` nearest others (leave-one-out);
    ties to the weight nearest 0.5. Reads only the labels given (those already paid for)."""
    agreement = [float(leave_one_out_agreement(w * embedding_pair + (1 - w) * neuron_pair, labels, neighbours).mean())
                 for w in weights]
    best = max(agreement)
    tied = [w for w, a in zip(weights, agreement) if a >= best - 1e-12]
    return min(tied, key=lambda w: abs(w - 0.5))


def leave_one_out_agreement(pair: np.ndarray, labels, neighbours: int) -> np.ndarray:
    """Per labelled item, the share of its ``neighbours`` most similar other items (``pair``: the items'
    similarities) that carry its label."""
    labels = np.asarray(labels)
    sim = np.array(pair, dtype=np.float64)
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :min(neighbours, len(labels) - 1)]
    return (labels[nearest] == labels[:, None]).mean(1)


def label_has_another(labels) -> np.ndarray:
    """Mask of the items whose label some other item also has (only those can be matched by a neighbour)."""
    labels = np.asarray(labels)
    kinds, counts = np.unique(labels, return_counts=True)
    return np.isin(labels, kinds[counts >= 2])


def standardized_unit_rows(values: np.ndarray, shift, scale) -> np.ndarray:
    """Unit rows of ``(values - shift) / scale`` (the neuron retriever's vectors)."""
    x = (values - shift) / scale
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neuron_triples(flat_ids: np.ndarray, values: np.ndarray, d_ff: int) -> list[tuple[int, int, float]]:
    """``(layer, neuron, value)`` per flat neuron id ``layer * d_ff + neuron``."""
    return [(int(i // d_ff), int(i % d_ff), float(v)) for i, v in zip(flat_ids, values)]


def minmax(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (all zeros when constant)."""
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 1e-12 else np.zeros_like(x)
