"""Bad parameters end in one `neuroshot: error:` line and exit 2, for every registered strategy and retriever."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from neuroshot import NeuroshotError
from neuroshot._validation import check_choice, check_in, check_whole
from neuroshot.retrieval import RETRIEVERS
from neuroshot.strategies import STRATEGIES

# out-of-range (or unknown) parameters per registered name; a new strategy or retriever needs a row
BAD_STRATEGY_PARAMS = {
    "random": ["bogus=1"],
    "entropy": ["bogus=1"],
    "kmeans": ["n_init=0", "n_init=2.5"],
    "typiclust": ["k_nn=0", "min_cluster_size=-1", "max_clusters=0", "n_init=0"],
    "fast_votek": ["n_neighbors=0", "rho=1"],
    "votek": ["n_neighbors=0", "rho=0.5", "stage1_fraction=0", "stage1_fraction=1.5"],
    "ideal": ["n_neighbors=0", "n_simulations=0"],
    "neuron_coverage": ["n_neighbors=0", "influence_weight=-1", "uncertainty_weight=-0.5", "embedding_weight=2",
                        'embedding_weight="high"'],
    "adaptive_coverage": ["n_neighbors=0", "embedding_weight=2", "min_labels=0"],
    "neufs": ["tau=2", "tau=-0.1", "tau=abc", "n_init=0", "max_iter=0"],
    "active": ["context_demos=0", "bogus=1", 'base="active"'],
}
BAD_RETRIEVER_PARAMS = {
    "neuron": ["mmr=2", "mmr=-0.1", "bogus=1", 'balance="sometimes"'],
    "hybrid": ["embedding_weight=1.5", 'embedding_weight="half"', "neighbours=0", "mmr=-1"],
    "embedding": ["mmr=1.5"],
    "random": ["seed=-1", "seed=0.5"],
}


def test_every_registered_strategy_and_retriever_has_bad_parameters_listed():
    assert set(BAD_STRATEGY_PARAMS) == set(STRATEGIES)
    assert set(BAD_RETRIEVER_PARAMS) == set(RETRIEVERS)


def test_checks_name_the_parameter_and_the_interval():
    assert check_whole("n", 3) == 3 and check_in("w", 0.25, 0, 1) == 0.25 and check_choice("m", "a", ("a",)) == "a"
    with pytest.raises(NeuroshotError, match=r"^tau must be in \[0, 1\], got 2$"):
        check_in("tau", 2, 0, 1)
    with pytest.raises(NeuroshotError, match=r"^fraction must be in \(0, 1\], got 0$"):
        check_in("fraction", 0, 0, 1, low_open=True)
    with pytest.raises(NeuroshotError, match=r"^rho must be > 1, got 1$"):
        check_in("rho", 1, 1, low_open=True)
    with pytest.raises(NeuroshotError, match="must be in"):
        check_in("w", math.nan, 0, 1)
    with pytest.raises(NeuroshotError, match=r"^k must be a whole number >= 1, got True$"):
        check_whole("k", True)
    with pytest.raises(NeuroshotError, match=r"^unknown method 'x' \(choose from a, b\)$"):
        check_choice("method", "x", ("a", "b"))


@pytest.fixture
def no_model(monkeypatch):
    """Any bad parameter must be refused before the model is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the parameters were checked")

    monkeypatch.setattr("neuroshot.models.load_model", refuse)


@pytest.fixture
def labelled_files(tmp_path):
    rows = [{"id": f"i{i}", "text": f"text number {i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    pool, test = tmp_path / "pool.jsonl", tmp_path / "test.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]), encoding="utf-8")
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[6:]), encoding="utf-8")
    return pool, test


def _one_error_line(capsys, expected: str | None = None) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("neuroshot: error: "), err
    if expected:
        assert expected in err[0], err
    return err[0]


@pytest.mark.parametrize("strategy, param", [(s, p) for s, params in BAD_STRATEGY_PARAMS.items() for p in params])
def test_plan_refuses_a_bad_strategy_parameter(tmp_path, capsys, no_model, labelled_files, strategy, param):
    from neuroshot.cli import main

    argv = ["plan", str(labelled_files[0]), "--labels", "a,b", "--budget", "2", "--strategy", strategy,
            "--param", param, "--out", str(tmp_path / "plan.jsonl")]
    assert main(argv) == 2
    _one_error_line(capsys, param.split("=")[0])
    assert not (tmp_path / "plan.jsonl").exists()


