"""Why does the recommended pipeline's accuracy fall as the budget grows? One plan, many retrievals.

For each set (validation slice: ``--validation`` items held out of the pool, never the test split),
the recommended plan is made once per budget and its annotated items are retrieved from with the
hybrid retriever at fixed and automatic weights, with and without label balance. Each variant's
prompts are scored once (a variant that retrieves the same demonstrations for a query reuses the
score), so a grid of variants costs about as much as its distinct prompts.

    .venv/bin/python benchmarks/budget_diagnosis.py --sets sst2 trec

Rows go to ``<out>/budget_diagnosis.jsonl`` (a rerun skips finished cells); ``--summarize`` prints
the table. Method and results: benchmarks/README.md, "More labels, lower accuracy: diagnosis".
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, cell_key, provenance, read_results  # noqa: E402
from shared_sets import REPO, SETS, STORE, load_shared_set  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "budget_diagnosis.jsonl"
VARIANTS = {  # name -> hybrid retriever parameters
    "auto": {"embedding_weight": "auto"},
    "auto+balance": {"embedding_weight": "auto", "balance": True},
    "neurons": {"embedding_weight": 0.0},
    "w=0.5": {"embedding_weight": 0.5},
    "minilm": {"embedding_weight": 1.0},
}
KEY = ("set", "pipeline", "budget", "variant", "validation", "pool_size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["sst2", "trec"], choices=SETS, metavar="SET")
    p.add_argument("--budgets", nargs="+", type=int, default=[18, 50, 100])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--pipeline", default="recommended", help="whose plan is retrieved from")
    p.add_argument("--validation", type=int, default=150, help="pool items held out and scored")
    p.add_argument("--pool-size", type=int, default=600)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--summarize", action="store_true", help="only print the table from the results file")
    return p.parse_args(argv)


class PromptScores:
    """Label probabilities per (query text, demonstrations), each distinct prompt scored once."""

    def __init__(self, lm, task) -> None:
        self.lm, self.task, self.memo = lm, task, {}

    def accuracy(self, queries, demos) -> tuple[np.ndarray, int]:
        """Per query 1/0 correct, and how many prompts had to be scored."""
        from neuroshot.evaluate import predict_proba_per_query

        keys = [(q.text, tuple((d.text, d.label) for d in ds)) for q, ds in zip(queries, demos)]
        todo = {}
        for i, key in enumerate(keys):
            if key not in self.memo:
                todo.setdefault(key, i)
        if todo:
            rows = list(todo.values())
            probs = predict_proba_per_query(self.lm, self.task, [queries[i].text for i in rows],
                                            [demos[i] for i in rows])
            self.memo.update(zip(todo, probs))
        gold = np.array([self.task.label_index(q.label) for q in queries])
        return np.array([self.memo[k].argmax() for k in keys]) == gold, len(todo)


def run(args: argparse.Namespace) -> None:
    from neuroshot import load_model
    from neuroshot.annotation import SimulatedAnnotator
    from neuroshot.experiment import Experiment
    from neuroshot.pipelines import get_pipeline

    done = {cell_key(KEY, r) for r in read_results(args.out)}
    lm = load_model("default")
    pipeline = get_pipeline(args.pipeline)
    for name in args.sets:
        data = load_shared_set(name, pool_size=args.pool_size, validation=args.validation)
        exp = Experiment(lm, data.task, data.pool, data.test, regime="per-query", k=args.k,
                         probe_kwargs={"store": STORE}, progress=False)
        scores = PromptScores(lm, data.task)
        for budget in args.budgets:
            base = dict(set=name, pipeline=pipeline.name, budget=budget, validation=args.validation,
                        pool_size=len(data.pool))
            todo = [v for v in args.variants if cell_key(KEY, {**base, "variant": v}) not in done]
            if not todo:
                continue
            chosen, labels = exp.plan(pipeline, budget, 0, SimulatedAnnotator.from_records(data.pool))
            given = [labels[exp.pool[i].id] for i in chosen]
            for variant in todo:
                candidate = pipeline.customized(retriever="hybrid", retriever_params=VARIANTS[variant])
                fitted: dict = {}
                demos = exp.demonstrations(chosen, given, 0, candidate, fitted)
                correct, scored = scores.accuracy(data.test, demos)
                row = {**base, "variant": variant, "accuracy": float(correct.mean()), "fitted": fitted,
                       "prompts_scored": scored, "correct": "".join("1" if c else "0" for c in correct),
                       **provenance("benchmarks/budget_diagnosis.py")}
                append_result(args.out, row)
                print(f"{name:<24} B={budget:<4} {variant:<13} acc {row['accuracy']:.3f}  {fitted}", flush=True)


def summarize(args: argparse.Namespace) -> str:
    """Accuracy per set, budget and variant (markdown)."""
    rows = [r for r in read_results(args.out) if r["validation"] == args.validation]
    table = defaultdict(dict)
    for r in rows:
        weight = r["fitted"].get("embedding_weight_")
        table[(r["set"], r["budget"])][r["variant"]] = f"{r['accuracy']:.3f}" + (
            f" (w {weight:g})" if r["variant"].startswith("auto") and weight is not None else "")
    variants = [v for v in VARIANTS if any(v in cells for cells in table.values())]
    lines = [f"| set | budget | {' | '.join(variants)} |", "|---|---:|" + "---:|" * len(variants)]
    for (name, budget), cells in sorted(table.items()):
        lines.append(f"| {name} | {budget} | " + " | ".join(cells.get(v, "-") for v in variants) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.summarize:
        run(args)
    summarize(args)


if __name__ == "__main__":
    main()
