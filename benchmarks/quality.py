"""Selection benchmark: every strategy x budget x seed on the shared sets, static and per-query regimes.

Each cell plans on the pool's zero-shot probe, lets the simulated annotator label the plan and
scores the test items (static: one prefix; per-query: k retrieved per item). Settings are chosen
with --validation N (N pool items held out as the test set), never on the test split.

    .venv/bin/python benchmarks/quality.py --sets trec cuad_clause_types_top10 --regimes per-query

Cells are appended to <out>/results.jsonl as they finish (a stopped run resumes), probes cached
in <out>/signatures; --summarize (also run at the end) writes results.csv, learning-curve PNGs and
benchmarks/RESULTS.md.
Method and results: benchmarks/README.md, section "Selection benchmark: quality.py".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, cell_key, main_loop, provenance, read_results, update_section  # noqa: E402
from shared_sets import REPO, add_grid_args, base_name, start_grid  # noqa: E402

from neuroshot.stats import mean_std  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "quality"
DEFAULT_MD = REPO / "benchmarks" / "RESULTS.md"
STRATEGIES = ("random", "entropy", "kmeans", "typiclust", "fast_votek", "votek", "ideal", "neufs", "neuron_coverage")
NEURON_AWARE = ("neuron_coverage", "neufs")
KEY = ("model", "set", "regime", "retriever", "k", "strategy", "budget", "seed", "pool_size", "test_size",
       "validation", "method", "calibrated")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_args(p, test_size=500, out=DEFAULT_OUT, markdown=DEFAULT_MD)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), metavar="NAME",
                   help="strategy names; 'active:<name>' runs AdaICL-style rounds on top of <name>")
    p.add_argument("--retriever", default="neuron", help="per-query retriever: neuron, embedding or random")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--method", default="direct_logit", help="attribution method of the probe")
    p.add_argument("--calibrated", action="store_true", help="also report contextually calibrated scores")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> None:
    from neuroshot.experiment import Experiment

    lm, results_path, done, sets = start_grid(args, KEY)
    for name, data in sets:
        probe_kwargs = {"store": args.out / "signatures", "method": args.method}  # probes once, reused via the store
        for regime in args.regimes:
            budgets = args.static_budgets if regime == "static" else args.retrieval_budgets
            exp = Experiment(lm, data.task, data.pool, data.test, regime=regime, k=args.k, retriever=args.retriever,
                             calibrated=args.calibrated, probe_kwargs=probe_kwargs)

            def cell(strategy: str, budget: int, seed: int) -> dict:
                return dict(model=args.model, set=name, regime=regime,
                            retriever=args.retriever if regime == "per-query" else None,
                            k=args.k if regime == "per-query" else None, strategy=strategy, budget=budget,
                            seed=seed, pool_size=len(data.pool), test_size=len(data.test),
                            validation=args.validation, method=args.method, calibrated=args.calibrated)

            def skip(pipeline, budget: int, seed: int) -> bool:  # done in an earlier run, or too large
                if budget > len(data.pool):
                    print(f"skip {name} {pipeline.strategy} budget {budget}: larger than the pool", file=sys.stderr)
                return cell_key(KEY, cell(pipeline.strategy, budget, seed)) in done or budget > len(data.pool)

            def save(record) -> None:
                base = cell(record.strategy, record.budget, record.seed)
                row = {**base, **{k: v for k, v in vars(record).items() if k not in base},
                       **provenance("benchmarks/quality.py")}
                append_result(results_path, row)
                done.add(cell_key(KEY, base))
                print(f"{name:<24} {regime:<9} {record.strategy:<16} B={record.budget:<4} seed {record.seed}: "
                      f"acc {record.accuracy:.3f}  F1 {record.macro_f1:.3f}  ({record.seconds:.0f} s)", flush=True)

            exp.run(args.strategies, budgets, args.seeds, skip=skip, on_record=save)


# --------------------------------------------------------------------------- summary


def _accuracy_table(curves: dict, eff: dict, budgets: list[int], records: list) -> list[str]:
    """Markdown rows: accuracy mean ± std per strategy and budget, label efficiency, median seconds."""
    lines = ["| strategy | " + " | ".join(f"B={b}" for b in budgets) + " | label efficiency | s / run (median) |",
             "|---|" + "---:|" * (len(budgets) + 2)]
    for strategy in sorted(curves, key=lambda s: (s != "random", s)):
        cells = [mean_std(curves[strategy].get(b) or []) for b in budgets]
        e = eff.get(strategy)
        e_text = "-" if e is None else ("not reached" if e.budget is None else f"{e.budget} ({e.saving:.2g}x)")
        seconds = np.median([r.seconds for r in records if r.strategy == strategy])
        lines.append(f"| `{strategy}` | " + " | ".join(cells) + f" | {e_text} | {seconds:.0f} |")
    return lines


def _overview(overview: dict[tuple, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown: one table per model and regime, mean accuracy over the budgets run, strategies x sets."""
    lines = []
    for (model, regime), by_strategy in sorted(overview.items()):
        sets = sorted({n for per_set in by_strategy.values() for n in per_set}, key=lambda n: (base_name(n), n))
        lines += [f"## Overview: `{model}`, {regime}", "",
                  "Mean accuracy over the budgets run (each budget: mean over seeds); `mean` averages the sets a "
                  "strategy ran on (their number is given when it did not run on all).", "",
                  "| strategy | " + " | ".join(sets) + " | mean |", "|---|" + "---:|" * (len(sets) + 1)]
        for s in sorted(by_strategy, key=lambda s: (s not in NEURON_AWARE, s != "random", s)):
            per_set = by_strategy[s]
            cells = [f"{per_set[n]:.3f}" if n in per_set else "-" for n in sets]
            mean = f"{np.mean(list(per_set.values())):.3f}" + ("" if len(per_set) == len(sets) else f" ({len(per_set)} sets)")
            lines.append(f"| `{s}` | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    return lines


def _active_rounds(active_versus: dict[tuple, list[tuple[str, int, float]]]) -> list[str]:
    """Markdown: what annotating in re-probed rounds (``active:<name>``) changes against ``<name>`` planned at once."""
    if not active_versus:
        return []
    lines = ["", "## Active rounds", "",
             "`active:<name>` annotates in rounds, re-probing the rest of the pool with the labels so far in context; "
             "each line is its mean accuracy minus that of `<name>` planned in one go, on the same cells.", ""]
    for (model, regime, s), diffs in sorted(active_versus.items()):
        cells = ", ".join(f"{n} B={b} {d:+.3f}" for n, b, d in diffs)
        lines.append(f"- `{model}`, {regime}: `{s}` minus `{s.split(':', 1)[1]}`: "
                     f"{np.mean([d for _, _, d in diffs]):+.3f} over {len(diffs)} (set, budget) cells ({cells})")
    return lines


def summarize(args: argparse.Namespace) -> str:
    """CSV, plots and the markdown page from the results file; returns the markdown."""
    from neuroshot._io import write_rows
    from neuroshot.experiment import ExperimentRecord, label_efficiency, learning_curves
    from neuroshot.plots import plot_learning_curves

    rows = read_results(args.out / "results.jsonl")
    if not rows:
        raise SystemExit(f"no results in {args.out / 'results.jsonl'} yet")
    fields = sorted({k for r in rows for k in r if k not in ("ids", "recall")})
    write_rows(args.out / "results.csv", rows, fields)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["set"], r["regime"], r["retriever"], r["k"], r["validation"], r["pool_size"],
                r["test_size"], r["method"])].append(r)
    record_fields = set(ExperimentRecord.__dataclass_fields__)
    lines = ["# Selection benchmark results", "",
             "Produced by `benchmarks/quality.py` (see its `--help`); every number below is a mean ± std over the "
             "seeds listed, from `benchmarks/results/quality/results.jsonl`. A deterministic strategy plans the same "
             "items for every seed; such a cell reuses the scores of the first (its seconds are then planning only).",
             ""]
    efficiency_rows, versus, active_versus = [], defaultdict(list), defaultdict(list)
    overview: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for key in sorted(groups, key=str):
        model, name, regime, retriever, k, validation, pool_size, test_size, method = key
        records = [ExperimentRecord(**{f: v for f, v in r.items() if f in record_fields}) for r in groups[key]]
        curves = learning_curves(records)
        budgets = sorted({r.budget for r in records})
        split = f"validation ({validation} pool items)" if validation else f"test ({test_size} items)"
        how = f"k={k}, retriever `{retriever}`" if regime == "per-query" else "all annotated items in one prefix"
        seeds = sorted({r.seed for r in records})
        lines += [f"## {name}: {regime} ({how})", "",
                  f"Model `{model}`, probe `{method}`, pool sample {pool_size}, scored on {split}, seeds {seeds}.", ""]
        eff = label_efficiency(curves) if "random" in curves else {}
        lines += _accuracy_table(curves, eff, budgets, records)
        calibrated = [replace(r, accuracy=r.accuracy_calibrated) for r in records if r.accuracy_calibrated is not None]
        if calibrated:
            curves_cal = learning_curves(calibrated)
            lines += ["", "With contextual calibration (same cells, same demonstrations):", "",
                      *_accuracy_table(curves_cal, label_efficiency(curves_cal) if "random" in curves_cal else {},
                                       budgets, calibrated)]
        plot = args.out / f"{name}_{regime}_{Path(str(model)).stem}.png"
        plot_learning_curves(curves, plot, title=f"{name}, {regime}")
        lines += ["", f"![{name} {regime}]({os.path.relpath(plot, args.markdown.parent)})", ""]
        if eff and not validation:
            top = eff["random"].baseline_budget
            for s in NEURON_AWARE:
                if s in eff:
                    efficiency_rows.append((model, regime, name, s, eff[s].budget is not None and eff[s].budget <= top / 2))
        if not validation:
            for s, by_budget in curves.items():
                overview[(model, regime)][s][name] = float(np.mean([np.mean(v) for v in by_budget.values()]))
        for s in NEURON_AWARE:
            for other in [o for o in STRATEGIES if o not in NEURON_AWARE and o in curves]:
                for b in budgets:
                    if b in curves.get(s, {}) and b in curves.get(other, {}):
                        versus[(model, regime, s, other)].append(np.mean(curves[s][b]) - np.mean(curves[other][b]))
        for s in [s for s in curves if s.startswith("active:") and s.split(":", 1)[1] in curves]:
            one_shot = curves[s.split(":", 1)[1]]
            for b in sorted(set(curves[s]) & set(one_shot)):
                active_versus[(model, regime, s)].append((name, b, np.mean(curves[s][b]) - np.mean(one_shot[b])))
    lines += _overview(overview)
    lines += ["## Goal", "",
              "Neuron-aware selection reaches random@max budget with <= 50% of the labels on >= 3 of 5 data sets, "
              "and matches or beats vote-k and IDEAL at equal budget on average. Judged per model and regime, on the test "
              "split only (banking77 and its 15-intent subset count as one data set). What was tried on validation "
              "(objective, coverage weights, critical fraction, attribution method, tau, retriever) and which setting "
              "came closest: `benchmarks/README.md`, \"Choosing settings on validation\".", ""]
    for model, regime in sorted({row[:2] for row in efficiency_rows}):
        for s in NEURON_AWARE:
            rows_s = [(base_name(n), ok) for m, reg, n, strat, ok in efficiency_rows
                      if (m, reg, strat) == (model, regime, s)]
            hits = sorted({n for n, ok in rows_s if ok})
            tried = sorted({n for n, _ in rows_s})
            if tried:
                verdict = "met" if len(hits) >= 3 else ("not met" if len(tried) - len(hits) > 2 else
                                                        "not judged yet: fewer than 5 sets run")
                lines.append(f"- `{model}`, {regime}: `{s}` reaches it with <= 50% of the labels on {len(hits)} of {len(tried)} "
                             f"set(s) run ({', '.join(hits) or 'none'}): **{verdict}**")
    for (model, regime, s, other), diffs in sorted(versus.items()):
        lines.append(f"- `{model}`, {regime}: `{s}` minus `{other}`, mean accuracy difference over {len(diffs)} "
                     f"(set, budget) cells: {np.mean(diffs):+.3f} ({'matches or beats' if np.mean(diffs) >= 0 else 'behind'})")
    lines += _active_rounds(active_versus)
    commands = sorted({r.get("command", "") for r in rows})
    lines += ["", "## Commands", "", "```", *commands, "```", ""]
    text = "\n".join(lines)
    update_section(args.markdown, "quality", text)
    return text


def main(argv: list[str] | None = None) -> None:
    main_loop(parse_args(argv), run, summarize)


if __name__ == "__main__":
    main()
