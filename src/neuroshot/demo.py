"""``neuroshot demo``: the whole loop on a small support-ticket set that ships with the package.

Probe the pool on the default model, plan a budget, let a simulated annotator label the picks,
show the chosen demonstrations with why, and compare test accuracy with random picks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .annotation import SimulatedAnnotator
from .data import Record, records_from_rows
from .evaluate import metrics
from .models import cache_dir, load_model
from .probing import probe
from .scoring import calibrate, content_free_proba, predict_proba
from .strategies import get_strategy
from .task import Demonstration, Task

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
    return records_from_rows((json.loads(line) for line in raw.splitlines() if line.strip()), source="demo data")


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
    """Test accuracies of one strategy over seeds, plain and contextually calibrated."""

    strategy: str
    accuracies: list[float] = field(default_factory=list)
    calibrated: list[float] = field(default_factory=list)

    @property
    def summary(self) -> str:
        def cell(values: list[float]) -> str:
            a = np.array(values)
            return f"{a.mean():.3f}" + (f" ± {a.std():.3f}" if len(a) > 1 else "        ")
        return f"{self.strategy:<16} {cell(self.accuracies)}   {cell(self.calibrated)}   {len(self.accuracies)}"


def run_demo(model: str = "default", budget: int = 6, strategy: str = "neuron_coverage",
             seeds: Sequence[int] = (0, 1, 2), print_fn: Callable[[str], None] = print,
             progress: bool = True) -> list[DemoRow]:
    """Run the demo and return the accuracy rows (also printed)."""
    pool, test = stratified_split(demo_records(), test_per_label=8)
    texts = [r.text for r in pool]
    annotator = SimulatedAnnotator.from_records(pool)  # reveals a gold label only once an item is picked
    print_fn(f"Demo: {len(pool)} unlabeled support tickets, {len(test)} test tickets, "
             f"{len(DEMO_LABELS)} queues; budget {budget}; model {model}")
    lm = load_model(model)
    result = probe(lm, DEMO_TASK, texts, store=cache_dir() / "signatures", progress=progress,
                   ids=[r.id for r in pool])
    print_fn(f"Probed {len(pool)} items: {len(result.critical)} task-critical neurons; per layer "
             + " ".join(str(c) for c in result.critical.per_layer_counts()))

    def score(demos: list[Demonstration]) -> tuple[float, float]:
        probs = predict_proba(lm, DEMO_TASK, [r.text for r in test], demos)
        fixed = calibrate(probs, content_free_proba(lm, DEMO_TASK, demos))
        gold = [r.label for r in test]
        return metrics(DEMO_TASK, gold, probs.argmax(1)).accuracy, metrics(DEMO_TASK, gold, fixed.argmax(1)).accuracy

    def demos_for(indices: list[int]) -> list[Demonstration]:
        labels = annotator([pool[i].id for i in indices])
        return [Demonstration(pool[i].text, labels[pool[i].id]) for i in indices]

    plan = get_strategy(strategy).plan(result, budget, seed=seeds[0])
    chosen = demos_for(plan.indices)
    print_fn(f"\nChosen by {strategy} (the demonstrations an expert would label):")
    for pick, demo in zip(plan.picks, chosen):
        print_fn(f"{pick.rank:>3}. [{demo.label}] {demo.text}\n       why: {pick.why()}")

    zero = score([])
    rows = [DemoRow("zero-shot", [zero[0]], [zero[1]]), DemoRow(strategy), DemoRow("random")]
    cache: dict[tuple[int, ...], tuple[float, float]] = {}
    for seed in seeds:
        for row in rows[1:]:
            indices = get_strategy(row.strategy).plan(result, budget, seed=seed).indices
            key = tuple(indices)
            if key not in cache:
                cache[key] = score(demos_for(indices))
            row.accuracies.append(cache[key][0])
            row.calibrated.append(cache[key][1])
    print_fn(f"\nTest accuracy with {budget} static demonstrations ({len(test)} test tickets; mean ± std over seeds"
             f" {list(seeds)}; calibrated = contextual calibration, Zhao et al. 2021):")
    print_fn(f"  {'strategy':<16} {'plain':<13}   {'calibrated':<13}   seeds")
    for row in rows:
        print_fn("  " + row.summary)
    return rows
