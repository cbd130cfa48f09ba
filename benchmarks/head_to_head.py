"""Head-to-head: neuroshot's recommended pipeline against the selectors users already have.

Each pipeline (neuroshot.pipelines) plans on the same budget, the simulated annotator labels the
plan, and one fixed test sample is scored per query or with a static prompt; every difference is
paired: recommended minus each baseline, 95% bootstrap interval over test items and seeds.

    .venv/bin/python benchmarks/head_to_head.py --sets trec sst2 --regimes per-query
    .venv/bin/python benchmarks/head_to_head.py --summarize

Cells are appended to <out>/results.jsonl as they finish (a stopped run resumes with the same
command); --summarize (also run at the end) writes forest plots and the head-to-head section at
the top of benchmarks/RESULTS.md.
Method and results: benchmarks/README.md, section "Head-to-head: head_to_head.py".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, cell_key, main_loop, provenance, read_results, update_section  # noqa: E402
from shared_sets import REPO, SETS, STORE, add_grid_args, load_shared_set, model_spec, start_grid  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "head_to_head"
DEFAULT_MD = REPO / "benchmarks" / "RESULTS.md"
REFERENCE = "recommended"
RESAMPLED = "static-resampled"  # static prompts, the pool redrawn for each seed
BASELINES = {"per-query": ("random+knn", "votek+knn", "ideal+knn"), "static": ("random", "votek", "ideal")}
BASELINES[RESAMPLED] = BASELINES["static"]
KEY = ("model", "set", "regime", "pipeline", "budget", "seed", "k", "pool_size", "test_size", "validation")
GOAL_POINTS = {"votek+knn": 0.03, "random+knn": 0.05}  # per-query goals (issue 37): each with its interval above 0
SMALL_POOL = 300  # pools this small (the cookbook regime) are summarised apart from the 600-item pools
ZERO_SHOT = "zero-shot"  # per-query rows of the model's answer with no demonstrations (budget 0), compared at every budget


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_args(p, test_size=300, out=DEFAULT_OUT, markdown=DEFAULT_MD, regimes=("per-query", "static", RESAMPLED))
    p.add_argument("--pipelines", nargs="+", metavar="NAME[=JSON]",
                   help="pipelines by name, or NAME={\"strategy\": ..., \"retriever\": ..., \"strategy_params\": ..., "
                        "\"retriever_params\": ..., \"order\": ...} (or {\"base\": NAME, ...}: a named one, changed) for a candidate (default: recommended and the regime's baselines: "
                        + "; ".join(f"{r}: {' '.join(b)}" for r, b in BASELINES.items()) + ")")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="per-query seeds (default: 0 1 2)")
    p.add_argument("--static-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="static seeds (default: 0-4)")
    p.add_argument("--reference", default=REFERENCE, help="the pipeline compared with every other (default: %(default)s)")
    p.add_argument("--against", metavar="NAME",
                   help="instead: every pipeline minus NAME (e.g. candidates against random+knn on validation)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, *, neuron_model: str | None = None, test_items: int | None = None,
        key: tuple[str, ...] = KEY, script: str = "benchmarks/head_to_head.py") -> None:
    """Every cell of the grid not yet in ``<out>/results.jsonl``, appended as it finishes.

    With ``neuron_model`` (a model spec), that model's neurons plan and retrieve and ``--model`` only answers
    the prompts (benchmarks/proxy_model.py); rows then carry ``neuron_model``. With ``test_items``, only the
    first that many items of the test sample are scored (rows carry ``test_items``; ``test_size`` stays the
    sample's)."""
    from neuroshot import load_model
    from neuroshot.experiment import Experiment

    lm, results_path, done, sets = start_grid(args, key)
    neuron_lm = lm if neuron_model is None else load_model(model_spec(neuron_model))
    proxy = {} if neuron_model is None else {"neuron_model": neuron_model}
    if test_items:
        proxy["test_items"] = test_items
    for name, data in sets:
        sample = len(data.test)
        data.test = data.test[:test_items] if test_items else data.test
        gold = [r.label for r in data.test]
        for regime in args.regimes:
            static = regime != "per-query"
            budgets, seeds = (args.static_budgets, args.static_seeds) if static else (args.retrieval_budgets, args.seeds)
            pipelines = [_pipeline(p) for p in (args.pipelines or (REFERENCE, *BASELINES[regime]))]
            by_name = {p.name: p for p in pipelines}

            def cell(pipeline_name: str, budget: int, seed: int) -> dict:
                return dict(model=args.model, set=name, regime=regime, pipeline=pipeline_name, budget=budget,
                            seed=seed, k=None if static else args.k, pool_size=len(data.pool),
                            test_size=sample, validation=args.validation, **proxy)

            def skip(pipeline, budget: int, seed: int) -> bool:  # done in an earlier run, or too large
                return cell_key(key, cell(pipeline.name, budget, seed)) in done or budget > len(data.pool)

            def save(record) -> None:
                base = cell(record.pipeline, record.budget, record.seed)
                row = _result_row(base, by_name[record.pipeline], record, gold, static, script)
                append_result(results_path, row)
                done.add(cell_key(key, base))
                print(_cell_line(row), flush=True)

            # a deterministic planner plans one prompt per budget from one pool, whatever the seed: with
            # RESAMPLED each seed draws its own pool (seed 0's is the fixed one), so seeds measure the plans too
            for pool, run_seeds in ([(_pool_of_seed(name, args, data, s), [s]) for s in seeds] if regime == RESAMPLED
                                    else [(data.pool, seeds)]):
                exp = Experiment(neuron_lm, data.task, pool, data.test, regime="static" if static else regime,
                                 k=args.k, calibrated=static, probe_kwargs={"store": STORE}, answer_lm=lm,
                                 progress=False)
                zero_shot = cell(ZERO_SHOT, 0, 0)
                if not static and neuron_model is None and cell_key(key, zero_shot) not in done:
                    append_result(results_path, _zero_shot_row(zero_shot, exp.test_probe, gold, script))
                    done.add(cell_key(key, zero_shot))
                exp.run(pipelines, budgets, run_seeds, skip=skip, on_record=save)


def _result_row(base: dict, pipeline, record, gold: list[str], static: bool, script: str) -> dict:
    """The results-file row of one finished cell (``base``: its key fields), per-item correctness included."""
    return {**base, "strategy": pipeline.strategy, "retriever": record.retriever, "description": str(pipeline),
            "accuracy": record.accuracy, "macro_f1": record.macro_f1, "accuracy_calibrated": record.accuracy_calibrated,
            "macro_f1_calibrated": record.macro_f1_calibrated, "seconds": record.seconds,
            "retriever_fitted": record.retriever_fitted, "ids": record.ids, "correct": _bits(record.correct(gold)),
            "correct_calibrated": _bits(record.correct(gold, True)) if static else None, **provenance(script)}


def zero_shot_correct(probe, gold: list[str]) -> np.ndarray:
    """Per item, whether the model's own answer with no demonstrations (the probe's prompt) is ``gold``."""
    return np.array(probe.task.labels)[probe.predicted] == np.array(gold)


def _zero_shot_row(base: dict, test_probe, gold: list[str], script: str) -> dict:
    """The results-file row of the model's own answers with no demonstrations."""
    correct = zero_shot_correct(test_probe, gold)
    return {**base, "strategy": None, "retriever": None, "description": "no demonstrations: the model's zero-shot answer",
            "accuracy": float(correct.mean()), "seconds": 0.0, "ids": [], "correct": _bits(correct),
            **provenance(script)}


def _cell_line(row: dict) -> str:
    """One finished cell as a progress line."""
    cal = f"  calibrated {row['accuracy_calibrated']:.3f}" if row["correct_calibrated"] else ""
    return (f"{row['set']:<24} {row['regime']:<9} {row['pipeline']:<12} B={row['budget']:<4} seed {row['seed']}: "
            f"acc {row['accuracy']:.3f}{cal}  ({row['seconds']:.0f} s)")


def _pool_of_seed(name: str, args: argparse.Namespace, data, seed: int) -> list:
    """``len(data.pool)`` items of the set's pool file in seed ``seed``'s order, never one of ``data.test``
    (the same as ``data.pool`` for seed 0; all of a pool no larger than that, reordered)."""
    held = {r.id for r in data.test}
    full = load_shared_set(name, args.data, seed=seed).pool
    return [r for r in full if r.id not in held][:len(data.pool)]


def _pipeline(spec: str):
    """A named pipeline, or ``'NAME={"strategy": ..., "retriever": ..., ...}'`` for a candidate setting
    (``{"base": "recommended", "order": "entropy"}``: a named pipeline with some fields replaced)."""
    from dataclasses import replace

    from neuroshot.pipelines import Pipeline, get_pipeline

    name, sep, fields = spec.partition("=")
    if not sep:
        return get_pipeline(spec)
    fields = json.loads(fields)
    base = fields.pop("base", None)
    return replace(get_pipeline(base), name=name, **fields) if base else Pipeline(name, **fields)


def _bits(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in correct)


def _scores(bits: str) -> np.ndarray:
    return np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - ord("0")


# --------------------------------------------------------------------------- summary


def comparisons(rows: list[dict], reference: str, validation: int) -> list[dict]:
    """Per (model, set, regime, metric, budget) and baseline: ``reference`` minus the baseline, paired
    (rows scored on the test split, or with ``validation`` on that many held-out pool items). A set's
    zero-shot row (no demonstrations) is compared at every budget, with each of the reference's seeds."""
    from neuroshot.stats import paired_difference

    cells: dict[tuple, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    zero_shot = {}
    for r in rows:
        if (r.get("validation") or 0) != validation:
            continue
        if r["pipeline"] == ZERO_SHOT:
            zero_shot[(r["model"], r["set"], _regime(r))] = _scores(r["correct"])
            continue
        metrics = [("accuracy", "correct")] + ([("calibrated", "correct_calibrated")] if r.get("correct_calibrated") else [])
        for metric, field in metrics:
            cells[(r["model"], r["set"], _regime(r), metric, r["budget"])][r["pipeline"]][r["seed"]] = _scores(r[field])
    for (model, name, regime, metric, budget), by_pipeline in cells.items():
        answers = zero_shot.get((model, name, regime))
        if metric == "accuracy" and answers is not None and reference in by_pipeline:
            by_pipeline[ZERO_SHOT] = {seed: answers for seed in by_pipeline[reference]}
    out = []
    for (model, name, regime, metric, budget), by_pipeline in sorted(cells.items(),
                                                                     key=lambda kv: (str(kv[0][:4]), kv[0][4])):
        mine = by_pipeline.get(reference, {})
        for other, theirs in by_pipeline.items():
            seeds = sorted(set(mine) & set(theirs))
            if other == reference or not seeds:
                continue
            diff = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])
            out.append(dict(model=model, set=name, regime=regime, metric=metric, budget=budget, baseline=other,
                            diff=diff, seeds=seeds, reference_acc=float(np.mean([mine[s].mean() for s in seeds])),
                            baseline_acc=float(np.mean([theirs[s].mean() for s in seeds]))))
    return out


