"""The shared recipe runner: every cookbook recipe is a :class:`Recipe` (its task, data set and
defaults) handed to :func:`main`.

One run (per-query regime: each test item gets ``k`` demonstrations retrieved from the annotated
items by its pipeline's retriever; a pipeline is a strategy with a retriever,
:mod:`neuroshot.pipelines`):

1. load ``pool.jsonl`` / ``test.jsonl`` from ``--data``; a seeded permutation of the pool gives a
   validation slice (held out, never selectable) and the pool to select from (``--pool-size``);
   a seeded sample of the test split is scored (``--test-size``); test items are never selectable;
2. choose the embedding baseline: every candidate (k-means, TypiClust, fast vote-k, vote-k, IDEAL),
   each with MiniLM nearest-neighbour retrieval, plans at the largest budget, seed 0, and is
   scored on the validation slice; the best one goes on (the test split is never used to choose);
3. run neuroshot's ``recommended`` pipeline, ``random+knn`` (what LangChain's and DSPy's
   similarity selectors do) and that embedding baseline at the budgets and seeds
   (:class:`neuroshot.experiment.Experiment`; the simulated annotator reveals only the planned
   items' labels), print the accuracy table and the paired differences (recommended minus each,
   95% bootstrap interval over test items and seeds), save ``results.json`` / ``results.csv``,
   ``learning_curve.png`` and ``critical_neurons.png`` to ``--out``;
4. print the ``--budget`` items the recommended pipeline asks to annotate, with why, and the
   demonstrations its retriever gives the first test items, with why.

The recipe's own integration demo (LangChain or DSPy) then uses that annotated set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


COOKBOOK = Path(__file__).resolve().parent
SHIPPED_DATA = COOKBOOK / "data"  # small samples of the public sets, shipped with the repository (data/README.md)
SHARED_DATA = COOKBOOK.parent.parent / "shared" / "data"  # the full sets, beside the repository (tests, benchmarks)
REFERENCE = "recommended"  # neuroshot's pipeline, compared with each of the others
STANDARD = "random+knn"
EMBEDDING_BASELINES = ("kmeans", "typiclust", "fast_votek", "votek", "ideal")


@dataclass
class Recipe:
    """A recipe: its task, its data set (folder name under ``cookbook/data``, the shipped sample, and
    ``../shared/data``, the full set) and its defaults.

    ``make_task(labels)`` builds the recipe's :class:`neuroshot.Task` (its domain wording).
    ``labels`` restricts pool and test to a fixed subset (``--all-labels`` lifts it); None: every
    label of the data set (``card.json``, else the pool's). ``embedding_candidates`` are the
    baselines tried on the validation slice. ``smoke`` overrides the defaults under
    ``--quick`` (alias ``--smoke``: tiny pool, test slice and budgets).
    """

    name: str
    dataset: str
    make_task: Callable[[Sequence[str]], Any]
    labels: Sequence[str] | None = None
    pool_size: int = 300
    validation_size: int = 40
    test_size: int = 200
    budgets: Sequence[int] = (8, 24)
    seeds: Sequence[int] = (0, 1)
    k: int = 4
    max_text_tokens: int | None = None
    embedding_candidates: Sequence[str] = EMBEDDING_BASELINES
    smoke: dict[str, Any] = field(default_factory=lambda: dict(
        pool_size=10, validation_size=3, test_size=3, budgets=(2, 4), seeds=(0,), k=2,
        embedding_candidates=("kmeans", "fast_votek")))

    @property
    def default_data(self) -> Path:
        return SHIPPED_DATA / self.dataset


@dataclass
class Split:
    """The records of one run: pool to select from, validation slice (held out of the pool), test sample."""

    task: Any  # neuroshot.Task
    pool: list
    validation: list
    test: list


@dataclass
class RecipeResult:
    """What a run produced, for the recipe's integration demo and for tests."""

    args: argparse.Namespace
    lm: Any
    task: Any
    split: Split
    records: list
    embedding: str
    validation: dict[str, float]
    plan: Any  # the neuron-aware Plan at --budget, seed 0
    examples: list[dict[str, str]]  # the planned items with the labels the annotator gave: {"text", "label"}
    probe: Any  # the pool's ProbeResult
    files: dict[str, Path]
    summary: dict[str, Any]


def parse_args(recipe: Recipe, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The common options; ``extra`` adds a recipe's own."""
    p = argparse.ArgumentParser(prog=f"cookbook/{recipe.name}.py",
                                description=f"{recipe.name}: neuroshot's recommended pipeline vs random+knn vs "
                                            f"the best embedding baseline on {recipe.dataset}.")
    p.add_argument("--data", type=Path, default=recipe.default_data,
                   help=f"folder with pool.jsonl and test.jsonl, one {{\"id\", \"text\", \"label\"}} object a line (default: "
                        f"the shipped sample cookbook/data/{recipe.dataset}; the full set: ../shared/data/{recipe.dataset})")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="the labels to classify into; items with other labels are dropped (default: "
                        + (f"the recipe's {len(recipe.labels)} labels" if recipe.labels is not None else
                           "every label of card.json, else of pool.jsonl") + ")")
    p.add_argument("--budget", type=int, default=None,
                   help="annotation budget of the plan shown and of the integration demo (default: the largest of --budgets)")
    p.add_argument("--budgets", type=int, nargs="+", default=None, help=f"budgets of the table (default: {' '.join(map(str, recipe.budgets))})")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seeds (default: {' '.join(map(str, recipe.seeds))})")
    p.add_argument("--pool-size", type=int, default=None, help=f"seeded sample of the pool to select from (default: {recipe.pool_size})")
    p.add_argument("--validation-size", type=int, default=None,
                   help=f"pool items held out to choose the embedding baseline (default: {recipe.validation_size})")
    p.add_argument("--test-size", type=int, default=None, help=f"seeded sample of the test split scored (default: {recipe.test_size})")
    p.add_argument("--k", type=int, default=None, help=f"demonstrations per query (default: {recipe.k})")
    p.add_argument("--embedding", default=None, choices=EMBEDDING_BASELINES,
                   help="use this embedding baseline instead of choosing one on the validation slice")
    p.add_argument("--embedding-candidates", nargs="+", default=None, choices=EMBEDDING_BASELINES, metavar="NAME",
                   help=f"embedding baselines tried on the validation slice (default: {' '.join(recipe.embedding_candidates)})")
    if recipe.labels is not None:
        p.add_argument("--all-labels", action="store_true",
                       help=f"every label of the data set instead of the recipe's {len(recipe.labels)}-label subset")
    p.add_argument("--model", default="default", help="model spec for neuroshot.load_model (default: default)")
    p.add_argument("--quick", "--smoke", dest="smoke", action="store_true",
                   help="tiny pool, test slice and budgets: the smallest run, what the tests run")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results folder (default: cookbook/results/{recipe.name}, with --all-labels {recipe.name}_all_labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    defaults = {**{f: getattr(recipe, f) for f in ("pool_size", "validation_size", "test_size", "budgets", "seeds", "k",
                                                   "embedding_candidates")},
                **(recipe.smoke if args.smoke else {})}
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, list(value) if isinstance(value, (tuple, list)) else value)
    args.budgets = sorted(set(args.budgets))
    if args.out is None:
        args.out = COOKBOOK / "results" / (recipe.name + ("_all_labels" if getattr(args, "all_labels", False) else ""))
    if args.budget is None:
        args.budget = args.budgets[-1]
    if min(args.budgets + [args.budget]) < 1 or args.k < 1:
        p.error("budgets and k must be at least 1")
    if args.validation_size < 1 and not args.embedding:
        p.error("choosing the embedding baseline needs --validation-size >= 1 (or name one with --embedding)")
    if not (args.data / "pool.jsonl").is_file() or not (args.data / "test.jsonl").is_file():
        p.error(f"{args.data}: needs pool.jsonl and test.jsonl")
    args.command = " ".join([".venv/bin/python", f"cookbook/{recipe.name}.py", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    return args


def load_split(recipe: Recipe, args: argparse.Namespace) -> Split:
    """Validation slice and pool from one seeded permutation of ``pool.jsonl``; a seeded test sample."""
    from neuroshot.data import load_records, split_records

    pool, test = load_records(args.data / "pool.jsonl"), load_records(args.data / "test.jsonl")
    labels = args.labels or recipe.labels
    if labels is None or getattr(args, "all_labels", False):
        card = args.data / "card.json"
        labels = json.loads(card.read_text(encoding="utf-8"))["labels"] if card.is_file() else sorted({r.label for r in pool})
    keep = set(labels)
    missing = sorted(keep - {r.label for r in pool})
    if missing:
        raise SystemExit(f"{recipe.name}: {args.data / 'pool.jsonl'} has no item labelled {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; name your labels with --labels"
                         + (" or take all of them with --all-labels" if recipe.labels is not None else ""))
    pool, test = [r for r in pool if r.label in keep], [r for r in test if r.label in keep]
    split = split_records(pool, test, validation=args.validation_size, pool_size=args.pool_size,
                          test_size=args.test_size, seed=0)
    if max(args.budgets + [args.budget]) > len(split.pool):
        raise SystemExit(f"{recipe.name}: a budget is larger than the pool ({len(split.pool)} items)")
    return Split(recipe.make_task(labels), split.pool, split.validation, split.test)


def choose_embedding(lm, task, split: Split, args: argparse.Namespace, pool_probe=None) -> tuple[str, dict[str, float], Any]:
    """Each embedding baseline (with MiniLM kNN retrieval) plans at the largest budget (seed 0), scored
    on the validation slice; returns (best name, {name: validation accuracy}, the pool probe)."""
    from neuroshot.experiment import Experiment

    exp = Experiment(lm, task, split.pool, split.validation, regime="per-query", k=args.k,
                     pool_probe=pool_probe, progress=not args.quiet)
    if args.embedding:
        return args.embedding, {}, exp.pool_probe
    names = list(args.embedding_candidates)
    scores = {name: exp.run_one(with_knn(name), args.budgets[-1], 0).accuracy for name in names}
    return max(names, key=lambda n: (scores[n], -names.index(n))), scores, exp.pool_probe


def with_knn(strategy: str):
    """The pipeline ``<strategy>+knn``: that strategy's plan, MiniLM nearest-neighbour retrieval."""
    from dataclasses import replace

    from neuroshot.pipelines import get_pipeline

    return replace(get_pipeline(strategy), name=f"{strategy}+knn", retriever="embedding", retriever_params={})


def table(records: Sequence, embedding: str) -> str:
    """Markdown table: accuracy and macro-F1 per pipeline and budget, mean ± std over seeds."""
    from neuroshot.stats import mean_std

    budgets = sorted({r.budget for r in records})
    names = list(dict.fromkeys(r.pipeline for r in records))
    seeds = sorted({r.seed for r in records})
    head = ["pipeline"] + [f"B={b} accuracy" for b in budgets] + [f"B={b} macro-F1" for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name in names:
        label = {REFERENCE: f"{name} (neuroshot)", f"{embedding}+knn": f"{name} (best embedding baseline on validation)"}.get(name, name)
        cells = []
        for metric in ("accuracy", "macro_f1"):
            for b in budgets:
                cells.append(mean_std([getattr(r, metric) for r in records if r.pipeline == name and r.budget == b]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n(mean ± std over seeds {', '.join(map(str, seeds))}; n_test = {records[0].n_test})"


def comparison_table(records: Sequence, gold: Sequence[str]) -> str:
    """Markdown table: the recommended pipeline minus each other one, in points, per budget and over
    the budgets, with the paired 95% bootstrap interval over test items and seeds."""
    from neuroshot.stats import compare_records

    comparisons = compare_records(records, gold, REFERENCE)
    budgets = sorted({c.budget for c in comparisons if c.budget is not None})
    columns = budgets + ([None] if len(budgets) > 1 else [])
    head = ["recommended minus"] + [f"B={b}" if b is not None else "all budgets" for b in columns]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(columns) + "|"]
    for other in dict.fromkeys(c.other for c in comparisons):
        cell = {c.budget: c.difference for c in comparisons if c.other == other}
        lines.append(f"| {other} | " + " | ".join(_points(cell[b]) if b in cell else "-" for b in columns) + " |")
    return "\n".join(lines) + ("\n\n(points; 95% bootstrap interval over test items and seeds; win / loss only "
                               "when the interval excludes 0)")


def _points(d) -> str:
    return f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] {d.verdict}"


def explain_choices(lm, task, split: Split, pool_probe, test_probe, args: argparse.Namespace, n_queries: int = 2):
    """The recommended pipeline's plan at ``--budget`` (seed 0), the labels the annotator gives, and
    the demonstrations its retriever gives the first test items: (plan, examples, printed text)."""
    from neuroshot import SimulatedAnnotator
    from neuroshot.pipelines import get_pipeline

    pipeline = get_pipeline(REFERENCE)
    plan = pipeline.make_strategy().plan(pool_probe, args.budget, seed=0)
    ids = [split.pool[i].id for i in plan.indices]
    labels = SimulatedAnnotator.from_records(split.pool)(ids)
    examples = [{"text": split.pool[i].text, "label": labels[split.pool[i].id]} for i in plan.indices]
    out = [f"## The {args.budget} items the {REFERENCE} pipeline asks to annotate (seed 0), and why", "",
           plan.explain(pool_probe.texts), "", "labels given by the annotator: " +
           ", ".join(f"#{i} {e['label']}" for i, e in zip(plan.indices, examples))]
    retriever = pipeline.make_retriever(seed=0).fit(pool_probe.subset(plan.indices), [e["label"] for e in examples])
    rows = list(range(min(n_queries, len(split.test))))
    for row, chosen in zip(rows, retriever.retrieve(test_probe.subset(rows), min(args.k, len(examples)))):
        out += ["", f"## Demonstrations retrieved for test item {split.test[row].id} (gold: {split.test[row].label})",
                f"query: {_short(split.test[row].text)}"]
        out += [f"  {n}. [{r.label}] {_short(examples[r.index]['text'])}\n     why: {r.why()}" for n, r in enumerate(chosen, 1)]
    return plan, examples, "\n".join(out)


def evaluate(recipe: Recipe, args: argparse.Namespace, lm, split: Split, out: Path, *,
             embedding: str | None = None, title: str | None = None) -> RecipeResult:
    """Steps 2-4 of the module docstring on a loaded model; writes results to ``out``."""
    from neuroshot.experiment import Experiment, label_efficiency, write_records
    from neuroshot.pipelines import get_pipeline
    from neuroshot.plots import plot_critical_neurons, plot_learning_curves

    task = split.task
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    if embedding is not None:
        args = argparse.Namespace(**{**vars(args), "embedding": embedding})
    embedding, validation, pool_probe = choose_embedding(lm, task, split, args)
    if validation:
        print("\nembedding baselines on the validation slice "
              f"({len(split.validation)} pool items held out; budget {args.budgets[-1]}, seed 0): " +
              ", ".join(f"{n} {v:.3f}" for n, v in validation.items()) + f" -> {embedding}", flush=True)
    exp = Experiment(lm, task, split.pool, split.test, regime="per-query", k=args.k, pool_probe=pool_probe,
                     progress=not args.quiet)
    pipelines = [get_pipeline(REFERENCE), get_pipeline(STANDARD), with_knn(embedding)]
    records = exp.run(pipelines, args.budgets, args.seeds)
    seconds = time.perf_counter() - t0
    text = table(records, embedding)
    differences = comparison_table(records, [r.label for r in split.test])
    efficiency = label_efficiency(records, baseline=STANDARD)
    print(f"\n## Results: {title or recipe.name} ({lm.name}, per-query k={args.k}, "
          f"pool {len(split.pool)}, test {len(split.test)})\n\n{text}\n\n{differences}\n", flush=True)
    print(f"label efficiency (smallest budget reaching {STANDARD}'s accuracy at its largest budget):\n  " +
          "\n  ".join(str(e) for e in efficiency.values()), flush=True)
    plan, examples, why = explain_choices(lm, task, split, pool_probe, exp.test_probe, args)
    print("\n" + why, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    files = {"curve": plot_learning_curves(records, out / "learning_curve.png",
                                           title=f"{title or recipe.name}: accuracy vs labels (per-query, k={args.k})"),
             "neurons": plot_critical_neurons(pool_probe, out / "critical_neurons.png"),
             "differences": _forest(records, split, out / "differences.png", title or recipe.name),
             "csv": out / "results.csv", "json": out / "results.json"}
    write_records(files["csv"], records)
    summary = dict(recipe=recipe.name, title=title, model=lm.name, data=str(args.data), dataset=recipe.dataset,
                   labels=list(task.labels), pool_size=len(split.pool), validation_size=len(split.validation),
                   test_size=len(split.test), budgets=args.budgets, seeds=args.seeds, k=args.k, regime="per-query",
                   pipelines={p.name: str(p) for p in pipelines}, embedding_baseline=embedding,
                   embedding_validation=validation, smoke=args.smoke, seconds=round(seconds, 1),
                   load_average_start=load_start, load_average_end=os.getloadavg(), cpu_count=os.cpu_count(),
                   date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), command=args.command,
                   table=text, differences=differences, label_efficiency={k: str(v) for k, v in efficiency.items()},
                   critical_neurons=dict(count=len(pool_probe.critical), fraction=pool_probe.critical.fraction,
                                         per_layer=[int(c) for c in pool_probe.critical.per_layer_counts()]),
                   plan=dict(budget=args.budget, ids=[split.pool[i].id for i in plan.indices],
                             labels=[e["label"] for e in examples], why=[p.why() for p in plan.picks]),
                   records=[r.to_row() for r in records])
    files["json"].write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {', '.join(str(p) for p in files.values())} ({seconds:.0f} s)", flush=True)
    return RecipeResult(args, lm, task, split, records, embedding, validation, plan, examples, pool_probe, files, summary)


def _forest(records: Sequence, split: Split, path: Path, title: str) -> Path:
    """Forest plot of recommended minus each other pipeline, per budget and over budgets."""
    from neuroshot.plots import plot_forest
    from neuroshot.stats import compare_records

    rows = [dict(group=f"B = {c.budget}" if c.budget is not None else "all budgets", label=f"{REFERENCE} − {c.other}",
                 mean=c.difference.mean, low=c.difference.low, high=c.difference.high)
            for c in compare_records(records, [r.label for r in split.test], REFERENCE)]
    return plot_forest(rows, path, title=f"{title}: {REFERENCE} minus each pipeline (accuracy)")


def main(recipe: Recipe, argv: Sequence[str] | None = None,
         demo: Callable[[RecipeResult], None] | None = None) -> RecipeResult:
    """Parse the options, load the model and data, run and print everything, then ``demo(result)``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from neuroshot import load_model

    args = parse_args(recipe, argv)
    t0 = time.perf_counter()
    split = load_split(recipe, args)
    lm = load_model(args.model)
    result = evaluate(recipe, args, lm, split, args.out)
    if demo is not None:
        print("\n## Integration demo", flush=True)
        demo(result)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s wall-clock; 1-min load average {os.getloadavg()[0]:.1f} "
          f"(at the start {result.summary['load_average_start'][0]:.1f}) on {os.cpu_count()} CPU(s)", flush=True)
    result.summary["total_seconds"] = round(total, 1)
    result.files["json"].write_text(json.dumps(result.summary, indent=1) + "\n", encoding="utf-8")
    return result


def demo_queries(result: RecipeResult, n: int | None = None) -> list:
    """The test items the integration demos run on (a few; 2 in smoke mode)."""
    return result.split.test[: n or (2 if result.args.smoke else 5)]


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
