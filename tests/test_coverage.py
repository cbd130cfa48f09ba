"""``neuron_coverage`` mechanics on synthetic signatures with a known structure.

A tiny random LLaMA probe supplies the task and the probe record; its signatures are replaced by
four groups of items that share a neuron pattern (one group per "neuron circuit"), on top of
neurons every item uses alike, so the expected picks are known.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neuroshot import NeuroshotError
from neuroshot.probing import critical_neurons, item_scores, probe
from neuroshot.signatures import Signatures
from neuroshot.strategies import get_strategy

GROUPS, PER_GROUP, SHARED = 4, 8, 6


@pytest.fixture(scope="module")
def grouped_pool(tiny_lm):
    """32 items in 4 groups of 8; each group has its own 6 neurons, and every item the same 6 strong ones."""
    from neuroshot.task import Task

    task = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
    texts = [f"item {i} " + "xyz"[i % 3] for i in range(GROUPS * PER_GROUP)]
    base = probe(tiny_lm, task, texts, top_k=8, progress=False, ids=[f"id{i}" for i in range(len(texts))])
    rng = np.random.default_rng(0)
    shared = np.arange(SHARED)  # used alike by every item, and strongly
    neurons, values, group = [], [], []
    for g in range(GROUPS):
        own = 100 + 10 * g + np.arange(6)
        for _ in range(PER_GROUP):
            neurons.append(np.concatenate([shared, own]))
            values.append(np.concatenate([np.full(SHARED, 5.0), 1.0 + 0.2 * rng.random(6)]))
            group.append(g)
    sig = Signatures.from_items(neurons, values, base.signatures.n_layers, base.signatures.d_ff)
    crit = critical_neurons(sig, fraction=(SHARED + 6 * GROUPS) / sig.n_neurons)
    return replace(base, signatures=sig, critical=crit, scores=item_scores(base.probs, sig, crit)), np.array(group)


@pytest.mark.parametrize("seed", [0, 1])
def test_one_pick_per_neuron_group(grouped_pool, seed):
    pool, group = grouped_pool
    plan = get_strategy("neuron_coverage").plan(pool, GROUPS, seed=seed)
    assert sorted(group[plan.indices]) == list(range(GROUPS))


def test_annotated_items_cover_their_group(grouped_pool):
    pool, group = grouped_pool
    labeled = list(np.flatnonzero(group == 0)[:2]) + list(np.flatnonzero(group == 2)[:1])
    plan = get_strategy("neuron_coverage").plan(pool, 2, labeled=labeled, seed=0)
    assert sorted(group[plan.indices]) == [1, 3]


def test_gains_shrink_and_explain(grouped_pool):
    pool, _ = grouped_pool
    plan = get_strategy("neuron_coverage").plan(pool, 6, seed=0)
    gains = [p.parts["coverage_gain"] for p in plan.picks]
    assert all(a >= b - 1e-12 for a, b in zip(gains, gains[1:]))  # greedy on a submodular objective
    assert gains[GROUPS] < 0.1 * gains[GROUPS - 1]  # once every group is represented, little is left
    assert all(p.parts["represents"] >= 1 and p.neurons for p in plan.picks[:GROUPS])
    assert sum(p.parts["represents"] for p in plan.picks[:GROUPS]) == len(pool)


def test_uncertainty_bonus_changes_the_plan(grouped_pool):
    pool, _ = grouped_pool
    entropy = np.zeros(len(pool))
    entropy[[1, 2, 3]] = 1.0  # three items of group 0 look very uncertain
    noisy = replace(pool, scores=replace(pool.scores, entropy=entropy))
    plain = get_strategy("neuron_coverage").plan(noisy, 3, seed=0).indices
    biased = get_strategy("neuron_coverage", uncertainty_weight=10.0).plan(noisy, 3, seed=0).indices
    assert sorted(biased) == [1, 2, 3] and sorted(plain) != [1, 2, 3]


@pytest.mark.parametrize("params", [{"n_neighbors": 0}, {"influence_weight": -1.0}, {"uncertainty_weight": -0.5}])
def test_bad_parameters_are_refused(params):
    with pytest.raises(NeuroshotError, match=next(iter(params))):
        get_strategy("neuron_coverage", **params)


@pytest.fixture(scope="module")
def random_pool(tiny_lm):
    """120 items with random signatures (40 neurons each) and random label probabilities."""
    from neuroshot.task import Task

    task = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
    texts = [f"text {i}" for i in range(120)]
    base = probe(tiny_lm, task, texts, top_k=8, progress=False)
    rng = np.random.default_rng(1)
    neurons = [rng.choice(base.signatures.n_neurons, 40, replace=False) for _ in texts]
    values = [rng.gamma(2.0, 1.0, 40) for _ in texts]
    sig = Signatures.from_items(neurons, values, base.signatures.n_layers, base.signatures.d_ff)
    crit = critical_neurons(sig, fraction=0.5)
    probs = rng.dirichlet(np.ones(3), len(texts))
    return replace(base, probs=probs, signatures=sig, critical=crit, scores=item_scores(probs, sig, crit))


def _full_greedy(pool, budget, labeled, seed, n_neighbors=10, balance=False, uncertainty_weight=0.0):
    """The plan by recomputing every candidate's gain at every step (what the lazy greedy must equal)."""
    from neuroshot.neighbours import minmax
    from neuroshot.strategies.coverage import _centred_signatures, _cover, _gains, _similarity_graph

    n = len(pool)
    graph = _similarity_graph(_centred_signatures(pool), n_neighbors)
    best = np.zeros(n)
    for i in labeled:
        _cover(graph, i, best)
    bonus = uncertainty_weight * minmax(pool.scores.entropy)
    classes = pool.predicted.copy()
    counts = np.bincount(classes[list(labeled)], minlength=3)
    available = np.ones(n, dtype=bool)
    available[list(labeled)] = False
    tiebreak = np.random.default_rng(seed).random(n) * 1e-9
    picks = []
    for _ in range(budget):
        total = _gains(graph, best) / n + bonus
        total = total / (1.0 + counts[classes]) if balance else total
        x = int(np.argmax(np.where(available, total + tiebreak, -np.inf)))
        _cover(graph, x, best)
        picks.append(x)
        available[x] = False
        counts[classes[x]] += 1
    return picks


