"""The cookbook recipes run (``--quick``: tiny pool, test slice and budgets) on the real default model
and the samples the repository ships: one as a user runs it (``python cookbook/<recipe>.py --quick``
in a copy of the cookbook with no ``../shared`` beside it), the others in this process (one model
load), so they never rot; plus the shipped samples,
the runner's data split and its option checks."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_shared

REPO = Path(__file__).resolve().parents[1]
COOKBOOK = REPO / "cookbook"
sys.path.insert(0, str(COOKBOOK))
_recipe = importlib.import_module("_recipe")

DATA = _recipe.SHARED_DATA
PNG = b"\x89PNG\r\n\x1a\n"
RECIPES = ("support_ticket_routing", "legal_contract_clauses", "medical_abstracts")
SAMPLE_KB = 300  # the repository stays light: each shipped set under this


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
    data = write_set(tmp_path / "set", 40, 12, labels=support.INTENTS + ("not_in_the_subset",))
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
    with pytest.raises(SystemExit, match="no item labelled atm_support.*--labels or take all of them with --all-labels"):
        _recipe.load_split(support.RECIPE, _recipe.parse_args(support.RECIPE, ["--data", str(data)]))


def test_own_labels_replace_the_recipes(tmp_path):
    support = recipe_module("support_ticket_routing")
    data = write_set(tmp_path / "set", 30, 9, labels=("refund", "delivery", "other"))
    args = _recipe.parse_args(support.RECIPE, ["--data", str(data), "--labels", "refund", "delivery",
                                               "--pool-size", "10", "--validation-size", "4", "--budgets", "4"])
    split = _recipe.load_split(support.RECIPE, args)
    assert split.task.labels == ("refund", "delivery")
    assert {r.label for r in split.pool + split.validation + split.test} == {"refund", "delivery"}


def all_recipes():
    return [recipe_module(name).RECIPE for name in RECIPES + ("lora_adapted_model",)]


def test_recipes_default_to_the_shipped_samples():
    for recipe in all_recipes():
        args = _recipe.parse_args(recipe, [])
        assert args.data == COOKBOOK / "data" / recipe.dataset
        split = _recipe.load_split(recipe, args)  # the defaults fit the sample
        assert (len(split.pool), len(split.validation)) == (recipe.pool_size, recipe.validation_size)
        assert 0 < len(split.test) <= recipe.test_size
    lora = recipe_module("lora_adapted_model").RECIPE  # its pool also gives the adapter's 100 training items
    assert len(_recipe.load_split(lora, _recipe.parse_args(lora, ["--pool-size", str(lora.pool_size + 100)])).pool) == 200


@pytest.mark.parametrize("name", sorted({r.dataset for r in all_recipes()}))
def test_shipped_sample_is_small_licensed_and_disjoint(name):
    from neuroshot.data import load_records

    folder = COOKBOOK / "data" / name
    card = json.loads((folder / "card.json").read_text())
    assert card["license"] in ("CC BY 4.0", "CC BY-SA 3.0") and card["source"]
    pool, test = load_records(folder / "pool.jsonl"), load_records(folder / "test.jsonl")
    assert (len(pool), len(test)) == (card["pool"], card["test"]) and 200 <= len(pool) + len(test) <= 400
    assert sum((folder / f).stat().st_size for f in ("pool.jsonl", "test.jsonl")) < SAMPLE_KB * 1024
    assert not {r.id for r in pool} & {r.id for r in test}
    assert {r.label for r in pool} == {r.label for r in test} == set(card["labels"])
    assert name in (folder.parent / "README.md").read_text()  # documented, with its license


@pytest.mark.parametrize("name", ["banking77", "cuad_clause_types_top10", "medical_abstracts"])
def test_shipped_sample_is_the_shared_sets_items(name):
    """Original ids, labels and (cut) texts of the full set: the sample is drawn, not made up."""
    from neuroshot.data import load_records

    full = require_shared(DATA / name)
    for split in ("pool", "test"):
        original = {r.id: r for r in load_records(full / f"{split}.jsonl")}
        for r in load_records(COOKBOOK / "data" / name / f"{split}.jsonl"):
            assert r.id in original and r.label == original[r.id].label and original[r.id].text.startswith(r.text)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The cookbook as a clone has it (scripts and shipped data, no results), with no ../shared beside it."""
    root = tmp_path_factory.mktemp("clone") / "neuroshot"
    shutil.copytree(COOKBOOK, root / "cookbook", ignore=shutil.ignore_patterns("results", "__pycache__"))
    assert not (root.parent / "shared").exists()
    return root


