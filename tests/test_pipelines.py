"""Named pipelines, paired bootstrap comparisons, the hybrid retriever, and `neuroshot evaluate --pipeline`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from neuroshot.errors import NeuroshotError
from neuroshot.experiment import Experiment
from neuroshot.pipelines import PIPELINES, Pipeline, get_pipeline
from neuroshot.stats import compare_records, mean_difference, paired_difference

from test_evaluate import POOL_TEXTS, TEST_TEXTS, _records, cli_files  # noqa: F401  (a fixture)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


# ------------------------------------------------------------------------------ statistics


def test_paired_difference_of_identical_and_opposite_scores():
    a = np.array([[1, 0, 1, 1], [0, 0, 1, 1]])
    same = paired_difference(a, a)
    assert (same.mean, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "tie")
    win = paired_difference(np.ones((3, 50)), np.zeros((3, 50)))
    assert (win.mean, win.low, win.high, win.verdict) == (1.0, 1.0, 1.0, "win")
    assert paired_difference(np.zeros(50), np.ones(50)).verdict == "loss"


def test_paired_difference_interval_covers_the_truth_and_narrows_with_items():
    rng = np.random.default_rng(0)
    small, large = [], []
    for n, out in ((100, small), (1600, large)):
        b = rng.random((3, n)) < 0.5
        a = b | (rng.random((3, n)) < 0.1)  # a is right wherever b is, and on ~5% more items
        out.append(paired_difference(a, b, seed=1))
    d = large[0]
    assert d.low <= d.mean <= d.high and d.verdict == "win"
    assert 0.03 < d.mean < 0.07 and d.low < 0.05 < d.high
    assert (d.high - d.low) < (small[0].high - small[0].low) / 2
    # the seeds' spread counts: a pipeline that wins on one seed and loses on two is not a clear win
    mixed = paired_difference([[1] * 100, [0] * 100, [0] * 100], [[0] * 100, [0] * 100, [0] * 100])
    assert mixed.low == 0.0 and mixed.verdict == "tie"


def test_mean_difference_and_bad_input():
    cells = [paired_difference(np.ones(30), np.zeros(30)), paired_difference(np.zeros(30), np.zeros(30))]
    both = mean_difference(cells)
    assert both.mean == pytest.approx(0.5) and both.low == pytest.approx(0.5)
    with pytest.raises(NeuroshotError, match="same shape"):
        paired_difference(np.ones(3), np.ones(4))
    with pytest.raises(NeuroshotError, match="NaN"):
        paired_difference([1.0, np.nan], [1.0, 0.0])
    with pytest.raises(NeuroshotError, match="no cells"):
        mean_difference([])


# ------------------------------------------------------------------------------ pipelines


def test_named_pipelines_and_strategy_names():
    assert {"recommended", "random+knn", "votek+knn", "ideal+knn"} <= set(PIPELINES)
    assert get_pipeline("random+knn") == Pipeline("random+knn", "random", "embedding",
                                                  description=PIPELINES["random+knn"].description)
    assert get_pipeline("kmeans").strategy == "kmeans"
    recommended = get_pipeline("recommended")
    assert recommended.make_strategy().name == recommended.strategy
    assert recommended.make_retriever().name == recommended.retriever
    with pytest.raises(NeuroshotError, match="unknown pipeline 'magic'"):
        get_pipeline("magic")


def test_experiment_runs_pipelines_with_their_own_retriever(tiny_lm, tiny_task, monkeypatch):
    import neuroshot.experiment as experiment

    pool = _records(tiny_task, POOL_TEXTS, "p")
    test = _records(tiny_task, TEST_TEXTS, "t")
    exp = Experiment(tiny_lm, tiny_task, pool, test, regime="per-query", k=2, retriever="neuron", progress=False,
                     probe_kwargs={"critical_fraction": 0.1})
    used = []
    real = Pipeline.make_retriever
    monkeypatch.setattr(Pipeline, "make_retriever", lambda self, seed=None: used.append(self.retriever) or real(self, seed))
    knn = exp.run_one(get_pipeline("random+knn"), 4, seed=0)
    plain = exp.run_one("random", 4, seed=0)
    assert used == ["embedding", "neuron"]
    assert (knn.pipeline, knn.strategy, knn.retriever) == ("random+knn", "random", "embedding")
    assert (plain.pipeline, plain.retriever) == ("random", "neuron") and plain.ids == knn.ids
    assert len(knn.predicted) == len(test) and set(knn.predicted) <= set(tiny_task.labels)
    hybrid = exp.run_one(Pipeline("h", "random", "hybrid", retriever_params={"embedding_weight": "auto"}), 8, seed=0)
    assert hybrid.retriever_fitted["embedding_weight_"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    gold = [r.label for r in test]
    assert knn.correct(gold).mean() == pytest.approx(knn.accuracy)
    (versus,) = compare_records([knn, plain], gold, "random+knn")
    assert versus.other == "random" and versus.budget == 4
    assert versus.difference.mean == pytest.approx(knn.accuracy - plain.accuracy)
    assert experiment.ExperimentRecord(**{**vars(knn)}).to_row()["pipeline"] == "random+knn"


# ------------------------------------------------------------------------------ hybrid retriever


def test_hybrid_retriever_between_embedding_and_neuron(tiny_lm, tiny_task):
    from neuroshot.embeddings import with_embeddings
    from neuroshot.probing import probe
    from neuroshot.retrieval import HybridRetriever, NeuronRetriever, label_separation
    from neuroshot.retrieval import EmbeddingRetriever

    pool = with_embeddings(probe(tiny_lm, tiny_task, POOL_TEXTS, critical_fraction=0.2, progress=False))
    queries = with_embeddings(probe(tiny_lm, tiny_task, TEST_TEXTS, critical_fraction=0.2, progress=False))
    labels = [tiny_task.labels[i % 3] for i in range(len(pool))]

    def order(retriever):
        return [[r.index for r in row] for row in retriever.fit(pool, labels).retrieve(queries, 5)]

    assert order(HybridRetriever(embedding_weight=1.0)) == order(EmbeddingRetriever())
    assert order(HybridRetriever(embedding_weight=0.0, mmr=0.7)) == order(NeuronRetriever(mmr=0.7))
    mixed = HybridRetriever(embedding_weight=0.5).fit(pool, labels)
    sim = mixed._similarities(queries)[0]
    emb = queries.embeddings @ pool.embeddings.T
    neuron = NeuronRetriever(mmr=1.0).fit(pool, labels)._similarities(queries)[0]
    assert np.allclose(sim, 0.5 * emb + 0.5 * neuron, atol=1e-5)
    with pytest.raises(NeuroshotError, match="embedding_weight"):
        HybridRetriever(embedding_weight=1.5)
    # a neuron that separates the labels weighs more than one that does not
    values = np.array([[1.0, 0.3], [1.1, -0.2], [5.0, 0.1], [5.2, -0.1]])
    weights = label_separation(values, ["a", "a", "b", "b"])
    assert weights[0] > 10 * weights[1] and weights.mean() == pytest.approx(1.0)
    assert np.all(label_separation(values, ["a", "b", "c", "d"]) == 1.0)  # nothing learned from single items


def test_hybrid_retriever_chooses_its_weight_from_the_annotated_labels(tiny_lm, tiny_task):
    from dataclasses import replace

    from neuroshot.probing import probe
    from neuroshot.retrieval import HybridRetriever

    labels = ["A", "B", "C"] * 4
    same = (np.array(labels)[:, None] == np.array(labels)[None, :]).astype(float)
    retriever = HybridRetriever(neighbours=3)
    retriever.labels_ = labels
    # embeddings that tell the labels apart, neurons that mislead: the most embedding-heavy weights win,
    # ties going to the middle
    assert retriever._choose_weight(same, 1.0 - same) == 0.75
    assert retriever._choose_weight(1.0 - same, same) == 0.25
    assert retriever._choose_weight(same[:5, :5], same[:5, :5]) == 0.5  # too few labels to choose from

    pool = probe(tiny_lm, tiny_task, POOL_TEXTS, critical_fraction=0.2, progress=False)
    pool_labels = [tiny_task.labels[i % 3] for i in range(len(pool))]
    telling = np.eye(3)[[i % 3 for i in range(len(pool))]]
    fitted = HybridRetriever(neighbours=3).fit(replace(pool, embeddings=telling), pool_labels)
    assert fitted.embedding_weight_ in HybridRetriever.WEIGHTS and fitted.embedding_weight_ >= 0.5
    with pytest.raises(NeuroshotError, match="embedding_weight"):
        HybridRetriever(embedding_weight="sometimes")


def test_coverage_in_the_hybrid_space(tiny_lm, tiny_task):
    from neuroshot.embeddings import with_embeddings
    from neuroshot.probing import probe
    from neuroshot.strategies import get_strategy
    from neuroshot.strategies.coverage import _centred_signatures, _space

    pool = with_embeddings(probe(tiny_lm, tiny_task, POOL_TEXTS, critical_fraction=0.2, progress=False))
    centred = _centred_signatures(pool)
    x = _space(pool, centred, 0.3)
    emb = pool.embeddings - pool.embeddings.mean(0)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    expected = 0.3 * unit(emb) @ unit(emb).T + 0.7 * unit(centred) @ unit(centred).T
    assert np.allclose(x @ x.T, expected, atol=1e-5)
    plans = {w: get_strategy("neuron_coverage", embedding_weight=w).plan(pool, 5, seed=0).indices for w in (0.0, 1.0)}
    assert all(len(set(p)) == 5 for p in plans.values())
    with pytest.raises(NeuroshotError, match="embedding_weight"):
        get_strategy("neuron_coverage", embedding_weight=-0.1)


# ------------------------------------------------------------------------------ CLI and benchmark summary


def test_cli_evaluate_compares_pipelines_with_intervals(tmp_path, capsys, cli_files):
    from neuroshot.cli import main

    out = tmp_path / "runs.jsonl"
    argv = ["evaluate", *cli_files, "--pipeline", "recommended", "--pipeline", "random+knn", "--regime", "per-query",
            "--k", "2", "--budget", "3", "--budget", "5", "--seeds", "0", "1", "--critical-fraction", "0.1",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "recommended minus each other, paired over test items and seeds" in text
    lines = [line for line in text.splitlines() if "random+knn" in line and "[" in line]
    assert len(lines) == 3 and any("all budgets" in line for line in lines)  # budgets 3 and 5, and their mean
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["pipeline"] for r in rows} == {"recommended", "random+knn"} and len(rows) == 8
    assert all(len(r["predicted"]) == len(TEST_TEXTS) for r in rows)
    assert main(["evaluate", *cli_files, "--pipeline", "magic", "--budget", "2"]) == 2
    assert "unknown pipeline 'magic'" in capsys.readouterr().err


def test_results_page_sections(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    from _results import update_section

    page = tmp_path / "RESULTS.md"
    update_section(page, "quality", "quality v1")
    update_section(page, "head-to-head", "h2h v1", first=True)
    update_section(page, "quality", "quality v2")
    text = page.read_text()
    assert text.index("h2h v1") < text.index("quality v2") and "quality v1" not in text
    assert text.count("<!-- section: quality -->") == 1


def test_head_to_head_pipeline_specs():
    sys.path.insert(0, str(BENCHMARKS))
    import head_to_head

    assert head_to_head._pipeline("votek+knn") == get_pipeline("votek+knn")
    ordered = head_to_head._pipeline('votek+order={"strategy": "votek", "order": "entropy"}')
    assert (ordered.name, ordered.strategy, ordered.retriever, ordered.order) == ("votek+order", "votek", "embedding", "entropy")
    as_planned = head_to_head._pipeline('rec-plan={"base": "recommended", "order": "plan"}')
    assert as_planned.name == "rec-plan" and as_planned.order == "plan"
    recommended = get_pipeline("recommended")
    assert (as_planned.strategy, as_planned.strategy_params, as_planned.retriever, as_planned.retriever_params) == \
        (recommended.strategy, recommended.strategy_params, recommended.retriever, recommended.retriever_params)
    with pytest.raises(NeuroshotError, match="unknown order"):
        head_to_head._pipeline('x={"base": "recommended", "order": "alphabetical"}')


def test_head_to_head_summary_judges_paired_cells(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    import head_to_head

    rng = np.random.default_rng(0)
    rows = []
    for name, edge in (("trec", 0.4), ("sst2", 0.0)):
        truth = rng.random(300) < 0.5
        for pipeline in ("recommended", "random+knn"):
            for budget in (18, 50):
                for seed in (0, 1, 2):
                    right = truth | ((rng.random(300) < edge) if pipeline == "recommended" else False)
                    rows.append(dict(model="default", set=name, regime="per-query", pipeline=pipeline, budget=budget,
                                     seed=seed, k=4, validation=0, accuracy=float(right.mean()),
                                     correct="".join("1" if c else "0" for c in right), command="cmd"))
    out = tmp_path / "h2h"
    out.mkdir()
    with (out / "results.jsonl").open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    md = tmp_path / "RESULTS.md"
    args = head_to_head.parse_args(["--out", str(out), "--markdown", str(md), "--summarize"])
    text = head_to_head.summarize(args)
    assert text in md.read_text()
    assert f"from `{out / 'results.jsonl'}`" in text  # the results file it read, not the default one
    (overall,) = [line for line in text.splitlines() if line.startswith("| all cells |")]
    assert "**+" in overall  # a significant win over all cells
    assert "| win / tie / loss (sets) | 1 / 1 / 0 |" in text
    assert "| sst2 | +0.0 [+0.0, +0.0] |" in text  # identical answers: no difference, no verdict
    assert (out / "forest_default_per-query_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_mean_std_is_the_one_spread_format():
    from neuroshot.stats import mean_std

    assert mean_std([0.5, 0.7]) == "0.600 ± 0.100"
    assert mean_std([0.5]) == "0.500" and mean_std([]) == "-"
    assert mean_std([1, 2, 3], digits=1) == "2.0 ± 0.8"


def test_head_to_head_flags_accuracy_that_falls_with_more_labels():
    """The "more labels never worse" check: a budget significantly below 18 labels is named, a tie is not,
    and small pools (the cookbook regime) are judged apart from the 600-item pools."""
    sys.path.insert(0, str(BENCHMARKS))
    import head_to_head

    rng = np.random.default_rng(1)
    truth = rng.random(300) < 0.7

    def row(budget, right, pool_size=600, seed=0):
        return dict(model="default", set="sst2", regime="per-query", pipeline="recommended", budget=budget,
                    seed=seed, pool_size=pool_size, validation=0, correct="".join("1" if c else "0" for c in right))

    worse = truth & (rng.random(300) < 0.6)
    rows = [row(18, truth), row(50, truth), row(100, worse), row(18, truth, 200), row(50, worse, 200)]
    drops = head_to_head.budget_drops(rows, "default", "per-query")
    assert [(name, budget) for name, budget, _ in drops] == [("sst2", 100)] and drops[0][2].high < 0
    small = head_to_head.budget_drops(rows, "default", "per-query, small pool")
    assert [(name, budget) for name, budget, _ in small] == [("sst2", 50)]
    assert head_to_head.budget_drops([row(18, truth), row(100, truth, seed=1)], "default", "per-query") == []


def test_head_to_head_compares_with_the_zero_shot_answer_at_every_budget():
    """A set's one zero-shot row (budget 0) is paired with the reference at each budget and each of its
    seeds; other sets, and validation rows, get none."""
    sys.path.insert(0, str(BENCHMARKS))
    import head_to_head

    rng = np.random.default_rng(2)
    zero_shot = rng.random(300) < 0.8
    bits = lambda right: "".join("1" if c else "0" for c in right)  # noqa: E731

    def row(name, pipeline, budget, seed, right, validation=0):
        return dict(model="default", set=name, regime="per-query", pipeline=pipeline, budget=budget, seed=seed,
                    pool_size=600, validation=validation, correct=bits(right))

    worse = zero_shot & (rng.random(300) < 0.8)
    rows = [row("sst2", head_to_head.ZERO_SHOT, 0, 0, zero_shot), row("trec", "recommended", 18, 0, zero_shot),
            row("sst2", head_to_head.ZERO_SHOT, 0, 0, worse, validation=100)]
    rows += [row("sst2", "recommended", budget, seed, zero_shot if budget == 18 else worse)
             for budget in (18, 100) for seed in (0, 1)]
    comps = [c for c in head_to_head.comparisons(rows, "recommended", 0) if c["baseline"] == head_to_head.ZERO_SHOT]
    assert [(c["set"], c["budget"], c["seeds"]) for c in comps] == [("sst2", 18, [0, 1]), ("sst2", 100, [0, 1])]
    assert comps[0]["diff"].mean == 0 and comps[1]["diff"].high < 0
    assert comps[1]["baseline_acc"] == pytest.approx(zero_shot.mean())


def test_budget_diagnosis_neighbour_agreement_and_zero_shot():
    sys.path.insert(0, str(BENCHMARKS))
    import budget_diagnosis
    from neuroshot.data import Record
    from neuroshot.task import Demonstration

    queries = [Record("a", "one", "pos"), Record("b", "two", "neg")]
    demos = [[Demonstration("x", "pos"), Demonstration("y", "neg")], [Demonstration("z", "neg")] * 2]
    assert budget_diagnosis.label_agreement(queries, demos) == pytest.approx(0.75)

    class Probe:  # what zero_shot_accuracy reads of a ProbeResult
        task = type("T", (), {"labels": ["neg", "pos"]})()
        predicted = np.array([1, 1])

    assert budget_diagnosis.zero_shot_accuracy(Probe(), queries) == 0.5

    from neuroshot.retrieval import NeuronRetriever

    class Fitted:  # what balance="auto" (and the diagnosis) reads of a fitted neuron/hybrid retriever
        MIN_AUTO, neighbours = 4, 1
        _groups = np.array([0, 0, 1, 1, 2])  # the lone item of label 2 is not judged
        _pair = np.array([[1, .9, .1, .1, .8], [.9, 1, .1, .1, .1], [.1, .1, 1, .2, .9], [.1, .1, .2, 1, .5],
                          [.8, .1, .9, .5, 1]])
        annotated_ = type("P", (), {"probs": np.eye(3)[[0, 1, 1, 1, 2]]})()

    zero_shot, agreement = NeuronRetriever._balance_evidence(Fitted())
    assert zero_shot == 0.75 and agreement == 0.5  # items 0, 1 find each other; 2 and 3 find item 4
    Fitted.MIN_AUTO = 5
    assert NeuronRetriever._balance_evidence(Fitted()) is None  # only 4 items can be judged
    with pytest.raises(SystemExit):
        budget_diagnosis.parse_args(["--validation", "0"])  # the test split is for the no-prompt diagnosis only
    assert budget_diagnosis.parse_args(["--validation", "0", "--neighbours"]).out == budget_diagnosis.NEIGHBOURS_OUT


def test_budget_diagnosis_scores_each_distinct_prompt_once(tiny_lm, tiny_task):
    sys.path.insert(0, str(BENCHMARKS))
    import budget_diagnosis
    from neuroshot.data import Record
    from neuroshot.evaluate import predict_proba_per_query
    from neuroshot.task import Demonstration

    scores = budget_diagnosis.PromptScores(tiny_lm, tiny_task)
    queries = [Record("a", "the first text", tiny_task.labels[0]), Record("b", "another text", tiny_task.labels[1]),
               Record("c", "the first text", tiny_task.labels[0])]
    demos = [[Demonstration("an example", tiny_task.labels[0])]] * 3
    first, scored = scores.accuracy(queries, demos)
    assert scored == 2  # the third prompt is the first one again
    again, rescored = scores.accuracy(queries, demos)
    assert rescored == 0 and list(again) == list(first)
    direct = predict_proba_per_query(tiny_lm, tiny_task, [q.text for q in queries], demos).argmax(1)
    assert list(first) == [int(d) == tiny_task.label_index(q.label) for d, q in zip(direct, queries)]
