"""The cookbook recipes run (``--smoke``: tiny pool, test slice and budgets) on the real default
model and the shared data, so they never rot; plus the runner's data split and option checks."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from conftest import require_shared

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook"
sys.path.insert(0, str(COOKBOOK))
_recipe = importlib.import_module("_recipe")

DATA = _recipe.SHARED_DATA
PNG = b"\x89PNG\r\n\x1a\n"
RECIPES = ("support_ticket_routing", "legal_contract_clauses", "medical_abstracts")


def recipe_module(name: str):
    return importlib.import_module(name)




def write_set(folder: Path, n_pool: int, n_test: int, labels=("a", "b", "c")) -> Path:
    folder.mkdir(parents=True)
    for split, n in (("pool", n_pool), ("test", n_test)):
        rows = [{"id": f"{split}-{i}", "text": f"{split} item number {i}", "label": labels[i % len(labels)]} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_split_is_seeded_and_disjoint(tmp_path):
    support = recipe_module("support_ticket_routing")
    data = write_set(tmp_path / "set", 40, 12, labels=support.INTENTS[:3] + ("not_in_the_subset",))
    argv = ["--data", str(data), "--pool-size", "15", "--validation-size", "5", "--test-size", "4", "--budgets", "3", "6"]
    args = _recipe.parse_args(support.RECIPE, argv)
    one, two = _recipe.load_split(support.RECIPE, args), _recipe.load_split(support.RECIPE, args)
    assert [r.id for r in one.pool] == [r.id for r in two.pool] and [r.id for r in one.test] == [r.id for r in two.test]
    assert len(one.pool) == 15 and len(one.validation) == 5 and len(one.test) == 4
    assert not {r.id for r in one.pool} & {r.id for r in one.validation}
    assert all(r.label in support.INTENTS for r in one.pool + one.validation + one.test)  # the fixed subset
    assert one.task.labels == support.INTENTS and args.budget == 6 and args.budgets == [3, 6]
    everything = _recipe.load_split(support.RECIPE, _recipe.parse_args(support.RECIPE, argv + ["--all-labels"]))
    assert "not_in_the_subset" in everything.task.labels


def test_bad_options_fail_with_one_line(tmp_path, capsys):
    support = recipe_module("support_ticket_routing")
    with pytest.raises(SystemExit):
        _recipe.parse_args(support.RECIPE, ["--data", str(tmp_path)])  # no pool.jsonl there
    assert "needs pool.jsonl" in capsys.readouterr().err
    data = write_set(tmp_path / "set", 20, 4)
    with pytest.raises(SystemExit):
        _recipe.parse_args(support.RECIPE, ["--data", str(data), "--validation-size", "0"])
    args = _recipe.parse_args(support.RECIPE, ["--data", str(data), "--pool-size", "5", "--validation-size", "2",
                                               "--budgets", "8"])
    with pytest.raises(SystemExit, match="larger than the pool"):
        _recipe.load_split(recipe_module("medical_abstracts").RECIPE, args)


def check_run(result, out: Path, candidates, chosen: bool = True) -> None:
    summary = json.loads((out / "results.json").read_text())
    for name in ("learning_curve.png", "critical_neurons.png", "differences.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "pipeline" in (out / "results.csv").read_text().splitlines()[0].split(",")
    args = result.args
    cells = {(r["pipeline"], r["retriever"], r["budget"], r["seed"]) for r in summary["records"]}
    assert cells == {(p, retriever, b, seed) for p, retriever in (("recommended", "hybrid"), ("random+knn", "embedding"),
                                                                  (f"{result.embedding}+knn", "embedding"))
                     for b in args.budgets for seed in args.seeds}
    assert set(summary["pipelines"]) == {"recommended", "random+knn", f"{result.embedding}+knn"}
    assert "| random+knn |" in summary["differences"] and f"| {result.embedding}+knn |" in summary["differences"]
    assert result.embedding in candidates
    if chosen:  # chosen here on the validation slice (else given, as for the adapted model)
        assert set(result.validation) == set(candidates)
        assert result.validation[result.embedding] == max(result.validation.values())
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_test"] == len(result.split.test) for r in summary["records"])
    test_ids = {r.id for r in result.split.test + result.split.validation}
    planned = [pid for r in summary["records"] for pid in r["ids"].split()]
    assert planned and not test_ids & set(planned)  # test and validation items are never selected
    assert len(result.examples) == args.budget == len(summary["plan"]["why"])
    gold = {r.id: r.label for r in result.split.pool}
    assert summary["plan"]["labels"] == [gold[i] for i in summary["plan"]["ids"]]
    assert sum(summary["critical_neurons"]["per_layer"]) == summary["critical_neurons"]["count"] > 0
    assert summary["command"].startswith(".venv/bin/python cookbook/") and "--smoke" in summary["command"]


@pytest.mark.e2e
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_smoke(name, tmp_path, capsys):
    module = recipe_module(name)
    require_shared(DATA / module.RECIPE.dataset)
    result = module.main(["--smoke", "--quiet", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    check_run(result, tmp_path, module.RECIPE.smoke["embedding_candidates"])
    assert "| recommended (neuroshot) |" in printed and "best embedding baseline on validation" in printed
    assert "| recommended minus |" in printed and "| random+knn |" in printed
    assert "asks to annotate" in printed and "why: similarity" in printed
    integration = result.summary.get("langchain") or result.summary.get("dspy")
    assert integration and len(integration) == 2  # the integration demo ran on the smoke queries
    labels = set(result.split.task.labels) | {"(unparsed)", "None"}
    assert all(row["answer"] in labels for row in integration)


@pytest.mark.e2e
def test_lora_recipe_smoke(tmp_path, capsys):
    require_shared(DATA / "banking77")
    lora = recipe_module("lora_adapted_model")
    adapter = tmp_path / "adapter"
    result = lora.main(["--smoke", "--quiet", "--out", str(tmp_path), "--adapter", str(adapter)])
    printed = capsys.readouterr().out
    assert (adapter / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["training"]["steps"] == 2 and saved["training"]["trainable_parameters"] > 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == PNG
    for tag in ("base", "lora"):
        check_run(result[tag], tmp_path / tag, lora.RECIPE.smoke["embedding_candidates"], chosen=tag == "base")
    base, adapted = result["base"], result["lora"]
    trained = {r.id for r in base.split.pool}
    assert base.embedding == adapted.embedding and 0.0 <= saved["critical_jaccard"] <= 1.0
    assert base.lm.fingerprint != adapted.lm.fingerprint  # the adapter is really applied
    assert len(trained) == 10 and len(saved["training"]["ids"]) == 8
    assert not set(saved["training"]["ids"]) & (trained | {r.id for r in base.split.test + base.split.validation})
    assert "| zero-shot |" in printed and "task-critical neurons:" in printed
