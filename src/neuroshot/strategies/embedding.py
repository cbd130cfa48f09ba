"""Embedding baselines: k-means, TypiClust, fast vote-k, vote-k and IDEAL.

All read sentence embeddings, ``probed.embeddings`` when set, otherwise ``embed(probed.texts)``
(all-MiniLM-L6-v2, L2-normalised; see :mod:`neuroshot.embeddings`). Already annotated items
(``labeled``) are never picked again; each strategy builds on them as noted. Defaults follow
the papers; where this implementation differs, it says so here.

``kmeans``
    K-means (scikit-learn ``KMeans``, ``n_init=10``, seeded) into ``budget`` clusters over the
    unlabeled items; per cluster the item closest to the centroid; largest clusters first.
``typiclust`` (Hacohen et al. 2022, "Active learning on a budget")
    K-means over the whole pool into ``len(labeled) + budget`` clusters (at most 500); clusters
    of at most 5 items are dropped (all kept if that would drop every cluster); clusters are
    visited by fewest annotated items, then largest, cycling; from each the most typical
    unlabeled item, typicality = 1 / (mean Euclidean distance to its ``min(20, size // 2)``
    nearest neighbours inside the cluster). Difference: the reference switches to
    MiniBatchKMeans above 50 clusters; this always uses ``KMeans``.
``fast_votek`` (Su et al. 2022, xlang-ai/icl-selective-annotation)
    Every item votes for its ``n_neighbors = 150`` nearest neighbours (cosine, capped at pool size - 1);
    greedily pick the item with the largest discounted vote ``sum over its unpicked voters v of
    rho ** -(picked items v voted for)`` with ``rho = 10``. Annotated items count as picked
    (their voters are discounted from the start), as in AdaICL's vote-k variant.
``votek`` (Su et al. 2022, the full method)
    Stage 1: ``max(1, int(budget * stage1_fraction))`` items by fast vote-k (``stage1_fraction =
    0.1``: the paper's M/10). Stage 2: the model's confidence
    ``log p(predicted label)`` on every other unlabeled item; sort least confident first, cut
    into ``budget - stage 1`` buckets of ``int(0.9 * remaining / n)`` items (so the 10% most
    confident are never chosen, as in the reference code) and take the best discounted vote
    from each bucket. Differences: by default the confidence is the *zero-shot* one from the
    pool probe (``probed.probs``), whereas the paper prompts with the stage-1 items as
    demonstrations. Pass ``lm=`` and ``annotator=`` to do as the paper: the stage-1 items are
    annotated through ``annotator(ids) -> {id: label}`` (the only way labels are read) and put
    in every prompt as static demonstrations (the paper retrieves the most similar of them per
    item); labels of ``labeled`` given as a mapping are used as demonstrations too. Buckets are
    cut from the remaining unlabeled items rather than from the whole pool.
``ideal`` (Zhang et al. 2024, skzhang1/IDEAL)
    Directed graph from every item to its ``n_neighbors = 10`` nearest neighbours, edge weight = cosine /
    sum of the item's neighbour cosines (negatives clipped to 0). Greedy influence
    maximisation under the independent cascade model, the spread estimated by Monte Carlo
    over ``n_simulations = 10`` sampled live-edge graphs (seeded). Differences: the same
    ``n_simulations`` live-edge samples are shared by all candidates (common random numbers;
    the reference resamples per evaluation, which gives the same expectation with more noise),
    and the first pick is also greedy (the reference starts from the largest out-degree node,
    which with a kNN graph is an arbitrary node); a node activated twice in one round counts
    once (the reference's list can count it twice). Annotated items start as seeds. Memory grows
    with ``n_simulations`` times the total size of the cascades: fine for pools of a few
    thousand items.

The per-query kNN retriever over the same embeddings, as in the vote-k / IDEAL prompt retrieval,
is ``neuroshot.retrieval.EmbeddingRetriever`` (name ``"embedding"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

from .._validation import check_in, check_whole
from ..data import Annotator
from ..embeddings import pool_embeddings
from ..errors import NeuroshotError
from ..probing import ProbeResult
from ..neighbours import knn
from .base import Pick, Strategy, item_neurons, register

Model = str | os.PathLike | Any | None


def _neighbour_matrix(idx: np.ndarray, n: int, values: np.ndarray | None = None) -> sparse.csr_matrix:
    """Sparse ``[N, N]`` with row ``i`` holding ``i``'s neighbours (value 1 or ``values``)."""
    rows = np.repeat(np.arange(n), idx.shape[1])
    data = np.ones(idx.size) if values is None else values.ravel().astype(np.float64)
    return sparse.csr_matrix((data, (rows, idx.ravel())), shape=(n, n))