def run_quick(clone: Path, name: str, out: Path, *extra: str) -> str:
    """``python cookbook/<name>.py --quick`` in the clone, as a user types it; returns what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "integrations"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, f"cookbook/{name}.py", "--quick", "--quiet", "--out", str(out), *extra],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout




def check_run(recipe, out: Path, candidates, chosen: bool = True, argv=("--quick",)) -> dict:
    summary = json.loads((out / "results.json").read_text())
    for name in ("learning_curve.png", "critical_neurons.png", "differences.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "pipeline" in (out / "results.csv").read_text().splitlines()[0].split(",")
    embedding = summary["embedding_baseline"]
    cells = {(r["pipeline"], r["retriever"], r["budget"], r["seed"]) for r in summary["records"]}
    assert cells == {(p, retriever, b, seed) for p, retriever in (("recommended", "hybrid"), ("random+knn", "embedding"),
                                                                  (f"{embedding}+knn", "embedding"))
                     for b in summary["budgets"] for seed in summary["seeds"]}
    assert set(summary["pipelines"]) == {"recommended", "random+knn", f"{embedding}+knn"}
    assert "| random+knn |" in summary["differences"] and f"| {embedding}+knn |" in summary["differences"]
    assert embedding in candidates
    if chosen:  # chosen here on the validation slice (else given, as for the adapted model)
        assert set(summary["embedding_validation"]) == set(candidates)
        assert summary["embedding_validation"][embedding] == max(summary["embedding_validation"].values())
    assert summary["data"].endswith(f"cookbook/data/{recipe.dataset}") and summary["smoke"]
    split = _recipe.load_split(recipe, _recipe.parse_args(recipe, list(argv)))  # the same split, read here
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_test"] == len(split.test) for r in summary["records"])
    held_out = {r.id for r in split.test + split.validation}
    planned = [pid for r in summary["records"] for pid in r["ids"].split()]
    assert planned and not held_out & set(planned)  # test and validation items are never selected
    assert len(summary["plan"]["ids"]) == summary["plan"]["budget"] == len(summary["plan"]["why"])
    gold = {r.id: r.label for r in split.pool}
    assert summary["plan"]["labels"] == [gold[i] for i in summary["plan"]["ids"]]
    assert sum(summary["critical_neurons"]["per_layer"]) == summary["critical_neurons"]["count"] > 0
    assert summary["command"].startswith(".venv/bin/python cookbook/") and "--quick" in summary["command"]
    return summary


def run_in_process(name: str, out: Path, capsys, *extra: str) -> str:
    """``main(["--quick", ...])`` of the recipe in this process (the model loaded once for the session)."""
    recipe_module(name).main(["--quick", "--quiet", "--out", str(out), *extra])
    return capsys.readouterr().out


def check_printed_run(name: str, out: Path, printed: str) -> None:
    module = recipe_module(name)
    summary = check_run(module.RECIPE, out, module.RECIPE.smoke["embedding_candidates"])
    assert "| recommended (neuroshot) |" in printed and "best embedding baseline on validation" in printed
    assert "| recommended minus |" in printed and "| random+knn |" in printed
    assert "asks to annotate" in printed and "why: similarity" in printed
    integration = summary.get("langchain") or summary.get("dspy")
    assert integration and len(integration) == 2  # the integration demo ran on the quick queries
    labels = set(summary["labels"]) | {"(unparsed)", "None"}
    assert all(row["answer"] in labels for row in integration)


@pytest.mark.e2e
def test_recipe_quick_from_a_clone(clone, tmp_path):
    """As a user of a fresh clone types it: a subprocess in a copy with no ../shared beside it."""
    check_printed_run("support_ticket_routing", tmp_path, run_quick(clone, "support_ticket_routing", tmp_path))


@pytest.mark.e2e
@pytest.mark.parametrize("name", [r for r in RECIPES if r != "support_ticket_routing"])
def test_recipe_quick_on_the_shipped_sample(name, tmp_path, capsys):
    """The other recipes in this process (one model load), on their default data: the shipped sample."""
    check_printed_run(name, tmp_path, run_in_process(name, tmp_path, capsys))


@pytest.mark.e2e
def test_lora_recipe_quick_on_the_shipped_sample(tmp_path, capsys):
    lora = recipe_module("lora_adapted_model")
    adapter = tmp_path / "adapter"
    printed = run_in_process("lora_adapted_model", tmp_path, capsys, "--adapter", str(adapter))
    assert (adapter / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["training"]["steps"] == 2 and saved["training"]["trainable_parameters"] > 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == PNG
    # the runner's split of pool + train items, as the recipe reads it (train items are its first ones)
    argv = ["--quick", "--pool-size", str(lora.RECIPE.smoke["pool_size"] + lora.RECIPE.smoke["train_size"])]
    runs = {tag: check_run(lora.RECIPE, tmp_path / tag, lora.RECIPE.smoke["embedding_candidates"],
                           chosen=tag == "base", argv=argv) for tag in ("base", "lora")}
    assert runs["base"]["embedding_baseline"] == runs["lora"]["embedding_baseline"]
    assert saved["fingerprints"]["base"] != saved["fingerprints"]["lora"]  # the adapter is really applied
    assert 0.0 <= saved["critical_jaccard"] <= 1.0 and len(saved["training"]["ids"]) == 8
    assert runs["base"]["pool_size"] == runs["lora"]["pool_size"] == 10
    planned = {pid for run in runs.values() for r in run["records"] for pid in r["ids"].split()}
    assert not set(saved["training"]["ids"]) & planned  # trained-on items are not in the pool to select from
    assert "| zero-shot |" in printed and "task-critical neurons:" in printed
