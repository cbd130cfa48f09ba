"""Static demonstration order chosen from the model's answers on unlabeled texts (``neuroshot.ordering``)."""

from __future__ import annotations

import numpy as np
import pytest

from neuroshot.errors import NeuroshotError
from neuroshot.evaluate import predict_proba_static
from neuroshot.ordering import order_demonstrations, order_planned, prediction_entropy
from neuroshot.pipelines import Pipeline, get_pipeline
from neuroshot.task import Demonstration

from test_evaluate import POOL_TEXTS, TEST_TEXTS, _experiment, _records


def test_prediction_entropy_of_label_histograms():
    one_label = np.array([[0.9, 0.1, 0.0]] * 4)
    even = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert prediction_entropy(one_label) == 0.0
    assert prediction_entropy(even) == pytest.approx(np.log(3))
    assert 0 < prediction_entropy(np.eye(3)[[0, 0, 1]]) < np.log(3)


def _demos(task):
    return [Demonstration(t, task.labels[i % len(task.labels)]) for i, t in enumerate(POOL_TEXTS[:5])]


def test_order_demonstrations_keeps_the_candidate_with_the_most_even_answers(tiny_lm, tiny_task, single_thread):
    demos, texts = _demos(tiny_task), POOL_TEXTS[5:]
    chosen = order_demonstrations(tiny_lm, tiny_task, demos, texts, candidates=6, seed=3)
    assert sorted(d.text for d in chosen) == sorted(d.text for d in demos)  # a permutation, nothing lost
    rng = np.random.default_rng(3)  # the same candidates, scored here one by one
    orders = [list(range(5))] + [rng.permutation(5).tolist() for _ in range(5)]
    entropies = [prediction_entropy(predict_proba_static(tiny_lm, tiny_task, texts, [demos[i] for i in o]))
                 for o in orders]
    best = orders[int(np.argmax(entropies))]  # the first of equals, as documented
    assert chosen == [demos[i] for i in best]
    assert order_demonstrations(tiny_lm, tiny_task, demos, texts, candidates=6, seed=3) == chosen  # seeded
    assert order_demonstrations(tiny_lm, tiny_task, demos, texts, candidates=1) == demos  # one candidate: as given


def test_order_demonstrations_rejects_bad_input(tiny_lm, tiny_task):
    with pytest.raises(NeuroshotError, match="unlabeled texts"):  # nothing to read the answers on
        order_demonstrations(tiny_lm, tiny_task, _demos(tiny_task), [])
    with pytest.raises(NeuroshotError, match="candidates"):
        order_demonstrations(tiny_lm, tiny_task, _demos(tiny_task), ["x"], candidates=0)
    with pytest.raises(NeuroshotError, match="unknown order 'sorted'"):
        Pipeline("p", "random", order="sorted")


def test_order_planned_reads_only_unplanned_pool_texts(tiny_lm, tiny_task, single_thread):
    chosen, labels = [4, 0, 7], ["A", "B", "C"]
    order = order_planned(tiny_lm, tiny_task, POOL_TEXTS, chosen, labels, unlabeled=5, candidates=4, seed=2)
    assert sorted(order) == sorted(chosen)
    rest = [t for i, t in enumerate(POOL_TEXTS) if i not in chosen]
    sample = np.sort(np.random.default_rng(2).choice(np.setdiff1d(np.arange(len(POOL_TEXTS)), chosen), 5, replace=False))
    demos = [Demonstration(POOL_TEXTS[i], label) for i, label in zip(chosen, labels)]
    expected = order_demonstrations(tiny_lm, tiny_task, demos, [POOL_TEXTS[i] for i in sample], candidates=4, seed=2)
    assert [POOL_TEXTS[i] for i in order] == [d.text for d in expected]
    assert set(POOL_TEXTS[i] for i in sample) <= set(rest)
    assert order_planned(tiny_lm, tiny_task, POOL_TEXTS[:3], [0, 1, 2], labels) == [0, 1, 2]  # nothing unplanned


def test_static_experiment_orders_by_entropy_on_unannotated_pool_texts(tiny_lm, tiny_task, single_thread, monkeypatch):
    import neuroshot.ordering as ordering

    pool = _records(tiny_task, POOL_TEXTS, "p")
    exp = _experiment(tiny_lm, tiny_task, pool, regime="static")
    seen = []
    best_order = ordering._best_order

    def spy(lm, task, demos, texts, *args):
        seen.append(([d.text for d in demos], list(texts)))
        return best_order(lm, task, demos, texts, *args)

    monkeypatch.setattr(ordering, "_best_order", spy)
    ordered = Pipeline("ordered", "random", order="entropy")
    first = exp.run_one(ordered, 4, seed=1)
    assert len(seen) == 1
    demo_texts, read = seen[0]
    assert sorted(demo_texts) == sorted(r.text for r in pool if r.id in first.ids)
    assert len(read) == len(pool) - 4 and not set(read) & set(demo_texts)  # never an annotated item
    assert not set(read) & set(TEST_TEXTS)  # never a test item
    plain = exp.run_one(Pipeline("plain", "random"), 4, seed=1)
    assert plain.ids == first.ids and len(seen) == 1  # the plan's own order: no ordering pass
    exp.run_one(ordered, 4, seed=1)
    assert len(seen) == 1  # same plan, same seed: scored once
    assert "static order entropy" in str(ordered)


def test_order_planned_keeps_the_plan_when_the_prompt_does_not_fit(tiny_lm, tiny_task, caplog):
    long = ["a long demonstration text " * 4] * 4  # 4 x ~100 characters: over the tiny model's 256 tokens
    texts = long + ["short"] * 3
    with caplog.at_level("WARNING", logger="neuroshot.ordering"):
        assert order_planned(tiny_lm, tiny_task, texts, [3, 1, 0, 2], ["A", "B", "C", "A"]) == [3, 1, 0, 2]
    assert "plan's order" in caplog.text and "context" in caplog.text
    with pytest.raises(NeuroshotError, match="context"):  # called directly, it says so
        order_demonstrations(tiny_lm, tiny_task, [Demonstration(t, "A") for t in long], ["short"])