class _Votes:
    """Vote-k's discounted votes: ``score(u) = sum over unpicked voters v of u of rho ** -picked_votes(v)``."""

    def __init__(self, emb: np.ndarray, k: int, rho: float, picked: Sequence[int] = ()) -> None:
        n = len(emb)
        idx, _ = knn(emb, k)
        self.voted = _neighbour_matrix(idx, n)  # voted[v, u] = 1: v votes for u (u is among v's k nearest)
        self._by_item = self.voted.tocsc()  # column u: the voters of u
        self.voters = np.asarray(self.voted.sum(axis=0)).ravel()  # raw vote count per item
        self.rho = float(rho)
        self.times = np.zeros(n)  # per voter: how many picked items it voted for
        self.picked = np.zeros(n, dtype=bool)
        for i in picked:
            self.add(int(i))

    def scores(self) -> np.ndarray:
        weight = np.where(self.picked, 0.0, self.rho ** -self.times)
        return self.voted.T @ weight

    def add(self, u: int) -> None:
        col = self._by_item[:, u]
        self.times[col.indices] += col.data
        self.picked[u] = True

    def best(self, among: np.ndarray, tiebreak: np.ndarray) -> tuple[int, float]:
        """The item of ``among`` with the highest discounted vote (ties: more raw votes, then random)."""
        score = self.scores()[among]
        j = int(np.lexsort((tiebreak[among], self.voters[among], score))[-1])
        return int(among[j]), float(score[j])


def _kmeans(x: np.ndarray, n_clusters: int, rng: np.random.Generator, n_init: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means: ``(labels, centroids)``."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise NeuroshotError("the kmeans and typiclust strategies need scikit-learn: pip install scikit-learn") from None
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=int(rng.integers(0, 2**31 - 1)))
    labels = km.fit_predict(np.asarray(x, dtype=np.float64))
    return labels, km.cluster_centers_


def _neurons(probed: ProbeResult, i: int) -> list[tuple[int, int, float]]:
    """The item's strongest task-critical neurons, or its strongest neurons when it touches none of those."""
    return item_neurons(probed, i) or item_neurons(probed, i, among=probed.signatures.item(i)[0])


class _EmbeddingStrategy(Strategy):
    """Shared: where the embeddings come from (``self.embedding_model``, set by every subclass)."""

    def _embeddings(self, probed: ProbeResult) -> np.ndarray:
        return pool_embeddings(probed, self.embedding_model)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        given = params.get("embedding_model")
        if given is not None and not isinstance(given, (str, os.PathLike)):
            params["embedding_model"] = type(given).__name__
        return params


@register
class KMeansStrategy(_EmbeddingStrategy):
    """K-means into ``budget`` clusters over the unlabeled items; the item closest to each centroid."""

    name = "kmeans"

    def __init__(self, n_init: int = 10, embedding_model: Model = None) -> None:
        check_whole("n_init", n_init)
        self.n_init, self.embedding_model = n_init, embedding_model

    def _select(self, probed, candidates, budget, labeled, rng):
        x = self._embeddings(probed)[candidates]
        labels, centroids = _kmeans(x, budget, rng, self.n_init)
        sizes = np.bincount(labels, minlength=budget)
        free = np.ones(len(candidates), dtype=bool)
        picks = []
        for c in np.argsort(-sizes, kind="stable"):
            members = np.flatnonzero((labels == c) & free)
            if not len(members):  # an empty cluster (duplicate points): nearest free item to its centroid
                members = np.flatnonzero(free)
            dist = np.linalg.norm(x[members] - centroids[c], axis=1)
            j = members[int(np.argmin(dist))]
            free[j] = False
            i = int(candidates[j])
            picks.append(Pick(i, 0, float(-dist.min()), {"dist_to_centroid": float(dist.min()),
                                                         "cluster_size": float(sizes[c])},
                              cluster=int(c), neurons=_neurons(probed, i)))
        return picks


