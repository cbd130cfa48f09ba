"""Evaluation: prefix-KV reuse equals full prompts, per-query scoring, metrics, experiments, hygiene, plots, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from neuroshot.annotation import SimulatedAnnotator
from neuroshot.data import Record
from neuroshot.errors import NeuroshotError
from neuroshot.models import PREFIX_KWARG
from neuroshot.evaluate import (CONTENT_FREE, content_free_per_query, evaluate_per_query, evaluate_static, metrics,
                                predict_proba_per_query, predict_proba_static, shared_prefix)
from neuroshot.experiment import (Experiment, ExperimentRecord, label_efficiency, learning_curves,
                                  write_records)
from neuroshot.scoring import calibrate, encode, predict_proba
from neuroshot.task import Demonstration, Task

from conftest import SHARED_DATA, TINY_TEXTS, build_tiny_lm, require_shared

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread_on_tiny_models(request):
    """Tiny models run faster on one torch thread; the real model keeps all of them."""
    if request.node.get_closest_marker("e2e"):
        yield
    else:
        request.getfixturevalue("single_thread")
        yield


def _demos(task: Task, n: int = 4) -> list[Demonstration]:
    return [Demonstration(t, task.labels[i % len(task.labels)]) for i, t in enumerate(TINY_TEXTS[len(TINY_TEXTS) - n:])]


# ------------------------------------------------------------------------------ static: prefix KV reuse


@pytest.mark.parametrize("fixture", ["tiny_task", "tiny_task_multi"])
@pytest.mark.parametrize("n_demos", [0, 3])
def test_prefix_reuse_equals_full_prompts(request, tiny_lm, fixture, n_demos):
    task = request.getfixturevalue(fixture)
    demos = _demos(task, n_demos)
    enc = encode(tiny_lm, task, TINY_TEXTS, demos)
    prefix, ok = shared_prefix(tiny_lm, task, demos, enc.prompts)
    assert ok.all() and len(prefix) > 5  # the cached path is really taken for every query
    full = predict_proba(tiny_lm, task, TINY_TEXTS, demos, batch_size=5)
    for batch_size in (1, 5, 16):
        reused = predict_proba_static(tiny_lm, task, TINY_TEXTS, demos, batch_size=batch_size)
        np.testing.assert_allclose(reused, full, atol=1e-5)
    assert not np.allclose(full, full.mean(0))  # the test could fail: the rows really differ


def test_prefix_reuse_holds_when_max_text_tokens_cuts_the_demonstrations(tiny_lm, tiny_task_multi):
    task = Task(labels=tiny_task_multi.labels, instruction=tiny_task_multi.instruction, max_text_tokens=6)
    demos = [Demonstration(t * 3, task.labels[i % 3]) for i, t in enumerate(TINY_TEXTS[-3:])]
    enc = encode(tiny_lm, task, TINY_TEXTS, demos)
    prefix, ok = shared_prefix(tiny_lm, task, demos, enc.prompts)
    assert ok.all()  # the prefix is built from the same cut demonstrations as the prompts
    shown = tiny_lm.tokenizer.decode(prefix, skip_special_tokens=True)
    assert all(d.text[:6] in shown and d.text[:7] not in shown for d in demos)
    full = predict_proba(tiny_lm, task, TINY_TEXTS, demos, batch_size=5)
    np.testing.assert_allclose(predict_proba_static(tiny_lm, task, TINY_TEXTS, demos, batch_size=4), full, atol=1e-5)

def test_prefix_is_computed_once_and_queries_run_only_their_tokens(tiny_task):
    lm = build_tiny_lm()
    calls: list[tuple[int, int]] = []
    shared: list[bool] = []

    def record(module, args, kw) -> None:
        calls.append(tuple(kw["input_ids"].shape))
        shared.append(PREFIX_KWARG in kw)

    lm.model.register_forward_pre_hook(record, with_kwargs=True)
    demos = _demos(tiny_task, 4)
    prompts = encode(lm, tiny_task, TINY_TEXTS, demos).prompts
    prefix, _ = shared_prefix(lm, tiny_task, demos, prompts)
    predict_proba_static(lm, tiny_task, TINY_TEXTS, demos, batch_size=4)
    assert calls[0] == (1, len(prefix))
    longest_query = max(map(len, prompts)) - len(prefix)
    assert len(calls) == 1 + 3 and max(width for _, width in calls[1:]) == longest_query  # 3 batches of queries
    assert shared == [False, True, True, True]  # the prefix's cache stays one row, never copied per query
    calls.clear()
    predict_proba_static(lm, tiny_task, TINY_TEXTS, demos, batch_size=4, reuse_prefix=False)
    assert len(calls) == 3 and all(width > len(prefix) for _, width in calls)


def test_prompts_whose_tokens_differ_at_the_boundary_are_scored_in_full(tiny_lm, tiny_task, monkeypatch):
    demos = _demos(tiny_task, 2)
    enc = encode(tiny_lm, tiny_task, TINY_TEXTS, demos)
    prefix, ok = shared_prefix(tiny_lm, tiny_task, demos, enc.prompts)
    broken = [list(p) for p in enc.prompts]
    broken[3][len(prefix) - 5] += 1  # as if tokenisation had merged across the boundary
    _, ok = shared_prefix(tiny_lm, tiny_task, demos, broken)
    assert ok.tolist() == [i != 3 for i in range(len(TINY_TEXTS))]

    import neuroshot.evaluate as ev

    real = ev.shared_prefix
    monkeypatch.setattr(ev, "shared_prefix", lambda *a: (real(*a)[0], np.arange(len(TINY_TEXTS)) % 3 != 0))
    mixed = predict_proba_static(tiny_lm, tiny_task, TINY_TEXTS, demos, batch_size=4)
    np.testing.assert_allclose(mixed, predict_proba(tiny_lm, tiny_task, TINY_TEXTS, demos), atol=1e-5)


def test_evaluate_static_calibrated_matches_core_calibration(tiny_lm, tiny_task_multi):
    demos = _demos(tiny_task_multi, 3)
    gold = [tiny_task_multi.labels[i % 3] for i in range(len(TINY_TEXTS))]
    probs = predict_proba(tiny_lm, tiny_task_multi, TINY_TEXTS, demos)
    expected = calibrate(probs, predict_proba(tiny_lm, tiny_task_multi, CONTENT_FREE, demos).mean(0)).argmax(1)
    result = evaluate_static(tiny_lm, tiny_task_multi, TINY_TEXTS, gold, demos, calibrated=True, confusion=True)
    reference = metrics(tiny_task_multi, gold, expected, confusion=True)
    assert (result.accuracy, result.macro_f1) == (reference.accuracy, reference.macro_f1)
    assert result.recall == reference.recall
    np.testing.assert_array_equal(result.confusion, reference.confusion)
    plain = evaluate_static(tiny_lm, tiny_task_multi, TINY_TEXTS, gold, demos)
    assert plain.accuracy == metrics(tiny_task_multi, gold, probs.argmax(1)).accuracy


# ------------------------------------------------------------------------------ per-query


def test_per_query_equals_one_prompt_at_a_time(tiny_lm, tiny_task_multi):
    texts = TINY_TEXTS[:6]
    pool = TINY_TEXTS[6:]
    per_query = [[Demonstration(pool[(q + j) % 6], tiny_task_multi.labels[(q * j) % 3]) for j in range(q % 3)]
                 for q in range(len(texts))]
    per_query[4] = per_query[1]  # two queries share a demonstration set
    batched = predict_proba_per_query(tiny_lm, tiny_task_multi, texts, per_query, batch_size=4)
    one_by_one = np.concatenate([predict_proba(tiny_lm, tiny_task_multi, [t], d) for t, d in zip(texts, per_query)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    bias = content_free_per_query(tiny_lm, tiny_task_multi, per_query)
    expected = np.stack([predict_proba(tiny_lm, tiny_task_multi, CONTENT_FREE, d).mean(0) for d in per_query])
    np.testing.assert_allclose(bias, expected, atol=1e-5)
    gold = ["yes", "no", "maybe", "yes", "no", "maybe"]
    result = evaluate_per_query(tiny_lm, tiny_task_multi, texts, gold, per_query, calibrated=True)
    assert result.accuracy == metrics(tiny_task_multi, gold, calibrate(one_by_one, expected).argmax(1)).accuracy
    with pytest.raises(NeuroshotError, match="demonstration lists"):
        predict_proba_per_query(tiny_lm, tiny_task_multi, texts, per_query[:2])


@pytest.mark.parametrize("fixture", ["tiny_task", "tiny_task_multi"])
def test_per_query_shares_the_instruction_prefix_and_scores_the_same(tiny_lm, fixture, request, monkeypatch):
    import neuroshot.evaluate as evaluate

    task = request.getfixturevalue(fixture)
    texts = TINY_TEXTS[:7]
    per_query = [_demos(task, 1 + q % 3) for q in range(len(texts))]
    prefixes = []
    real_cache = evaluate._prefix_cache
    monkeypatch.setattr(evaluate, "_prefix_cache", lambda lm, prefix: prefixes.append(list(prefix)) or
                        real_cache(lm, prefix))
    shared = predict_proba_per_query(tiny_lm, task, texts, per_query, batch_size=3)
    instruction = tiny_lm.tokenizer(task.prompt("", []))["input_ids"]
    assert len(prefixes) == 1 and len(prefixes[0]) >= evaluate.MIN_SHARED_PREFIX
    assert prefixes[0] == instruction[:len(prefixes[0])]  # the instruction, split on the prompts' own tokens
    full = predict_proba_per_query(tiny_lm, task, texts, per_query, batch_size=3, reuse_prefix=False)
    assert len(prefixes) == 1
    np.testing.assert_allclose(shared, full, atol=1e-5)


def test_common_prefix_length_leaves_every_prompt_a_token():
    from neuroshot.evaluate import _common_prefix_length

    assert _common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert _common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert _common_prefix_length([[7], [7, 8]]) == 0
    assert _common_prefix_length([[1, 2], [3, 2]]) == 0


# ------------------------------------------------------------------------------ metrics


def test_metrics_confusion_recall_and_f1():
    task = Task(labels=("a", "b", "c"))
    gold = ["a", "a", "b", "b", "c", "a"]
    predicted = [0, 1, 1, 1, 0, 0]  # a a | b b | a  -> c never predicted
    r = metrics(task, gold, predicted, confusion=True)
    assert r.accuracy == pytest.approx(4 / 6)
    assert r.recall == {"a": pytest.approx(2 / 3), "b": 1.0, "c": 0.0}
    f1 = [2 * 2 / (3 + 3), 2 * 2 / (2 + 3), 0.0]
    assert r.macro_f1 == pytest.approx(np.mean(f1))
    np.testing.assert_array_equal(r.confusion, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert "gold" in r.confusion_table() and r.confusion_table().count("\n") == 4
    assert metrics(task, gold, predicted).confusion is None
    with pytest.raises(NeuroshotError, match="gold labels for"):
        metrics(task, gold[:2], predicted)


# ------------------------------------------------------------------------------ label efficiency and plots


def _rec(strategy, budget, seed, acc, regime="static"):
    return ExperimentRecord(strategy, budget, seed, regime, acc, acc / 2, 0.1)


def test_write_records_csv_rows_and_jsonl_fields(tmp_path):
    a = ExperimentRecord("random", 5, 0, "static", 0.5, 0.25, 1.0, ids=["p1", "p2"], recall={"x": 1.0},
                         predicted=["x", "y"])
    b = ExperimentRecord("votek", 5, 0, "static", 0.75, 0.5, 2.0, recall={"x": 0.5, "y": 1.0})
    write_records(tmp_path / "r.csv", [a, b])
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["strategy"] for r in rows] == ["random", "votek"] and rows[0]["ids"] == "p1 p2"
    assert rows[1]["recall:y"] == "1.0" and rows[0]["recall:y"] == "" and "predicted" not in rows[0]
    write_records(tmp_path / "r.jsonl", [a, b])
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert ExperimentRecord(**lines[0]) == a and lines[1]["recall"] == {"x": 0.5, "y": 1.0}


def test_label_efficiency():
    curves = {"random": {5: [0.2, 0.3], 10: [0.3, 0.4], 20: [0.5, 0.4]},  # target: 0.45 at 20
              "good": {5: [0.4, 0.5], 10: [0.6, 0.6], 20: [0.7, 0.7]},
              "bad": {5: [0.1], 10: [0.2], 20: [0.3]}}
    eff = label_efficiency(curves)
    assert eff["good"].budget == 5 and eff["good"].saving == 4.0 and eff["good"].target == pytest.approx(0.45)
    assert eff["random"].budget == 20 and eff["bad"].budget is None
    assert "does not reach" in str(eff["bad"]) and "4x fewer labels" in str(eff["good"])
    assert "the same budget" in str(eff["random"])
    records = [_rec(s, b, i, v) for s, c in curves.items() for b, vs in c.items() for i, v in enumerate(vs)]
    assert learning_curves(records) == curves
    assert label_efficiency(records)["good"].budget == 5
    with pytest.raises(NeuroshotError, match="baseline 'random'"):
        label_efficiency({"good": curves["good"]})
    with pytest.raises(NeuroshotError, match="mix regimes"):
        learning_curves(records + [_rec("good", 5, 9, 0.1, "per-query")])


def test_plots_are_png(tmp_path, tiny_lm, tiny_task):
    from neuroshot.plots import plot_critical_neurons, plot_learning_curves
    from neuroshot.probing import probe

    records = [_rec(s, b, seed, 0.1 * b / 5 + 0.01 * seed + (s == "x")) for s in ("random", "x")
               for b in (5, 10) for seed in range(3)]
    path = plot_learning_curves(records, tmp_path / "curve.png", spread="std")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    pool = probe(tiny_lm, tiny_task, TINY_TEXTS, progress=False, critical_fraction=0.1)
    path = plot_critical_neurons(pool, tmp_path / "critical.png")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(NeuroshotError, match=".png"):
        plot_learning_curves(records, tmp_path / "curve.pdf")
    assert not (tmp_path / "curve.pdf").exists()


# ------------------------------------------------------------------------------ experiments and hygiene


def _records(task: Task, texts, prefix: str, offset: int = 0) -> list[Record]:
    return [Record(f"{prefix}{i}", t, task.labels[(i + offset) % len(task.labels)]) for i, t in enumerate(texts)]


POOL_TEXTS = TINY_TEXTS + ["another pool item here", "short one", "questions about tax", "a final text"]
TEST_TEXTS = ["is this a test?", "the dog barked", "prices rose again", "lovely weather"]


def _experiment(lm, task, pool, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("probe_kwargs", {"critical_fraction": 0.1})
    return Experiment(lm, task, pool, _records(task, TEST_TEXTS, "t"), **kw)


@pytest.mark.parametrize("regime", ["static", "per-query"])
def test_experiment_cell(tiny_lm, tiny_task, regime):
    pool = _records(tiny_task, POOL_TEXTS, "p")
    exp = _experiment(tiny_lm, tiny_task, pool, regime=regime, k=2, calibrated=True)
    annotator = SimulatedAnnotator.from_records(pool)
    rec = exp.run_one("neuron_coverage", 4, seed=1, annotator=annotator)
    assert (rec.strategy, rec.budget, rec.seed, rec.regime, rec.n_test) == ("neuron_coverage", 4, 1, regime, 4)
    assert len(rec.ids) == 4 and annotator.revealed == set(rec.ids)
    assert 0 <= rec.accuracy <= 1 and rec.accuracy_calibrated is not None and rec.seconds > 0
    assert rec.k == (2 if regime == "per-query" else None)
    if regime == "static":  # the same numbers as evaluating the annotated items directly
        labels = {r.id: r.label for r in pool}
        text = {r.id: r.text for r in pool}
        demos = [Demonstration(text[i], labels[i]) for i in rec.ids]
        direct = evaluate_static(tiny_lm, tiny_task, TEST_TEXTS, [r.label for r in exp.test], demos)
        assert rec.accuracy == direct.accuracy and rec.macro_f1 == direct.macro_f1
    records = exp.run(["random"], [2, 3], [0, 1])
    assert [(r.budget, r.seed) for r in records] == [(2, 0), (2, 1), (3, 0), (3, 1)]


@pytest.mark.parametrize("retriever", ["neuron", "random"])
def test_the_same_plan_is_scored_once_unless_the_retriever_is_seeded(tiny_lm, tiny_task, monkeypatch, retriever):
    import neuroshot.experiment as experiment

    calls = []
    real = experiment.predict_proba_per_query
    monkeypatch.setattr(experiment, "predict_proba_per_query", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    exp = _experiment(tiny_lm, tiny_task, _records(tiny_task, POOL_TEXTS, "p"), regime="per-query", k=2,
                      retriever=retriever)
    first, second = (exp.run_one("neuron_coverage", 4, seed=s) for s in (0, 1))
    assert first.ids == second.ids  # neuron_coverage is deterministic
    assert len(calls) == (1 if retriever == "neuron" else 2)
    assert first.accuracy == second.accuracy or retriever == "random"


def test_experiment_rejects_bad_input(tiny_lm, tiny_task):
    pool = _records(tiny_task, POOL_TEXTS, "p")
    with pytest.raises(NeuroshotError, match="never be selectable"):
        Experiment(tiny_lm, tiny_task, pool, _records(tiny_task, POOL_TEXTS[:2], "t"))
    with pytest.raises(NeuroshotError, match="unknown regime"):
        Experiment(tiny_lm, tiny_task, pool, _records(tiny_task, TEST_TEXTS, "t"), regime="dynamic")
    with pytest.raises(NeuroshotError, match="no gold label"):
        Experiment(tiny_lm, tiny_task, pool + [Record("u", "unlabelled text")], _records(tiny_task, TEST_TEXTS, "t"))


def test_no_strategy_reads_labels_of_unchosen_items(tiny_lm, tiny_task):
    """Every registered strategy, active rounds on three of them and every named pipeline (planner,
    retriever and order together) plans and answers the same when the gold labels of the items it did
    not choose are garbled, and the annotator is asked for exactly the chosen ids."""
    from neuroshot.strategies import STRATEGIES

    pool = _records(tiny_task, POOL_TEXTS, "p")
    exp = _experiment(tiny_lm, tiny_task, pool, rounds=2)
    from neuroshot.pipelines import PIPELINES, Pipeline

    adaptive = Pipeline("adaptive", "active:adaptive_coverage", "hybrid", {"reprobe": False, "min_labels": 2})
    names = sorted(STRATEGIES) + ["active:random", "active:neuron_coverage", adaptive, *PIPELINES.values()]
    assert {"random", "entropy", "neufs", "neuron_coverage", "adaptive_coverage"} <= set(map(str, names))
    for item in names:
        name = getattr(item, "name", item)
        first = SimulatedAnnotator.from_records(pool)
        rec = exp.run_one(item, 4, seed=3, annotator=first)
        assert first.revealed == set(rec.ids) and len(rec.ids) == 4, name
        garbled = [r if r.id in first.revealed else
                   Record(r.id, r.text, tiny_task.labels[(tiny_task.label_index(r.label) + 1) % 3]) for r in pool]
        assert sum(a.label != b.label for a, b in zip(pool, garbled)) == len(pool) - 4
        second = SimulatedAnnotator.from_records(garbled)
        again = exp.run_one(item, 4, seed=3, annotator=second)
        assert again.ids == rec.ids and again.accuracy == rec.accuracy, name
        assert second.revealed == set(rec.ids), name


# ------------------------------------------------------------------------------ CLI


def _write(path: Path, records: list[Record]) -> Path:
    path.write_text("".join(json.dumps({"id": r.id, "text": r.text, "label": r.label}) + "\n" for r in records),
                    encoding="utf-8")
    return path


@pytest.fixture
def cli_files(tmp_path, tiny_task, monkeypatch):
    lm = build_tiny_lm()
    monkeypatch.setattr("neuroshot.models.load_model", lambda *a, **k: lm)
    task_file = tmp_path / "task.json"
    tiny_task.to_json(task_file)
    pool = _write(tmp_path / "pool.jsonl", _records(tiny_task, POOL_TEXTS, "p"))
    test = _write(tmp_path / "test.jsonl", _records(tiny_task, TEST_TEXTS, "t"))
    return ["--pool", str(pool), "--test", str(test), "--task", str(task_file), "--store", str(tmp_path / "store")]


def test_cli_evaluate_writes_results_plot_and_label_efficiency(tmp_path, capsys, cli_files):
    from neuroshot.cli import main

    out, plot = tmp_path / "results.csv", tmp_path / "curve.png"
    argv = ["evaluate", *cli_files, "--strategy", "random", "--strategy", "neuron_coverage", "--budget", "2",
            "--budget", "4", "--seeds", "0", "1", "--calibrated", "--critical-fraction", "0.1",
            "--out", str(out), "--plot", str(plot)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "label efficiency (accuracy; target: random at 4 labels" in text
    assert "neuron_coverage" in text and "calibr." in text
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 2 * 2 * 2
    assert {r["strategy"] for r in rows} == {"random", "neuron_coverage"}
    assert all(len(r["ids"].split()) == int(r["budget"]) and r["accuracy_calibrated"] for r in rows)
    assert plot.read_bytes()[:8] == PNG and (tmp_path / "curve_calibrated.png").read_bytes()[:8] == PNG

    jsonl = tmp_path / "results.jsonl"
    assert main(["evaluate", *cli_files, "--strategy", "active:entropy", "--budget", "3", "--seeds", "0",
                 "--regime", "per-query", "--k", "2", "--rounds", "2", "--out", str(jsonl)]) == 0
    (row,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert row["strategy"] == "active:entropy" and row["regime"] == "per-query" and row["k"] == 2


@pytest.mark.parametrize("extra, expected", [
    (["--out", "results.txt"], ".csv or .jsonl"),
    (["--plot", "curve.svg"], ".png"),
    (["--budget", "99"], "larger than the 16"),
    (["--budget", "0"], "--budget must be a whole number >= 1"),
    (["--strategy", "magic"], "unknown strategy"),
    (["--k", "0"], "--k must be a whole number >= 1"),
])
def test_cli_evaluate_rejects_bad_input(tmp_path, capsys, cli_files, extra, expected, monkeypatch):
    from neuroshot.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", *cli_files, "--budget", "2", *extra]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("neuroshot: error: ") and expected in err[0], err
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "results.txt").exists()


def test_cli_evaluate_needs_gold_labels_in_the_test_file(tmp_path, capsys, cli_files):
    from neuroshot.cli import main

    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"id": "x", "text": "no label here"}) + "\n", encoding="utf-8")
    assert main(["evaluate", *cli_files, "--budget", "2", "--out", str(tmp_path / "r.csv")]) == 2
    assert "without a 'label'" in capsys.readouterr().err


def test_cli_help_explains_evaluate(capsys):
    from neuroshot.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for word in ("--pool", "--test", "--strategy", "--regime", "per-query", "--calibrated", "--plot", "active:"):
        assert word in text


# ------------------------------------------------------------------------------ real model




@pytest.mark.e2e
def test_real_model_prefix_reuse_and_cli(tmp_path, capsys):
    """SmolLM2: prefix reuse equals full prompts (single- and multi-token labels); the CLI runs on a few TREC items."""
    from neuroshot.cli import main
    from neuroshot.data import load_records
    from neuroshot.models import load_model

    trec = require_shared(SHARED_DATA / "trec")
    lm = load_model("default")
    pool, test = load_records(trec / "pool.jsonl")[:10], load_records(trec / "test.jsonl")[:4]
    labels = tuple(sorted({r.label for r in pool + test}))
    texts, demos = [r.text for r in test], [Demonstration(r.text, r.label) for r in pool[:2]]
    for task in (Task(labels=labels), Task(labels=labels, verbalizers={lab: f"{lab} question" for lab in labels})):
        prefix, ok = shared_prefix(lm, task, demos, encode(lm, task, texts, demos).prompts)
        assert ok.all() and len(prefix) > 20
        np.testing.assert_allclose(predict_proba_static(lm, task, texts, demos),
                                   predict_proba(lm, task, texts, demos), atol=1e-5)
    pool_file, test_file = _write(tmp_path / "pool.jsonl", pool), _write(tmp_path / "test.jsonl", test)
    out = tmp_path / "results.csv"
    assert main(["evaluate", "--pool", str(pool_file), "--test", str(test_file), "--strategy", "random",
                 "--strategy", "neuron_coverage", "--budget", "2", "--seeds", "0", "--store", str(tmp_path / "s"),
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["strategy"] for r in rows] == ["random", "neuron_coverage"]
    assert all(0 <= float(r["accuracy"]) <= 1 and r["n_test"] == "4" for r in rows)
    assert "label efficiency" in capsys.readouterr().out
