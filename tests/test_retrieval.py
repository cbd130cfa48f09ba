"""Per-query retrieval mechanics (tiny random LLaMA): similarity, MMR, label balance, subset/extend of probes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neuroshot.errors import NeuroshotError
from neuroshot.probing import probe
from neuroshot.neighbours import mmr_select
from neuroshot.retrieval import NeuronRetriever, RandomRetriever, get_retriever, label_separation


@pytest.fixture(scope="module")
def probed(tiny_lm):
    from neuroshot.task import Task
    from tests.conftest import TINY_TEXTS

    task = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
    return probe(tiny_lm, task, TINY_TEXTS, top_k=8, critical_fraction=0.2, progress=False)


def _cosine_on_critical(result, qi, di, standardize=False):
    dense = result.critical.restrict(result.signatures).toarray()
    if standardize:  # z-scores with the annotated items' (rows 0-7) statistics
        dense = (dense - dense[:8].mean(0)) / (dense[:8].std(0) + 1e-6)
    a, b = dense[qi], dense[di]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("standardize", [False, True])
def test_pure_similarity_ranks_by_cosine_over_critical_neurons(probed, standardize):
    annotated, queries = probed.subset(range(8)), probed.subset(range(8, 12))
    labels = ["A", "B", "C", "A", "B", "C", "A", "B"]
    chosen = NeuronRetriever(mmr=1.0, standardize=standardize).fit(annotated, labels).retrieve(queries, k=8)
    for q, row in enumerate(chosen):
        expected = [_cosine_on_critical(probed, 8 + q, d, standardize) for d in range(8)]
        assert [r.similarity for r in row] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)
        assert [r.index for r in row] == list(np.argsort(-np.array(expected), kind="stable"))
        assert [r.label for r in row] == [labels[r.index] for r in row]


def test_too_few_annotated_items_are_not_standardized(probed):
    annotated, queries = probed.subset(range(4)), probed.subset(range(8, 12))
    labels = ["A", "B", "C", "A"]
    plain = NeuronRetriever(mmr=1.0, standardize=False).fit(annotated, labels).retrieve(queries, k=4)
    default = NeuronRetriever(mmr=1.0).fit(annotated, labels).retrieve(queries, k=4)
    assert [[r.similarity for r in row] for row in default] == [[r.similarity for r in row] for row in plain]


def test_label_weighting_scales_each_neuron_by_how_well_it_separates_the_labels(probed):
    annotated, queries = probed.subset(range(6)), probed.subset(range(6, 12))
    labels = ["A", "B", "A", "B", "A", "B"]
    dense = probed.critical.restrict(probed.signatures).toarray()
    weights = label_separation(dense[:6], labels)
    assert (weights == 0).any()  # a neuron silent on every annotated item separates nothing ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... and gets weight 0 without a division warning
        retriever = NeuronRetriever(mmr=1.0, standardize=False, label_weighted=True).fit(annotated, labels)
    weighted = dense * weights
    for q, row in enumerate(retriever.retrieve(queries, k=6)):
        a = weighted[6 + q]
        expected = [float(a @ weighted[d] / (np.linalg.norm(a) * np.linalg.norm(weighted[d]))) for d in range(6)]
        assert [r.similarity for r in row] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)


def test_an_item_retrieves_itself_first(probed):
    annotated = probed.subset(range(8))
    chosen = NeuronRetriever(mmr=1.0).fit(annotated, ["A", "B"] * 4).retrieve(annotated, k=1)
    assert [row[0].index for row in chosen] == list(range(8))
    assert all(row[0].similarity == pytest.approx(1.0) for row in chosen)
    assert all(row[0].neurons for row in chosen)  # shared neurons explain the pick


def test_mmr_skips_a_near_duplicate():
    query = np.array([0.9, 0.89, 0.5])
    pair = np.array([[1.0, 0.99, 0.1], [0.99, 1.0, 0.1], [0.1, 0.1, 1.0]])
    assert [i for i, _ in mmr_select(query, pair, 2, 1.0)] == [0, 1]
    assert [i for i, _ in mmr_select(query, pair, 2, 0.5)] == [0, 2]


def test_label_balance_caps_each_label(probed):
    annotated, queries = probed.subset(range(8)), probed.subset(range(8, 12))
    labels = ["A"] * 6 + ["B"] * 2
    for row in NeuronRetriever(mmr=1.0, balance=True).fit(annotated, labels).retrieve(queries, k=4):
        assert sorted(r.label for r in row) == ["A", "A", "B", "B"]


def test_demonstrations_put_the_most_similar_last(probed):
    annotated, queries = probed.subset(range(8)), probed.subset(range(8, 10))
    labels = ["A", "B"] * 4
    retriever = NeuronRetriever(mmr=1.0).fit(annotated, labels)
    for demos, chosen in zip(retriever.demonstrations(queries, k=3), retriever.retrieve(queries, k=3)):
        assert [d.text for d in demos] == [annotated.texts[r.index] for r in reversed(chosen)]


def test_random_retriever_is_seeded_and_never_repeats_within_a_query(probed):
    annotated, queries = probed.subset(range(8)), probed.subset(range(8, 12))
    runs = [[[r.index for r in row] for row in RandomRetriever(seed=3).fit(annotated, ["A"] * 8).retrieve(queries, 4)]
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(len(set(row)) == 4 for row in runs[0])


def test_retriever_errors(probed):
    annotated = probed.subset(range(4))
    with pytest.raises(NeuroshotError, match="not fitted"):
        NeuronRetriever().retrieve(annotated, 2)
    with pytest.raises(NeuroshotError, match="labels for"):
        NeuronRetriever().fit(annotated, ["A"])
    with pytest.raises(NeuroshotError, match="unknown label"):
        NeuronRetriever().fit(annotated, ["A", "B", "C", "Z"])
    with pytest.raises(NeuroshotError, match="k must be"):
        NeuronRetriever().fit(annotated, ["A"] * 4).retrieve(annotated, 0)
    with pytest.raises(NeuroshotError, match="mmr"):
        NeuronRetriever(mmr=1.5)
    with pytest.raises(NeuroshotError, match="unknown retriever"):
        get_retriever("nope")


def test_subset_keeps_the_pool_critical_neurons_and_extend_recomputes_them(probed):
    head, tail = probed.subset(range(6)), probed.subset(range(6, 12))
    assert np.array_equal(head.critical.ids, probed.critical.ids)
    np.testing.assert_allclose(head.probs, probed.probs[:6])
    joined = head.extend(tail)
    assert joined.texts == probed.texts
    np.testing.assert_array_equal(joined.signatures.neurons, probed.signatures.neurons)
    np.testing.assert_array_equal(joined.critical.ids, probed.critical.ids)
    np.testing.assert_allclose(joined.scores.influence, probed.scores.influence)


@pytest.mark.parametrize("retriever", ["neuron", "hybrid"])
def test_auto_balance_follows_who_knows_the_labels_better(probed, retriever):
    """``balance="auto"`` balances labels where the model's zero-shot answers on the annotated items are
    right more often than their nearest annotated neighbours carry their label, and keeps plain kNN
    where they are not."""
    annotated, queries = probed.subset(range(10)), probed.subset(range(10, len(probed)))
    names = annotated.task.labels
    predicted = [names[i] for i in annotated.probs.argmax(1)]
    own = get_retriever(retriever, balance="auto").fit(annotated, predicted)
    assert own.balance_ is True  # the model answers all of them right: leave it the decision
    rare = min(names, key=predicted.count)  # one label for all: the neighbours are always right, the model less
    assert predicted.count(rare) < len(predicted)
    constant = get_retriever(retriever, balance="auto").fit(annotated, [rare] * len(predicted))
    assert constant.balance_ is False
    few = get_retriever(retriever, balance="auto").fit(probed.subset(range(5)), predicted[:5])
    assert few.balance_ is False  # too few labels to choose from: plain kNN as before
    assert get_retriever(retriever, balance=True).fit(annotated, [rare] * 10).balance_ is True
    # balanced retrieval shows at most ceil(k / labels present) per label
    mixed = (names * 4)[:10]
    chosen = get_retriever(retriever, balance=True, mmr=1.0).fit(annotated, mixed).retrieve(queries, k=3)
    assert all(len({r.label for r in row}) == 3 for row in chosen)
    with pytest.raises(NeuroshotError, match="balance"):
        get_retriever(retriever, balance="sometimes")


def test_leave_one_out_agreement_is_the_share_of_neighbours_with_the_label():
    from neuroshot.neighbours import label_has_another, leave_one_out_agreement

    pair = np.array([[1, .9, .2, .8], [.9, 1, .3, .1], [.2, .3, 1, .4], [.8, .1, .4, 1]])
    labels = ["a", "a", "b", "c"]
    np.testing.assert_allclose(leave_one_out_agreement(pair, labels, 1), [1, 1, 0, 0])
    np.testing.assert_allclose(leave_one_out_agreement(pair, labels, 2), [.5, .5, 0, 0])  # item 0: items 1 and 3
    assert leave_one_out_agreement(pair, labels, 9).shape == (4,)  # at most the 3 others
    assert list(label_has_another(labels)) == [True, True, False, False]
    assert pair[0, 0] == 1  # the caller's matrix is left as it was
