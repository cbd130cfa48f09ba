"""The one-call path to a pipeline: plan_annotations -> export -> labels back -> demonstrations;
and one meaning for a bare strategy name (Experiment and get_pipeline agree)."""

from __future__ import annotations

import csv
import json

import pytest

from neuroshot import (AnnotationPlan, Experiment, NeuroshotError, Record, get_pipeline, plan_annotations,
                       read_annotations)
from neuroshot.pipelines import Pipeline

from test_evaluate import POOL_TEXTS, TEST_TEXTS, _records

PROBE = {"critical_fraction": 0.1}


def _pool_file(tmp_path, n: int = len(POOL_TEXTS)):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(POOL_TEXTS[:n])))
    return path


def test_plan_export_label_and_retrieve_with_the_recommended_pipeline(tiny_lm, tiny_task, tmp_path):
    planned = plan_annotations(tiny_lm, tiny_task, _pool_file(tmp_path), budget=4, progress=False, **PROBE)
    assert isinstance(planned, AnnotationPlan) and planned.pipeline == get_pipeline("recommended")
    reference = get_pipeline("recommended").make_strategy().plan(planned.probe, 4, seed=0)
    assert planned.plan.indices == reference.indices  # the pipeline's own planner and settings
    assert [r.id for r in planned.records] == [f"p{i}" for i in reference.indices]
    assert all(r.label is None for r in planned.records)
    assert "plan: neuron_coverage, budget 4" in planned.explain()

    out = planned.export(tmp_path / "to_label.csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert [r["id"] for r in rows] == [r.id for r in planned.records] and all(r["label"] == "" for r in rows)
    for n, row in enumerate(rows):  # the expert fills in the label column
        row["label"] = tiny_task.labels[n % 3]
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    labels = read_annotations(out, tiny_task.labels)
    assert labels == {r["id"]: r["label"] for r in rows}

    retriever = planned.retriever(labels)
    assert type(retriever).name == get_pipeline("recommended").retriever
    demos = planned.demonstrations(tiny_lm, TEST_TEXTS, labels, k=2)
    assert len(demos) == len(TEST_TEXTS) and all(len(d) == 2 for d in demos)
    by_text = {r.text: r.id for r in planned.records}
    assert all(labels[by_text[d.text]] == d.label for row in demos for d in row)  # only labelled items
    static = planned.static_demonstrations(tiny_lm, labels)
    assert sorted(d.text for d in static) == sorted(by_text)


def test_texts_records_and_already_labelled_items(tiny_lm, tiny_task):
    from_texts = plan_annotations(tiny_lm, tiny_task, POOL_TEXTS, budget=3, progress=False, **PROBE)
    assert [r.id for r in from_texts.records] == [str(i) for i in from_texts.plan.indices]
    records = [Record(f"r{i}", t, label="A") for i, t in enumerate(POOL_TEXTS)]
    first = plan_annotations(tiny_lm, tiny_task, records, budget=2, pipeline="random+knn", progress=False, **PROBE)
    assert first.pipeline.name == "random+knn"
    done = [r.id for r in first.records]
    second = plan_annotations(tiny_lm, tiny_task, records, budget=3, pipeline="random+knn", labeled=done,
                              progress=False, **PROBE)
    assert not set(done) & {r.id for r in second.records}


def test_bad_input_fails_before_the_probe(tiny_lm, tiny_task, tmp_path, monkeypatch):
    import neuroshot.workflow as workflow

    monkeypatch.setattr(workflow, "probe", lambda *a, **k: pytest.fail("probed before checking the input"))
    pool = _pool_file(tmp_path, n=5)
    with pytest.raises(NeuroshotError, match="budget 50 is larger than the 5 unlabeled items"):
        plan_annotations(tiny_lm, tiny_task, pool, budget=50)
    with pytest.raises(NeuroshotError, match="budget 4 is larger than the 3 unlabeled"):
        plan_annotations(tiny_lm, tiny_task, pool, budget=4, labeled=["p0", "p1"])
    with pytest.raises(NeuroshotError, match="not in the pool"):
        plan_annotations(tiny_lm, tiny_task, pool, budget=1, labeled=["nope"])
    with pytest.raises(NeuroshotError, match="unknown pipeline"):
        plan_annotations(tiny_lm, tiny_task, pool, budget=1, pipeline="magic")
    with pytest.raises(NeuroshotError, match="empty"):
        plan_annotations(tiny_lm, tiny_task, [], budget=1)


def test_labels_outside_the_pool_or_the_task_are_refused(tiny_lm, tiny_task):
    planned = plan_annotations(tiny_lm, tiny_task, POOL_TEXTS, budget=2, progress=False, **PROBE)
    with pytest.raises(NeuroshotError, match="not in the pool"):
        planned.retriever({"999": "A"})
    with pytest.raises(NeuroshotError):
        planned.retriever({planned.records[0].id: "Z"})
    with pytest.raises(NeuroshotError, match="no labels yet"):
        planned.retriever({})


def test_a_bare_strategy_name_means_the_same_pipeline_everywhere(tiny_lm, tiny_task):
    exp = Experiment(tiny_lm, tiny_task, _records(tiny_task, POOL_TEXTS, "p"), _records(tiny_task, TEST_TEXTS, "t"),
                     regime="per-query", k=2, progress=False)
    assert exp.pipeline("votek") == Pipeline("votek", "votek", get_pipeline("votek").retriever)
    assert get_pipeline("votek").retriever == "embedding"


def test_experiment_refuses_a_budget_larger_than_the_pool_before_probing(tiny_lm, tiny_task):
    exp = Experiment(tiny_lm, tiny_task, _records(tiny_task, POOL_TEXTS, "p"), _records(tiny_task, TEST_TEXTS, "t"),
                     progress=False)
    with pytest.raises(NeuroshotError, match=f"budget 50 is larger than the {len(POOL_TEXTS)} items"):
        exp.run(["random"], [50], [0])
    assert "pool_probe" not in vars(exp)  # nothing was probed