def _regime(row: dict) -> str:
    """A row's regime as summarised: small pools (the cookbook regime) apart from the others."""
    small = row["regime"] == "per-query" and row.get("pool_size", SMALL_POOL + 1) <= SMALL_POOL
    return f"{row['regime']}, small pool" if small else row["regime"]


def _fmt(d) -> str:
    mark = {"win": "**", "loss": "_", "tie": ""}[d.verdict]
    return f"{mark}{d.mean * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}]{mark}"


def summarize(args: argparse.Namespace) -> str:
    """The head-to-head section of RESULTS.md and the forest plots, from the results file."""
    from neuroshot.plots import plot_forest
    from neuroshot.stats import mean_difference

    rows = read_results(args.out / "results.jsonl")
    if not rows:
        raise SystemExit(f"no results in {args.out / 'results.jsonl'} yet")
    reference = args.against or args.reference
    comps = comparisons(rows, reference, args.validation)
    if not comps:
        raise SystemExit(f"no paired results for '{reference}' (validation {args.validation}) yet")
    if args.against:  # every pipeline minus the one named, rather than the reference minus every other
        comps = [dict(c, diff=-c["diff"]) for c in comps]
    split = f"validation ({args.validation} held-out pool items; for choosing settings)" if args.validation else "test"
    title = f"each pipeline against `{args.against}`" if args.against else \
        f"`{args.reference}` against what users already have"
    what = f"each pipeline minus `{args.against}`" if args.against else f"`{args.reference}` minus the baseline"
    lines = [f"# Head-to-head: {title} ({split})", "",
             f"Produced by `benchmarks/head_to_head.py` from `{_shown_path(args.out / 'results.jsonl')}`. Each cell: "
             f"accuracy of {what} in points, paired over the same test items and seeds, "
             "with its 95% bootstrap interval (seeds and items resampled); **bold** = significant win, _italic_ = "
             "significant loss. Per set, the verdict is on the mean over that set's budgets.", ""]
    groups = defaultdict(list)
    for c in comps:
        groups[(c["model"], c["regime"], c["metric"])].append(c)
    forest_rows = defaultdict(list)
    for (model, regime, metric), cs in sorted(groups.items(), key=str):
        baselines = list(dict.fromkeys(c["baseline"] for c in cs))
        sets = list(dict.fromkeys(c["set"] for c in cs))
        n_items = {c["set"]: c["diff"].n_items for c in cs}
        seeds = sorted({s for c in cs for s in c["seeds"]})
        cols = " | ".join(f"`{b}` − `{args.against}`" if args.against else f"− `{b}`" for b in baselines)
        lines += [f"## `{model}`, {regime}, {'calibrated ' if metric == 'calibrated' else ''}accuracy", "",
                  f"Seeds {seeds}; test items per set: " + ", ".join(f"{s} {n_items[s]}" for s in sets) + ".", "",
                  f"| set | budget | {args.against or args.reference} | {cols} |",
                  "|---|---:|---:|" + "---:|" * len(baselines)]
        by_cell = defaultdict(dict)
        for c in cs:
            by_cell[(c["set"], c["budget"])][c["baseline"]] = c
        for (name, budget), per in by_cell.items():
            ref = next(iter(per.values()))["reference_acc"]
            lines.append(f"| {name} | {budget} | {ref:.3f} | "
                         + " | ".join(_fmt(per[b]["diff"]) if b in per else "-" for b in baselines) + " |")
        lines += ["", "Per set (mean over budgets) and over all cells:", "",
                  f"| set | {cols} |", "|---|" + "---:|" * len(baselines)]
        tally = {b: {"win": 0, "tie": 0, "loss": 0} for b in baselines}
        for name in sets + ["all cells"]:
            cells = []
            for b in baselines:
                diffs = [c["diff"] for c in cs if c["baseline"] == b and name in (c["set"], "all cells")]
                d = mean_difference(diffs) if diffs else None
                if d is not None and name != "all cells":
                    tally[b][d.verdict] += 1
                ran = len(diffs) if name != "all cells" else None
                full = len({c["budget"] for c in cs if c["set"] == name})
                partial = f" ({ran} of {full} budgets)" if ran and ran < full else ""
                cells.append((_fmt(d) + partial) if d else "-")
                if d is not None:
                    forest_rows[(model, regime, metric)].append(
                        dict(group=name, label=f"{args.reference} − {b}", mean=d.mean, low=d.low, high=d.high))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| win / tie / loss (sets) | " + " | ".join(
            f"{t['win']} / {t['tie']} / {t['loss']}" for t in tally.values()) + " |")
        judged = not args.against and args.reference == REFERENCE
        lines += ["", *(_goal(cs, regime, metric, rows, model) if judged else []), ""]
    for (model, regime, metric), frows in forest_rows.items() if not args.validation else ():
        path = args.out / f"forest_{Path(str(model)).stem}_{regime}_{metric}.png"
        plot_forest(frows, path, title=f"{model}, {regime}, {metric}: recommended minus each baseline")
        lines += [f"![forest {model} {regime} {metric}]({os.path.relpath(path, args.markdown.parent)})", ""]
    commands = sorted({r.get("command", "") for r in rows if (r.get("validation") or 0) == args.validation})
    lines += ["Commands:", "", "```", *commands, "```", ""]
    text = "\n".join(lines)
    if args.validation:
        (args.out / f"validation_{args.validation}.md").write_text(text, encoding="utf-8")
    else:
        update_section(args.markdown, "head-to-head", text, first=True)
    return text


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (as the pages name files), else as given."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _goal(cs: list[dict], regime: str, metric: str, rows: list[dict], model: str) -> list[str]:
    """The issue's goal, judged plainly on what ran."""
    from neuroshot.stats import mean_difference

    if metric != "accuracy":
        return []
    by_baseline = defaultdict(list)
    for c in cs:
        by_baseline[c["baseline"]].append(c)
    if not any(b in by_baseline for b in BASELINES[regime.split(",")[0]]):
        return []
    sets = sorted({c["set"] for c in cs})
    out = [f"Goal ({model}, {regime}; {len(sets)} set(s) run: {', '.join(sets)}):"]
    if regime.startswith("per-query"):
        for b, points in GOAL_POINTS.items():
            if b not in by_baseline:
                continue
            db = mean_difference([c["diff"] for c in by_baseline[b]])
            per_set = {s: mean_difference([c["diff"] for c in by_baseline[b] if c["set"] == s])
                       for s in sets if any(c["set"] == s for c in by_baseline[b])}
            losses = sorted(s for s, ds in per_set.items() if ds.verdict == "loss")
            met = db.mean >= points and db.low > 0 and (b != "votek+knn" or not losses)
            out.append(f"- minus `{b}` >= +{points * 100:.0f} points over all cells ({len(per_set)} sets), interval above 0"
                       + (", no significant loss on any set" if b == "votek+knn" else "")
                       + f": {_fmt(db)}, significant losses on {', '.join(losses) or 'no set'} → "
                       f"**{'met' if met else 'not met'}**")
        drops = budget_drops(rows, model, regime)
        out.append("- accuracy at 50 or 100 labels never significantly below 18 labels: "
                   + (", ".join(f"{s} at {b} ({_fmt(d)})" for s, b, d in drops) if drops else "no drop")
                   + f" → **{'not met' if drops else 'met'}**")
    else:
        for b in ("random", "votek"):
            if b in by_baseline:
                db = mean_difference([c["diff"] for c in by_baseline[b]])
                out.append(f"- beat `{b}` on average, interval excluding 0: {_fmt(db)} → "
                           f"**{'met' if db.low > 0 else 'not met'}**")
    if len(sets) < len(SETS):
        out.append(f"- judged on {len(sets)} of the {len(SETS)} sets only: the remaining sets have not run yet.")
    return out


def budget_drops(rows: list[dict], model: str, regime: str, reference: str = REFERENCE,
                 first: int = 18) -> list[tuple[str, int, object]]:
    """(set, budget, difference) where ``reference``'s accuracy at a larger budget is significantly below
    its accuracy at ``first`` labels: paired over the same test items and seeds (test split only)."""
    from neuroshot.stats import paired_difference

    scores: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)
    for r in rows:
        if r["model"] == model and _regime(r) == regime and r["pipeline"] == reference and not r.get("validation"):
            scores[(r["set"], r["budget"])][r["seed"]] = _scores(r["correct"])
    out = []
    for (name, budget), later in sorted(scores.items()):
        base = scores.get((name, first), {})
        seeds = sorted(set(base) & set(later))
        if budget <= first or not seeds:
            continue
        d = paired_difference([later[s] for s in seeds], [base[s] for s in seeds])
        if d.verdict == "loss":
            out.append((name, budget, d))
    return out


def main(argv: list[str] | None = None) -> None:
    main_loop(parse_args(argv), run, summarize)


if __name__ == "__main__":
    main()
