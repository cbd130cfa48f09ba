"""``neuroshot demo``: the whole loop on a small support-ticket set that ships with the package.

Its steps are ``neuroshot demo --help``'s description; what it measured, and why nothing here is
tuned on the demo's test tickets: docs/results.md, "The demo".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .data import Record, jsonl_rows, records_from_rows
from .evaluate import metrics
from .experiment import Experiment
from .models import cache_dir, load_model
from .pipelines import get_pipeline
from .scoring import predict_proba
from .stats import compare_records, mean_std
from .task import Task

DEMO_LABELS = ("account", "billing", "feedback", "returns", "shipping", "technical")
DEMO_TASK = Task(
    labels=DEMO_LABELS,
    instruction="Route each customer support ticket to one of these queues: {labels}.",
    input_template="Ticket: {text}\nQueue:",
    demo_template="Ticket: {text}\nQueue: {label}",
)


def demo_records() -> list[Record]:
    """The 150 original support tickets (6 queues x 25) shipped in the package."""
    raw = resources.files("neuroshot").joinpath("demo_data/support_tickets.jsonl").read_text(encoding="utf-8")
    return records_from_rows((row for _, row in jsonl_rows(raw, "demo data")), source="demo data")


def stratified_split(records: Sequence[Record], test_per_label: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Hold out ``test_per_label`` items of each label as the test set; the rest is the pool."""
    rng = np.random.default_rng(seed)
    test_ids: set[str] = set()
    for label in sorted({r.label for r in records}):
        ids = [r.id for r in records if r.label == label]
        test_ids.update(rng.choice(ids, size=min(test_per_label, len(ids)), replace=False).tolist())
    return [r for r in records if r.id not in test_ids], [r for r in records if r.id in test_ids]


@dataclass
class DemoRow:
    """Test accuracies of one pipeline over seeds."""

    pipeline: str
    accuracies: list[float] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return f"{self.pipeline:<12} {mean_std(self.accuracies):<13}   {len(self.accuracies)}"


def run_demo(model: str = "default", budget: int = 12, pipeline: str = "recommended", baseline: str = "random+knn",
             k: int = 4, seeds: Sequence[int] = (0, 1, 2), print_fn: Callable[[str], None] = print,
             progress: bool = True) -> list[DemoRow]:
    """Run the demo and return the accuracy rows (also printed): zero-shot, ``pipeline`` and ``baseline``,
    each annotating ``budget`` tickets and showing ``k`` of them to each test ticket."""
    pool, test = stratified_split(demo_records(), test_per_label=8)
    print_fn(f"Demo: {len(pool)} unlabeled support tickets, {len(test)} test tickets, {len(DEMO_LABELS)} queues; "
             f"budget {budget}, {k} demonstrations per ticket; model {model}")
    lm = load_model(model)
    exp = Experiment(lm, DEMO_TASK, pool, test, regime="per-query", k=k, probe_kwargs={"store": cache_dir() / "signatures"},
                     progress=progress)
    result = exp.pool_probe
    print_fn(f"Probed {len(pool)} items: {len(result.critical)} task-critical neurons; per layer "
             + " ".join(str(c) for c in result.critical.per_layer_counts()))
    mine, theirs = get_pipeline(pipeline), get_pipeline(baseline)
    plan = mine.make_strategy().plan(result, budget, seed=seeds[0])
    print_fn(f"\nChosen by {mine} (the tickets an expert would label):")
    for pick in plan.picks:
        print_fn(f"{pick.rank:>3}. [{pool[pick.index].label}] {pool[pick.index].text}\n       why: {pick.why()}")

    gold = [r.label for r in test]
    zero = metrics(DEMO_TASK, gold, predict_proba(lm, DEMO_TASK, [r.text for r in test], []).argmax(1)).accuracy
    records = exp.run([mine, theirs], [budget], seeds)
    rows = [DemoRow("zero-shot", [zero])] + [DemoRow(p.name, [r.accuracy for r in records if r.pipeline == p.name])
                                              for p in (mine, theirs)]
    print_fn(f"\nTest accuracy ({len(test)} test tickets; mean ± std over seeds {list(seeds)}):")
    print_fn(f"  {'pipeline':<12} {'accuracy':<14}   seeds")
    for row in rows:
        print_fn("  " + row.summary)
    for c in compare_records(records, gold, mine.name):
        if c.budget is not None:
            print_fn(f"\n{mine.name} minus {c.other}: {c.difference}  (paired over the {len(test)} tickets and "
                     f"{c.difference.n_seeds} seeds; 95% bootstrap interval; {len(test)} tickets cannot tell a few "
                     "points apart: benchmarks/RESULTS.md compares on full test splits)")
    return rows