@pytest.mark.parametrize("options", [{}, {"balance": True}, {"uncertainty_weight": 0.5}])
@pytest.mark.parametrize("labeled", [[], [3, 50, 77]])
def test_lazy_greedy_equals_the_full_greedy(random_pool, options, labeled):
    plan = get_strategy("neuron_coverage", n_neighbors=10, **options).plan(random_pool, 15, labeled=labeled, seed=4)
    assert plan.indices == _full_greedy(random_pool, 15, labeled, seed=4, **options)


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_neighbours_plan_like_exact_ones(random_pool, method):
    exact = get_strategy("neuron_coverage", n_neighbors=10, neighbours="exact").plan(random_pool, 15, seed=0)
    approx = get_strategy("neuron_coverage", n_neighbors=10, neighbours=method).plan(random_pool, 15, seed=0)
    assert len(set(exact.indices) & set(approx.indices)) >= 14
    with pytest.raises(NeuroshotError, match="neighbours"):
        get_strategy("neuron_coverage", neighbours="annoy")


def test_coverage_graph_is_the_knn_list_transposed_with_the_diagonal():
    from neuroshot.strategies.coverage import _graph

    idx = np.array([[1, 2], [0, 2], [1, 0], [2, 1]])
    sim = np.array([[0.9, -0.2], [0.9, 0.5], [0.5, 0.3], [0.7, 0.1]], dtype=np.float32)
    expected = np.eye(4)
    for x in range(4):
        for c, value in zip(idx[x], sim[x]):
            expected[c, x] = max(0.0, value)  # how well c represents x
    np.testing.assert_allclose(_graph(idx, sim).toarray(), expected, rtol=1e-6)
