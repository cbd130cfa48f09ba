"""Active rounds on a tiny LLaMA: batches, re-probing with demonstrations in context, annotation hygiene."""

from __future__ import annotations

import numpy as np
import pytest

from neuroshot.active import active_plan, context_demonstrations, round_sizes
from neuroshot.annotation import SimulatedAnnotator
from neuroshot.errors import NeuroshotError
from neuroshot.probing import probe
from neuroshot.strategies import get_strategy
from neuroshot.strategies.baselines import EntropyStrategy

from conftest import TINY_TEXTS

TEXTS = TINY_TEXTS + ["another pool item here", "short one", "questions about tax", "a final text"]
IDS = [f"p{i}" for i in range(len(TEXTS))]
PROBE = {"critical_fraction": 0.1, "top_k": 8}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny models run faster on one thread."""


@pytest.fixture
def gold(tiny_task):
    return {i: tiny_task.labels[n % 3] for n, i in enumerate(IDS)}


class RecordingAnnotator(SimulatedAnnotator):
    def __init__(self, gold):
        super().__init__(gold)
        self.calls: list[list[str]] = []

    def annotate(self, ids):
        self.calls.append(list(ids))
        return super().annotate(ids)

    __call__ = annotate


class SpyEntropy(EntropyStrategy):
    """Entropy sampling that records what each plan call was given."""

    def __init__(self):
        self._seen = []

    def plan(self, pool, budget, *, labeled=(), seed=0):
        self._seen.append((pool, dict(labeled), budget))
        return super().plan(pool, budget, labeled=labeled, seed=seed)


def test_round_sizes():
    assert round_sizes(7, rounds=3) == [3, 2, 2]
    assert round_sizes(7, batch_size=3) == [3, 3, 1]
    assert round_sizes(2, rounds=5) == [1, 1]
    assert round_sizes(6) == [2, 2, 2]
    with pytest.raises(NeuroshotError, match="not both"):
        round_sizes(6, rounds=2, batch_size=3)
    with pytest.raises(NeuroshotError, match="rounds must be a whole number >= 1"):
        round_sizes(6, rounds=0)


def test_context_demonstrations_are_label_balanced_beyond_the_limit(tiny_task):
    texts = [f"t{i}" for i in range(6)]
    labels = {0: "A", 1: "A", 2: "A", 3: "B", 4: "A", 5: "C"}
    demos = context_demonstrations(texts, [0, 1, 2, 3, 4, 5], labels, tiny_task, limit=3)
    assert [(d.text, d.label) for d in demos] == [("t0", "A"), ("t3", "B"), ("t5", "C")]
    assert len(context_demonstrations(texts, [0, 1], labels, tiny_task, limit=3)) == 2


def test_active_rounds_mechanics(tiny_lm, tiny_task, gold):
    annotator = RecordingAnnotator(gold)
    spy = SpyEntropy()
    zero_shot = probe(tiny_lm, tiny_task, TEXTS, ids=IDS, progress=False, **PROBE)
    result = active_plan(tiny_lm, tiny_task, TEXTS, spy, 6, annotator=annotator, rounds=3, seed=0, pool=zero_shot,
                         probe_kwargs=PROBE, progress=False)

    # rounds: 3 batches of 2, the annotator asked once per round for exactly that round's picks, no repeats
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert annotator.calls == [[IDS[i] for i in r.indices] for r in result.rounds]
    assert [len(c) for c in annotator.calls] == [2, 2, 2]
    assert len(set(result.indices)) == 6 and annotator.revealed == {IDS[i] for i in result.indices}
    assert result.labels == {IDS[i]: gold[IDS[i]] for i in result.indices}
    assert [p.parts["round"] for p in result.plan.picks] == [1, 1, 2, 2, 3, 3]
    assert [p.rank for p in result.plan.picks] == list(range(1, 7))
    assert "round 2" in result.plan.explain(TEXTS) and result.plan.strategy == "active:entropy"

    # the base strategy plans each later round with labeled = the annotated items (row -> label)
    (p1, l1, _), (p2, l2, _), (p3, l3, _) = spy._seen
    assert p1 is zero_shot and l1 == {}
    assert len(l2) == 2 and len(l3) == 4
    for pool, labeled, r in ((p2, l2, result.rounds[1]), (p3, l3, result.rounds[2])):
        assert {pool.ids[row]: lab for row, lab in labeled.items()} == {
            IDS[i]: gold[IDS[i]] for i in result.indices[:len(labeled)]}
        assert pool.ids == [IDS[i] for i in r.rows] and len(pool) == len(TEXTS)

    # the demonstrations in context change the probe of the items not yet annotated
    r2 = result.rounds[1]
    assert [(d.text, d.label) for d in r2.demos] == [(TEXTS[i], gold[IDS[i]]) for i in result.rounds[0].indices]
    rest = [row for row, i in enumerate(r2.rows) if i not in result.rounds[0].indices]
    in_context = r2.probe.probs[rest]
    alone = zero_shot.probs[[r2.rows[row] for row in rest]]
    assert not np.allclose(in_context, alone, atol=1e-4)
    np.testing.assert_allclose(in_context, probe(tiny_lm, tiny_task, [TEXTS[r2.rows[row]] for row in rest],
                                                  demos=r2.demos, progress=False, **PROBE).probs, atol=1e-6)


def test_active_plan_is_reproducible_and_ignores_unannotated_labels(tiny_lm, tiny_task, gold):
    first = SimulatedAnnotator(gold)
    a = active_plan(tiny_lm, tiny_task, TEXTS, "neuron_coverage", 5, annotator=first, ids=IDS, batch_size=2,
                    seed=4, probe_kwargs=PROBE, progress=False)
    assert [len(r.indices) for r in a.rounds] == [2, 2, 1]
    garbled = {i: (lab if i in first.revealed else tiny_task.labels[(tiny_task.label_index(lab) + 1) % 3])
               for i, lab in gold.items()}
    second = SimulatedAnnotator(garbled)
    b = active_plan(tiny_lm, tiny_task, TEXTS, get_strategy("neuron_coverage"), 5, annotator=second, ids=IDS,
                    batch_size=2, seed=4, probe_kwargs=PROBE, progress=False)
    assert a.indices == b.indices and second.revealed == first.revealed


def test_active_plan_rejects_bad_input(tiny_lm, tiny_task, gold):
    annotator = SimulatedAnnotator(gold)
    with pytest.raises(NeuroshotError, match="larger than"):
        active_plan(tiny_lm, tiny_task, TEXTS, "random", 99, annotator=annotator, ids=IDS, progress=False)
    with pytest.raises(NeuroshotError, match="name every text once"):
        active_plan(tiny_lm, tiny_task, TEXTS, "random", 2, annotator=annotator, ids=IDS[:3], progress=False)
    with pytest.raises(NeuroshotError, match="unknown label"):
        active_plan(tiny_lm, tiny_task, TEXTS, "random", 2, annotator=lambda ids: {i: "Z" for i in ids}, ids=IDS,
                    rounds=1, probe_kwargs=PROBE, progress=False)
    assert not annotator.revealed


def test_active_is_a_strategy_by_name_with_base_parameters():
    from neuroshot.strategies.active import ActiveStrategy

    s = get_strategy("active:neufs", tau=0.3, context_demos=4)
    assert isinstance(s, ActiveStrategy) and s.base == "neufs" and s.base_params == {"tau": 0.3}
    assert s.context_demos == 4 and s._base.tau == 0.3
    assert get_strategy("active").base == "entropy"
    with pytest.raises(NeuroshotError, match="nested"):
        get_strategy("active:active")
    with pytest.raises(NeuroshotError, match="bogus"):
        get_strategy("active:random", bogus=1)


def test_one_active_round_is_active_plans_round(tiny_lm, tiny_task, gold):
    zero_shot = probe(tiny_lm, tiny_task, TEXTS, ids=IDS, progress=False, **PROBE)
    first = get_strategy("active:entropy").plan(zero_shot, 3, seed=5)  # no labels: the base strategy, no model
    assert first.indices == get_strategy("entropy").plan(zero_shot, 3, seed=5).indices
    labels = {i: gold[IDS[i]] for i in first.indices}
    with pytest.raises(NeuroshotError, match="lm="):
        get_strategy("active:entropy").plan(zero_shot, 2, labeled=labels)

    result = active_plan(tiny_lm, tiny_task, TEXTS, "entropy", 5, annotator=SimulatedAnnotator(gold), ids=IDS,
                         batch_size=3, seed=1, pool=zero_shot, probe_kwargs=PROBE, progress=False)
    r1, r2 = result.rounds
    strategy = get_strategy("active:entropy", lm=tiny_lm, probe_kwargs=PROBE)
    seed2 = int(np.random.SeedSequence([1, 2]).generate_state(1)[0])
    step = strategy.plan(zero_shot, 2, labeled={i: gold[IDS[i]] for i in r1.indices}, seed=seed2)
    assert step.indices == r2.indices and not set(step.indices) & set(r1.indices)
    assert strategy.round_rows_ == r2.rows and [d.text for d in strategy.round_demos_] == [d.text for d in r2.demos]
    assert step.strategy == "active:entropy"


def test_cli_plan_runs_the_next_active_round_from_the_labels_given(tmp_path, tiny_task, gold, capsys):
    import json

    from neuroshot.cli import main

    from conftest import build_char_tokenizer, build_tiny_llama

    folder = tmp_path / "tiny"
    build_tiny_llama().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(IDS, TEXTS)))
    labeled = tmp_path / "labels.jsonl"
    labeled.write_text("".join(json.dumps({"id": i, "label": gold[i]}) + "\n" for i in IDS[:3]))
    argv = ["plan", str(pool), "--labels", "A,B,C", "--budget", "2", "--strategy", "active:entropy", "--model",
            str(folder), "--labeled", str(labeled), "--top-k", "8", "--critical-fraction", "0.1",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "next.jsonl")]
    assert main(argv) == 0
    planned = [json.loads(line)["id"] for line in (tmp_path / "next.jsonl").read_text().splitlines()]
    assert len(planned) == 2 and not set(planned) & set(IDS[:3])
    assert "plan: active:entropy" in capsys.readouterr().out


def test_rounds_without_reprobing_hand_the_labels_to_the_base(tiny_lm, tiny_task, gold, monkeypatch):
    """``reprobe=False``: every round plans on the zero-shot probe (no further probe), and
    ``adaptive_coverage`` switches from its default weight to the one the labels so far choose."""
    zero_shot = probe(tiny_lm, tiny_task, TEXTS, ids=IDS, progress=False, **PROBE)
    monkeypatch.setattr("neuroshot.strategies.active.probe", lambda *a, **k: pytest.fail("re-probed"))
    strategy = get_strategy("active:adaptive_coverage", reprobe=False, min_labels=2)
    assert strategy.get_params()["reprobe"] is False and strategy.base_params == {"min_labels": 2}
    weights = []
    base = strategy._base
    original = base._select

    def spy(probed, candidates, budget, labeled, rng):
        picks = original(probed, candidates, budget, labeled, rng)
        weights.append((len(labeled), base.embedding_weight_))
        assert probed.ids == zero_shot.ids and np.array_equal(probed.probs, zero_shot.probs)
        return picks

    monkeypatch.setattr(base, "_select", spy)
    result = active_plan(tiny_lm, tiny_task, TEXTS, strategy, 6, annotator=SimulatedAnnotator(gold), ids=IDS,
                         rounds=3, pool=zero_shot, probe_kwargs=PROBE, progress=False)
    assert len(set(result.indices)) == 6 and all(r.rows == list(range(len(TEXTS))) for r in result.rounds)
    assert [n for n, _ in weights] == [0, 2, 4] and weights[0][1] == 0.5
    from neuroshot.retrieval import HybridRetriever

    annotated = result.indices[:4]
    expected = HybridRetriever().fit(zero_shot.subset(annotated), [gold[IDS[i]] for i in annotated])
    assert weights[2][1] == expected.embedding_weight_  # the retriever's own leave-one-out choice
    from neuroshot import neighbours

    assert HybridRetriever.WEIGHTS == neighbours.MIXING_WEIGHTS  # the planner chooses among the same weights
    assert HybridRetriever.MIN_STANDARDIZE == neighbours.STANDARDIZE_FROM


def test_rounds_around_an_active_strategy_run_its_base_with_its_settings():
    from neuroshot.strategies.active import ActiveStrategy

    inner = get_strategy("active:adaptive_coverage", reprobe=False, context_demos=4, min_labels=3)
    rounds = ActiveStrategy.around(inner, progress=True)
    assert rounds._base is inner._base and rounds.reprobe is False and rounds.context_demos == 4
    assert ActiveStrategy.around(inner, context_demos=2).context_demos == 2  # what the caller gives wins
    plain = ActiveStrategy.around(get_strategy("entropy"))
    assert plain.base == "entropy" and plain.reprobe is True
