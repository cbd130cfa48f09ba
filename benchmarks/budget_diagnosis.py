"""Why does the recommended pipeline's accuracy fall as the budget grows? One plan, many retrievals.

For each set (validation slice: ``--validation`` items held out of the pool, never the test split),
the recommended plan is made once per budget and its annotated items are retrieved from with the
hybrid retriever at fixed and automatic weights, with and without label balance. Each variant's
prompts are scored once (a variant that retrieves the same demonstrations for a query reuses the
score), so a grid of variants costs about as much as its distinct prompts.

    .venv/bin/python benchmarks/budget_diagnosis.py --sets sst2 trec

Rows go to ``<out>/budget_diagnosis.jsonl`` (a rerun skips finished cells); ``--summarize`` prints
the table. ``--neighbours`` scores no prompt: per variant it measures the share of each query's
demonstrations that carry the query's own label (what per-query kNN demonstrations pull the answer
toward), beside the model's zero-shot accuracy; ``--validation 0`` does so on the head-to-head test
sample, to diagnose a test-split result (never to choose a setting).
Method and results: benchmarks/README.md, "More labels, lower accuracy: diagnosis".
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
NEIGHBOURS_OUT = REPO / "benchmarks" / "results" / "budget_neighbours.jsonl"
VARIANTS = {  # name -> hybrid retriever parameters
    "auto": {"embedding_weight": "auto"},
    "auto+balance": {"embedding_weight": "auto", "balance": True},
    "neurons": {"embedding_weight": 0.0},
    "w=0.5": {"embedding_weight": 0.5},
    "minilm": {"embedding_weight": 1.0},
}
KEY = ("set", "pipeline", "budget", "variant", "validation", "pool_size", "test_size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["sst2", "trec"], choices=SETS, metavar="SET")
    p.add_argument("--budgets", nargs="+", type=int, default=[18, 50, 100])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--pipeline", default="recommended", help="whose plan is retrieved from")
    p.add_argument("--validation", type=int, default=150,
                   help="pool items held out and scored (0: the head-to-head test sample, --neighbours only)")
    p.add_argument("--test-size", type=int, default=300, help="test sample with --validation 0 (as head_to_head.py)")
    p.add_argument("--neighbours", action="store_true",
                   help="score no prompt: the demonstrations' label agreement with each query, and zero-shot accuracy")
    p.add_argument("--pool-size", type=int, default=600)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--out", type=Path, help=f"results file (default: {DEFAULT_OUT}, with --neighbours {NEIGHBOURS_OUT})")
    p.add_argument("--summarize", action="store_true", help="only print the table from the results file")
    args = p.parse_args(argv)
    if args.validation == 0 and not args.neighbours:
        p.error("--validation 0 (the test split) is for --neighbours only: prompts are scored on validation items")
    args.out = args.out or (NEIGHBOURS_OUT if args.neighbours else DEFAULT_OUT)
    return args


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
    from neuroshot.experiment import Experiment, fitted_scalars
    from neuroshot.pipelines import get_pipeline

    done = {cell_key(KEY, r) for r in read_results(args.out)}
    lm = load_model("default")
    pipeline = get_pipeline(args.pipeline)
    for name in args.sets:
        data = load_shared_set(name, pool_size=args.pool_size, validation=args.validation,
                               test_size=args.test_size)
        exp = Experiment(lm, data.task, data.pool, data.test, regime="per-query", k=args.k,
                         probe_kwargs={"store": STORE}, progress=False)
        scores = PromptScores(lm, data.task)
        for budget in args.budgets:
            base = dict(set=name, pipeline=pipeline.name, budget=budget, validation=args.validation,
                        pool_size=len(data.pool), test_size=len(data.test))
            todo = [v for v in args.variants if cell_key(KEY, {**base, "variant": v}) not in done]
            if not todo:
                continue
            chosen, labels = exp.plan(pipeline, budget, 0, SimulatedAnnotator.from_records(data.pool))
            given = [labels[exp.pool[i].id] for i in chosen]
            for variant in todo:
                candidate = pipeline.customized(retriever="hybrid", retriever_params=VARIANTS[variant])
                retriever = exp.fitted_retriever(chosen, given, 0, candidate)
                fitted = fitted_scalars(retriever)
                demos = retriever.demonstrations(exp.test_probe, exp.k)
                if args.neighbours:
                    # what balance="auto" compares, on the annotated items (retriever._balance_evidence)
                    evidence = retriever._balance_evidence()  # noqa: SLF001 (a diagnosis of the fitted retriever)
                    measured = {"agreement": label_agreement(data.test, demos),
                                "zero_shot": zero_shot_accuracy(exp.test_probe, data.test),
                                **({} if evidence is None else dict(zip(("annotated_zero_shot", "annotated_agreement"),
                                                                        evidence)))}
                else:
                    correct, scored = scores.accuracy(data.test, demos)
                    measured = {"accuracy": float(correct.mean()), "prompts_scored": scored,
                                "correct": "".join("1" if c else "0" for c in correct)}
                row = {**base, "variant": variant, **measured, "fitted": fitted,
                       **provenance("benchmarks/budget_diagnosis.py")}
                append_result(args.out, row)
                shown = "agreement" if args.neighbours else "accuracy"
                print(f"{name:<24} B={budget:<4} {variant:<13} {shown} {row[shown]:.3f}  {fitted}", flush=True)


def label_agreement(queries, demos) -> float:
    """Mean share of a query's demonstrations that carry the query's own label."""
    return float(np.mean([np.mean([d.label == q.label for d in ds]) for q, ds in zip(queries, demos)]))


def zero_shot_accuracy(probe, queries) -> float:
    """Accuracy of the model's own answers with no demonstrations (the probe's prompt)."""
    from head_to_head import zero_shot_correct

    return float(zero_shot_correct(probe, [q.label for q in queries]).mean())


def summarize(args: argparse.Namespace) -> str:
    """Accuracy per set, budget and variant (markdown)."""
    rows = [r for r in read_results(args.out) if r["validation"] == args.validation]
    measure = "agreement" if args.neighbours else "accuracy"
    table, zero_shot, annotated = defaultdict(dict), {}, {}
    for r in rows:
        weight = r["fitted"].get("embedding_weight_")
        table[(r["set"], r["pipeline"], r["budget"])][r["variant"]] = f"{r[measure]:.3f}" + (
            f" (w {weight:g})" if r["variant"].startswith("auto") and weight is not None else "")
        zero_shot[r["set"]] = r.get("zero_shot")
        if r["variant"] == "auto" and "annotated_agreement" in r:
            annotated[(r["set"], r["pipeline"], r["budget"])] = (
                f"{r['annotated_zero_shot']:.3f} / {r['annotated_agreement']:.3f}")
    variants = [v for v in VARIANTS if any(v in cells for cells in table.values())]
    extra = " zero-shot | annotated: zero-shot / leave-one-out agreement |" if args.neighbours else ""
    lines = [f"{measure} per variant", "", f"| set | plan | budget | {' | '.join(variants)} |{extra}",
             "|---|---|---:|" + "---:|" * (len(variants) + 2 * bool(extra))]
    for (name, plan, budget), cells in sorted(table.items()):
        lines.append(f"| {name} | {plan} | {budget} | " + " | ".join(cells.get(v, "-") for v in variants) + " |"
                     + (f" {zero_shot[name]:.3f} | {annotated.get((name, plan, budget), '-')} |" if extra else ""))
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