@pytest.mark.parametrize("retriever, param", [(r, p) for r, params in BAD_RETRIEVER_PARAMS.items() for p in params])
def test_evaluate_refuses_a_bad_retriever_parameter(tmp_path, capsys, no_model, labelled_files, retriever, param):
    from neuroshot.cli import main

    pool, test = labelled_files
    argv = ["evaluate", "--pool", str(pool), "--test", str(test), "--budget", "2", "--regime", "per-query",
            "--strategy", "random", "--retriever", retriever, "--retriever-param", param,
            "--out", str(tmp_path / "r.csv")]
    assert main(argv) == 2
    _one_error_line(capsys, param.split("=")[0])
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("command", ["plan", "evaluate"])
@pytest.mark.parametrize("option, value, expected", [
    ("--critical-fraction", "0", "critical fraction must be in (0, 1]"),
    ("--critical-fraction", "1.5", "critical fraction must be in (0, 1]"),
    ("--top-k", "0", "top_k must be a whole number >= 1"),
    ("--batch-size", "0", "--batch-size must be a whole number >= 1"),
])
def test_probe_settings_are_checked_before_the_model_loads(tmp_path, capsys, no_model, labelled_files, command,
                                                          option, value, expected):
    from neuroshot.cli import main

    pool, test = labelled_files
    if command == "plan":
        argv = ["plan", str(pool), "--labels", "a,b", "--budget", "2", "--out", str(tmp_path / "plan.jsonl")]
    else:
        argv = ["evaluate", "--pool", str(pool), "--test", str(test), "--budget", "2", "--out", str(tmp_path / "r.csv")]
    assert main([*argv, option, value]) == 2
    _one_error_line(capsys, expected)


def test_the_installed_command_prints_no_traceback(tmp_path, labelled_files):
    script = Path(sys.executable).with_name("neuroshot")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from neuroshot.cli import main; "
                                                                          "sys.exit(main())"]
    for extra in (["--strategy", "neufs", "--param", "tau=2"], ["--critical-fraction", "0"]):
        done = subprocess.run([*command, "plan", str(labelled_files[0]), "--labels", "a,b", "--budget", "2",
                               "--out", str(tmp_path / "plan.jsonl"), *extra], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.startswith("neuroshot: error: "), done.stderr


def test_python_api_refuses_one_string_for_a_list_and_unknown_demo_labels(tiny_lm):
    """A string where a list of texts (or labels) belongs would be read character by character."""
    from neuroshot import Demonstration, Task, predict_proba, probe
    from neuroshot.evaluate import predict_proba_per_query

    with pytest.raises(NeuroshotError, match="not one string"):
        Task(labels="positive")
    task = Task(labels=("yes", "no"))
    with pytest.raises(NeuroshotError, match="not one string"):
        probe(tiny_lm, task, "a whole pool in one string", progress=False)
    with pytest.raises(NeuroshotError, match="not one string"):
        predict_proba(tiny_lm, task, "one query")
    with pytest.raises(NeuroshotError, match="not one string"):
        predict_proba_per_query(tiny_lm, task, "abc", [[], [], []])
    with pytest.raises(NeuroshotError, match="item 1 is int"):
        probe(tiny_lm, task, ["a text", 3], progress=False)
    with pytest.raises(NeuroshotError, match="1 ids for 2 texts"):
        probe(tiny_lm, task, ["a text", "another"], ids=["a"], progress=False)
    with pytest.raises(NeuroshotError, match="unknown label 'maybe'"):
        predict_proba(tiny_lm, task, ["a query"], [Demonstration("a demo", "maybe")])


def test_plan_budget_is_a_whole_number_not_a_bool(tiny_lm):
    import numpy as np

    from neuroshot import Task, get_strategy, probe

    probed = probe(tiny_lm, Task(labels=("yes", "no")), ["aa bb", "cc dd", "ee ff"], progress=False)
    assert len(get_strategy("random").plan(probed, np.int64(2)).picks) == 2
    for budget in (True, 0, 2.0):
        with pytest.raises(NeuroshotError, match="budget must be a whole number >= 1"):
            get_strategy("random").plan(probed, budget)