def typicality(x: np.ndarray, k: int) -> np.ndarray:
    """TypiClust typicality: ``1 / (mean Euclidean distance to the k nearest other rows + 1e-5)``."""
    if len(x) < 2:
        return np.ones(len(x))
    k = max(1, min(k, len(x) - 1))
    sq = (x * x).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))
    np.fill_diagonal(d, np.inf)
    nearest = np.partition(d, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(1) + 1e-5)


@register
class TypiClustStrategy(_EmbeddingStrategy):
    """TypiClust: per uncovered cluster (largest first) its most typical unlabeled item."""

    name = "typiclust"

    def __init__(self, k_nn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500, n_init: int = 10,
                 embedding_model: Model = None) -> None:
        for key, value in (("k_nn", k_nn), ("max_clusters", max_clusters), ("n_init", n_init)):
            check_whole(key, value)
        check_whole("min_cluster_size", min_cluster_size, minimum=0)
        self.k_nn, self.min_cluster_size, self.max_clusters, self.n_init = k_nn, min_cluster_size, max_clusters, n_init
        self.embedding_model = embedding_model

    def _select(self, probed, candidates, budget, labeled, rng):
        x = self._embeddings(probed)
        n_clusters = min(len(labeled) + budget, self.max_clusters, len(probed))
        labels, _ = _kmeans(x, n_clusters, rng, self.n_init)
        sizes = np.bincount(labels, minlength=n_clusters)
        free = _free(len(probed), candidates)
        covered = np.bincount(labels[~free], minlength=n_clusters)
        order = np.lexsort((-sizes, covered))  # fewest annotated first, then largest
        kept = [int(c) for c in order if sizes[c] > self.min_cluster_size] or [int(c) for c in order]
        picks, turn = [], 0
        while len(picks) < budget:
            has_free = np.bincount(labels[free], minlength=n_clusters) > 0
            live = [c for c in kept if has_free[c]] or [int(c) for c in order if has_free[c]]
            c = live[turn % len(live)]
            turn += 1
            members = np.flatnonzero(free & (labels == c))
            typ = typicality(x[members], min(self.k_nn, len(members) // 2))
            j = int(np.argmax(typ))
            i = int(members[j])
            free[i] = False
            picks.append(Pick(i, 0, float(typ[j]), {"typicality": float(typ[j]), "cluster_size": float(sizes[c]),
                                                    "cluster_labeled": float(covered[c])},
                              cluster=c, neurons=_neurons(probed, i)))
        return picks


@register
class FastVoteKStrategy(_EmbeddingStrategy):
    """Fast vote-k: greedy discounted votes on the kNN graph of the embeddings."""

    name = "fast_votek"

    def __init__(self, n_neighbors: int = 150, rho: float = 10.0, embedding_model: Model = None) -> None:
        check_whole("n_neighbors", n_neighbors)
        check_in("rho", rho, 1.0, low_open=True)
        self.n_neighbors, self.rho, self.embedding_model = n_neighbors, rho, embedding_model

    def _select(self, probed, candidates, budget, labeled, rng):
        votes = _Votes(self._embeddings(probed), self.n_neighbors, self.rho, picked=list(labeled))
        return _vote_greedily(probed, votes, _free(len(probed), candidates), budget, rng.random(len(probed)))


def _free(n: int, candidates: np.ndarray) -> np.ndarray:
    """Boolean ``[n]``: True at the items still free to pick."""
    free = np.zeros(n, dtype=bool)
    free[candidates] = True
    return free


def _vote_greedily(probed: ProbeResult, votes: _Votes, free: np.ndarray, n: int, tiebreak: np.ndarray,
                   why: Mapping[str, float] | None = None) -> list[Pick]:
    """``n`` picks, each the free item with the most discounted votes (``free`` and ``votes`` updated)."""
    picks = []
    for _ in tqdm(range(n), desc="vote-k", disable=None, leave=False):
        i, score = votes.best(np.flatnonzero(free), tiebreak)
        picks.append(Pick(i, 0, score, {**(why or {}), "votes": score, "voters": float(votes.voters[i])},
                          neurons=_neurons(probed, i)))
        votes.add(i)
        free[i] = False
    return picks


@register
class VoteKStrategy(_EmbeddingStrategy):
    """Vote-k: budget/10 items by fast vote-k, the rest from model-confidence buckets by discounted votes.

    Confidence is the zero-shot ``probed.probs`` unless ``lm`` (a ``LanguageModel``) and ``annotator``
    (``ids -> {id: label}``, e.g. a ``SimulatedAnnotator``) are given: then the stage-1 items are
    annotated and used as demonstrations to score the rest, as in the paper.
    """

    name = "votek"

    def __init__(self, n_neighbors: int = 150, rho: float = 10.0, stage1_fraction: float = 0.1, lm: Any = None,
                 annotator: Annotator | None = None, embedding_model: Model = None) -> None:
        check_whole("n_neighbors", n_neighbors)
        check_in("rho", rho, 1.0, low_open=True)
        check_in("stage1_fraction", stage1_fraction, 0.0, 1.0, low_open=True)
        if lm is not None and annotator is None:
            raise NeuroshotError("votek with lm= needs annotator= to label the stage-1 demonstrations")
        if annotator is not None and not callable(annotator):
            raise NeuroshotError("annotator must be callable: ids -> {id: label}")
        self.n_neighbors, self.rho, self.stage1_fraction = n_neighbors, rho, stage1_fraction
        self.embedding_model = embedding_model
        self._lm, self._annotator = lm, annotator

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["lm"] = None if self._lm is None else getattr(self._lm, "name", type(self._lm).__name__)
        params["annotator"] = None if self._annotator is None else type(self._annotator).__name__
        return params

    def _select(self, probed, candidates, budget, labeled, rng):
        votes = _Votes(self._embeddings(probed), self.n_neighbors, self.rho, picked=list(labeled))
        tiebreak = rng.random(len(probed))
        n1 = min(budget, max(1, int(budget * self.stage1_fraction)))
        free = _free(len(probed), candidates)
        picks = _vote_greedily(probed, votes, free, n1, tiebreak, {"stage": 1.0})
        n2 = budget - n1
        if n2 == 0:
            return picks
        rest = np.flatnonzero(free)
        confidence = self._confidence(probed, rest, [p.index for p in picks], labeled)
        order = np.lexsort((tiebreak[rest], confidence))  # least confident first
        rest, confidence = rest[order], confidence[order]
        size = max(1, int(0.9 * len(rest) / n2))  # n2 * size <= len(rest): every bucket is non-empty
        for bucket in tqdm(range(n2), desc="vote-k buckets", disable=None, leave=False):
            members = rest[bucket * size:(bucket + 1) * size]
            i, score = votes.best(members, tiebreak)
            conf = float(confidence[bucket * size + int(np.flatnonzero(members == i)[0])])
            picks.append(Pick(i, 0, score, {"stage": 2.0, "votes": score, "confidence": conf,
                                            "bucket": float(bucket)}, neurons=_neurons(probed, i)))
            votes.add(i)
        return picks

    def _confidence(self, probed: ProbeResult, rows: np.ndarray, stage1: list[int],
                    labeled: Sequence[int] | Mapping[int, str]) -> np.ndarray:
        """``log p(predicted label)`` of ``rows``: zero-shot from the probe, or prompted with stage-1 demos."""
        if self._lm is None:
            probs = probed.probs[rows]
        else:
            from ..scoring import predict_proba
            from ..task import Demonstration

            ids = [str(i) for i in (range(len(probed)) if probed.ids is None else probed.ids)]
            answers = dict(self._annotator([ids[i] for i in stage1]))
            missing = [ids[i] for i in stage1 if ids[i] not in answers]
            if missing:
                raise NeuroshotError(f"the annotator returned no label for {', '.join(map(repr, missing[:5]))}")
            known = dict(labeled) if isinstance(labeled, Mapping) else {}
            known.update({i: answers[ids[i]] for i in stage1})
            for label in known.values():
                probed.task.label_index(label)  # raises on a label outside the task
            demos = [Demonstration(probed.texts[i], label) for i, label in known.items()]
            probs = predict_proba(self._lm, probed.task, [probed.texts[i] for i in rows], demos)
        return np.log(np.clip(np.asarray(probs, dtype=np.float64).max(1), 1e-12, None))


def _reach(live: sparse.csr_matrix) -> sparse.csr_matrix:
    """Boolean ``[N, N]``: row ``i`` marks every node reachable from ``i`` (itself included) over ``live`` edges."""
    n = live.shape[0]
    reach = sparse.identity(n, dtype=np.int32, format="csr")
    frontier = reach
    live = live.astype(np.int32)
    live.eliminate_zeros()
    while frontier.nnz:
        step = (frontier @ live).astype(bool).astype(np.int32)
        frontier = (step - step.multiply(reach)).tocsr()
        frontier.eliminate_zeros()
        reach = (reach + frontier).tocsr()
    return reach


def live_edge_reach(idx: np.ndarray, weight: np.ndarray, n_simulations: int,
                    rng: np.random.Generator) -> sparse.csr_matrix:
    """Monte Carlo for the independent cascade on the graph ``i -> idx[i, j]`` with probabilities ``weight[i, j]``.

    Each simulation samples a live-edge graph (every edge live with its probability); the cascade
    from a seed set is exactly what is reachable from it over live edges. Returns ``[N, N * sims]``:
    row ``i`` marks what ``i`` activates in each simulation, so a seed set's expected spread is
    ``(union of its rows).sum() / sims``.
    """
    n = len(idx)
    snapshots = [_reach(_neighbour_matrix(idx, n, (rng.random(weight.shape) < weight).astype(np.float64)))
                 for _ in range(n_simulations)]
    return sparse.hstack(snapshots, format="csr").astype(np.float64)


@register
class IdealStrategy(_EmbeddingStrategy):
    """IDEAL: greedy influence maximisation (independent cascade, Monte Carlo) on the directed kNN graph."""

    name = "ideal"

    def __init__(self, n_neighbors: int = 10, n_simulations: int = 10, embedding_model: Model = None) -> None:
        check_whole("n_neighbors", n_neighbors)
        check_whole("n_simulations", n_simulations)
        self.n_neighbors, self.n_simulations, self.embedding_model = n_neighbors, n_simulations, embedding_model

    def _select(self, probed, candidates, budget, labeled, rng):
        n = len(probed)
        idx, sim = knn(self._embeddings(probed), self.n_neighbors)
        sim = np.maximum(sim.astype(np.float64), 0.0)
        weight = sim / np.maximum(sim.sum(1, keepdims=True), 1e-12)  # edge i -> j, IDEAL's normalisation
        reach = live_edge_reach(idx, weight, self.n_simulations, rng)
        uncovered = np.ones(n * self.n_simulations)
        for i in labeled:
            uncovered[reach[int(i)].indices] = 0.0
        spread = n - uncovered.sum() / self.n_simulations
        tiebreak = rng.random(n) * 1e-9
        free = _free(n, candidates)
        picks = []
        for _ in tqdm(range(budget), desc="IDEAL", disable=None, leave=False):
            gain = reach @ uncovered / self.n_simulations
            i = int(np.argmax(np.where(free, gain + tiebreak, -np.inf)))
            spread += gain[i]
            picks.append(Pick(i, 0, float(gain[i]), {"spread_gain": float(gain[i]), "spread": float(spread)},
                              neurons=_neurons(probed, i)))
            uncovered[reach[i].indices] = 0.0
            free[i] = False
        return picks
