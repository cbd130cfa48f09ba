"""The selection benchmark's summary: tables, plots and the goal verdict, from a results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _row(model: str, name: str, strategy: str, budget: int, seed: int, accuracy: float) -> dict:
    return dict(model=model, set=name, regime="per-query", retriever="neuron", k=4, strategy=strategy, budget=budget,
                seed=seed, pool_size=600, test_size=100, validation=0, method="direct_logit", calibrated=False,
                accuracy=accuracy, macro_f1=accuracy, seconds=1.0, n_test=100, ids=[], command="cmd")


def _results(tmp_path: Path, rows: list[dict]) -> list[str]:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return ["--summarize", "--out", str(out), "--markdown", str(tmp_path / "RESULTS.md")]


def test_goal_is_judged_per_model(tmp_path):
    """The default model wins on every set, the second model on none: neither verdict leaks into the other."""
    sets = ("trec", "sst2", "banking77_15", "cuad_clause_types_top10", "medical_abstracts")
    rows = []
    for model, good in (("default", True), ("gemma-3-270m", False)):
        for name in sets:
            for seed in (0, 1):
                rows += [_row(model, name, "random", 18, seed, 0.3), _row(model, name, "random", 100, seed, 0.5)]
            rows += [_row(model, name, "neuron_coverage", 18, 0, 0.6 if good else 0.2),
                     _row(model, name, "neuron_coverage", 100, 0, 0.7 if good else 0.4)]
    args = quality.parse_args(_results(tmp_path, rows))
    text = quality.summarize(args)
    assert "- `default`, per-query: `neuron_coverage` reaches it with <= 50% of the labels on 5 of 5" in text
    assert "- `gemma-3-270m`, per-query: `neuron_coverage` reaches it with <= 50% of the labels on 0 of 5" in text
    assert text.count("**met**") == 1 and text.count("**not met**") == 1
    assert text in (tmp_path / "RESULTS.md").read_text(encoding="utf-8")  # its own section of the page
    plots = sorted((tmp_path / "out").glob("*.png"))
    assert len(plots) == 10 and all(p.read_bytes().startswith(PNG) for p in plots)
    assert "gemma-3-270m" in {p.stem.rsplit("_", 1)[-1] for p in plots}


def test_overview_and_comparisons_cover_every_baseline(tmp_path):
    """Each strategy's mean over budgets per set, and neuron-aware minus every baseline that ran, not only vote-k/IDEAL."""
    rows = []
    for name, gap in (("trec", 0.1), ("sst2", 0.3)):
        for strategy, acc in (("random", 0.4), ("kmeans", 0.5), ("ideal", 0.45), ("neuron_coverage", 0.4 + gap)):
            rows += [_row("default", name, strategy, 18, 0, acc), _row("default", name, strategy, 100, 0, acc + 0.1)]
    rows.append(_row("default", "trec", "typiclust", 18, 0, 0.2))
    text = quality.summarize(quality.parse_args(_results(tmp_path, rows)))
    overview = text.split("## Overview: `default`, per-query")[1].split("## Goal")[0]
    assert "| strategy | sst2 | trec | mean |" in overview
    assert "| `neuron_coverage` | 0.750 | 0.550 | 0.650 |" in overview
    assert "| `typiclust` | - | 0.200 | 0.200 (1 sets) |" in overview
    for other, diff in (("random", "+0.200"), ("kmeans", "+0.100"), ("ideal", "+0.150"), ("typiclust", "+0.300")):
        assert f"`neuron_coverage` minus `{other}`, mean accuracy difference over" in text
        assert f"cells: {diff} (matches or beats)" in text.split(f"minus `{other}`")[1].split("\n")[0]


def test_active_rounds_are_compared_with_their_one_shot_plan(tmp_path):
    """`active:<name>` gets its own section: its accuracy minus `<name>`'s on the cells both ran, per cell and mean."""
    rows = [_row("default", "trec", "random", 18, 0, 0.4), _row("default", "trec", "random", 50, 0, 0.5),
            _row("default", "trec", "entropy", 18, 0, 0.3), _row("default", "trec", "entropy", 50, 0, 0.4),
            _row("default", "trec", "active:entropy", 18, 0, 0.35), _row("default", "trec", "active:entropy", 50, 0, 0.5),
            _row("default", "trec", "active:kmeans", 18, 0, 0.9)]
    text = quality.summarize(quality.parse_args(_results(tmp_path, rows)))
    section = text.split("## Active rounds")[1].split("## Commands")[0]
    assert ("- `default`, per-query: `active:entropy` minus `entropy`: +0.075 over 2 (set, budget) cells "
            "(trec B=18 +0.050, trec B=50 +0.100)") in section
    assert "active:kmeans" not in section  # kmeans planned at once never ran: nothing to compare with
    assert "| `active:entropy` |" in text.split("## Overview")[1]
