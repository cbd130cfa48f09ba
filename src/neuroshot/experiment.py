"""Experiments: plan with a strategy, annotate (simulated), evaluate; learning curves and label efficiency.

One cell = (strategy, budget, seed). The pool is probed once (zero-shot, texts only: a probe
never holds gold labels); the strategy plans on that probe; a fresh
:class:`~neuroshot.annotation.SimulatedAnnotator` reveals the gold labels of exactly the
planned ids; the annotated items become the demonstrations: all of them in one ``static`` prompt
(in plan order, or the pipeline's ``order``), or ``k`` per test item from a retriever
(``per-query``; both regimes: :mod:`neuroshot.evaluate`). ``"active:<name>"`` runs
:func:`neuroshot.active.active_plan` rounds on top of ``<name>``. Usage: docs/results.md,
"Measure it on your data".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .annotation import SimulatedAnnotator
from .data import Record
from ._io import write_rows
from ._registry import parameters
from ._validation import check_choice, check_whole
from .errors import NeuroshotError
from .evaluate import (content_free_per_query, content_free_static, metrics, predict_proba_per_query,
                       predict_proba_static)
from .models import LanguageModel
from .ordering import order_planned
from .pipelines import Pipeline
from .probing import ProbeResult, probe
from .scoring import calibrate
from .task import Demonstration, Task

__all__ = ["ExperimentRecord", "Experiment", "run_experiment", "learning_curves", "LabelEfficiency",
           "label_efficiency", "REGIMES"]

REGIMES = ("static", "per-query")
ORDER_TEXTS = 64  # unlabeled pool texts a pipeline with order="entropy" reads its candidate orders on


@dataclass
class ExperimentRecord:
    """The result of one (strategy, budget, seed) cell. ``ids``: the annotated pool ids, plan order.

    ``accuracy_calibrated`` / ``macro_f1_calibrated`` are filled when the experiment calibrates
    (contextual calibration, scored from the same probabilities as the plain numbers).
    ``seconds``: wall-clock time of planning, annotation and evaluation (the shared probes excluded).
    """

    strategy: str
    budget: int
    seed: int
    regime: str
    accuracy: float
    macro_f1: float
    seconds: float
    accuracy_calibrated: float | None = None
    macro_f1_calibrated: float | None = None
    k: int | None = None
    n_test: int = 0
    ids: list[str] = field(default_factory=list)
    recall: dict[str, float] = field(default_factory=dict)
    pipeline: str | None = None
    retriever: str | None = None
    predicted: list[str] = field(default_factory=list)  # per test item, in test order
    predicted_calibrated: list[str] | None = None
    retriever_fitted: dict[str, Any] = field(default_factory=dict)  # what the retriever chose when fitted

    def correct(self, gold: Sequence[str], calibrated: bool = False) -> np.ndarray:
        """Per test item, 1 where the prediction equals ``gold`` (the test labels, in test order), else 0."""
        predicted = self.predicted_calibrated if calibrated else self.predicted
        if predicted is None or len(predicted) != len(gold):
            raise NeuroshotError(f"{self.pipeline or self.strategy}: {0 if predicted is None else len(predicted)} "
                                 f"predictions for {len(gold)} test labels")
        return np.array([p == g for p, g in zip(predicted, gold)], dtype=np.int8)

    def to_row(self) -> dict[str, Any]:
        """A flat row for CSV: ids joined by spaces, per-class recall as ``recall:<label>`` columns
        (the per-item predictions are left to JSONL)."""
        row = {k: v for k, v in asdict(self).items()
               if k not in ("ids", "recall", "predicted", "predicted_calibrated")}
        row.update({f"recall:{label}": value for label, value in self.recall.items()})
        row["ids"] = " ".join(self.ids)
        return row


class Experiment:
    """Run strategies x budgets x seeds on one pool and test set with one model and task.

    ``pool`` and ``test`` are :class:`~neuroshot.data.Record` lists with gold labels (the pool's
    play the annotator; a strategy never sees them). ``probe_kwargs`` go to every probe
    (method, top_k, critical_fraction, store, ...). ``rounds`` is used by ``active:`` strategies.
    A strategy name runs with ``retriever`` (default ``"embedding"``, MiniLM kNN: the same pipeline
    ``get_pipeline(name)`` gives); a :class:`~neuroshot.pipelines.Pipeline` brings its own.
    A budget larger than the pool raises before anything is probed.

    Everything that chooses demonstrations (plan, static order, retrieval) reads ``lm``; ``answer_lm``
    (default ``lm``) only answers the prompts (and their content-free calibration): the split of an
    app whose LLM is another model than the local one neuroshot probes (docs/served-llms.md).
    """

    def __init__(self, lm: LanguageModel, task: Task, pool: Sequence[Record], test: Sequence[Record], *,
                 regime: str = "static", k: int = 4, retriever: str = "embedding",
                 retriever_params: Mapping[str, Any] | None = None, calibrated: bool = False,
                 rounds: int = 3, strategy_params: Mapping[str, Mapping[str, Any]] | None = None,
                 probe_kwargs: Mapping[str, Any] | None = None, batch_size: int = 16,
                 pool_probe: ProbeResult | None = None, answer_lm: LanguageModel | None = None,
                 progress: bool = True) -> None:
        check_choice("regime", regime, REGIMES)
        if regime == "per-query":
            check_whole("k", k)
        _check_records(task, pool, "pool")
        _check_records(task, test, "test set")
        overlap = {r.text.strip() for r in pool} & {r.text.strip() for r in test}
        if overlap:
            example = sorted(overlap)[0][:60]
            raise NeuroshotError(f"{len(overlap)} test text(s) are also in the pool (e.g. {example!r}): "
                                 "test items must never be selectable")
        if pool_probe is not None and list(pool_probe.texts) != [r.text for r in pool]:
            raise NeuroshotError("pool_probe must be the probe of the pool's texts, in order")
        self.lm, self.task, self.pool, self.test = lm, task, list(pool), list(test)
        self.answer_lm = lm if answer_lm is None else answer_lm
        self.regime, self.k, self.retriever, self.calibrated = regime, k, retriever, calibrated
        self.retriever_params = dict(retriever_params or {})
        self.rounds, self.batch_size, self.progress = rounds, batch_size, progress
        self.strategy_params = {name: dict(p) for name, p in (strategy_params or {}).items()}
        self.probe_kwargs = dict(probe_kwargs or {})
        if pool_probe is not None:
            self.pool_probe = pool_probe
        self._scored: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}  # same demos -> same scores

    @cached_property
    def pool_probe(self) -> ProbeResult:
        """The zero-shot probe of the pool's texts (computed once)."""
        return self._probe(self.pool)

    @cached_property
    def test_probe(self) -> ProbeResult:
        """The zero-shot probe of the test texts (per-query retrieval reads its signatures, never its labels)."""
        return self._probe(self.test)

    def _probe(self, records: Sequence[Record]) -> ProbeResult:
        return probe(self.lm, self.task, [r.text for r in records], ids=[r.id for r in records],
                     progress=self.progress, **self.probe_kwargs)

    def pipeline(self, strategy: str | Pipeline) -> Pipeline:
        """``strategy`` as a pipeline: a :class:`~neuroshot.pipelines.Pipeline` as it is, a strategy name
        with this experiment's retriever and parameters."""
        if isinstance(strategy, Pipeline):
            return strategy
        base = strategy.partition(":")[2] or strategy  # "active:neufs" takes neufs' parameters
        return Pipeline(strategy, strategy, self.retriever, self.strategy_params.get(base, {}), self.retriever_params)

    def plan(self, strategy: str | Pipeline, budget: int, seed: int,
             annotator: SimulatedAnnotator) -> tuple[list[int], dict[str, str]]:
        """Plan ``budget`` pool items and have ``annotator`` label exactly those: (pool indices, id -> label)."""
        from .strategies.active import ActiveStrategy

        planner = self.pipeline(strategy).make_strategy()
        if isinstance(planner, ActiveStrategy):
            from .active import active_plan

            result = active_plan(self.lm, self.task, [r.text for r in self.pool], planner, budget,
                                 annotator=annotator, ids=[r.id for r in self.pool], rounds=self.rounds, seed=seed,
                                 pool=self.pool_probe, context_demos=planner.context_demos,
                                 probe_kwargs=self.probe_kwargs, progress=self.progress)
            return result.indices, result.labels
        chosen = planner.plan(self.pool_probe, budget, seed=seed).indices
        return chosen, dict(annotator([self.pool[i].id for i in chosen]))

    def run_one(self, strategy: str | Pipeline, budget: int, seed: int, *,
                annotator: SimulatedAnnotator | None = None) -> ExperimentRecord:
        """Plan, annotate and evaluate one cell: a strategy (with this experiment's retriever) or a pipeline."""
        pipeline = self.pipeline(strategy)
        strategy = pipeline.strategy
        annotator = annotator if annotator is not None else SimulatedAnnotator.from_records(self.pool)
        per_query = self.regime == "per-query"
        _ = self.pool_probe  # probe outside the timed cell
        if per_query:
            _ = self.test_probe
        before = set(getattr(annotator, "revealed", ()))
        t0 = time.perf_counter()
        chosen, labels = self.plan(pipeline, budget, seed, annotator)
        ids = [self.pool[i].id for i in chosen]
        if len(set(ids)) != len(ids) or len(ids) != budget or set(labels) != set(ids):
            raise NeuroshotError(f"{strategy}: planned {len(set(ids))} distinct items for a budget of {budget}")
        if not set(getattr(annotator, "revealed", ())) - before <= set(ids):
            raise NeuroshotError(f"{strategy}: labels of unplanned items were revealed")
        gold = [r.label for r in self.test]
        if per_query:  # the seed matters to a retriever that takes one
            from .retrieval import RETRIEVERS

            retrieval = (pipeline.retriever, json.dumps(dict(pipeline.retriever_params), sort_keys=True, default=str),
                         seed if "seed" in parameters(RETRIEVERS.get(pipeline.retriever, object)) else None)
        else:  # the plan's order does not depend on the seed
            retrieval = None if pipeline.order == "plan" else (pipeline.order, seed)
        key = (tuple(ids), tuple(labels[i] for i in ids), retrieval)
        if key not in self._scored:  # a deterministic strategy plans the same items for every seed
            self._scored[key] = self._score(pipeline, chosen, [labels[i] for i in ids], seed)
        probs, bias, fitted = self._scored[key]
        plain = metrics(self.task, gold, probs.argmax(1))
        fixed_pred = calibrate(probs, bias).argmax(1) if bias is not None else None
        fixed = metrics(self.task, gold, fixed_pred) if fixed_pred is not None else None
        names = self.task.labels
        return ExperimentRecord(strategy, budget, seed, self.regime, plain.accuracy, plain.macro_f1,
                                time.perf_counter() - t0, fixed.accuracy if fixed else None,
                                fixed.macro_f1 if fixed else None, self.k if per_query else None,
                                len(gold), ids, plain.recall, pipeline.name,
                                pipeline.retriever if per_query else None, [names[i] for i in probs.argmax(1)],
                                None if fixed_pred is None else [names[i] for i in fixed_pred], fitted)

    def _score(self, pipeline: Pipeline, chosen: Sequence[int], labels: Sequence[str],
               seed: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Test-set label probabilities with the annotated items as demonstrations, the content-free bias,
        and what the retriever chose when fitted (e.g. the hybrid retriever's weight)."""
        fitted: dict[str, Any] = {}
        if self.regime == "static":
            if pipeline.order == "entropy":
                by_index = dict(zip(chosen, labels))
                chosen = order_planned(self.lm, self.task, [r.text for r in self.pool], list(chosen), list(labels),
                                       unlabeled=ORDER_TEXTS, seed=seed, batch_size=self.batch_size)
                labels = [by_index[i] for i in chosen]
            demos = [Demonstration(self.pool[i].text, label) for i, label in zip(chosen, labels)]
            predict, content_free = predict_proba_static, content_free_static
        else:
            demos = self.demonstrations(chosen, labels, seed, pipeline, fitted)  # per test item
            predict, content_free = predict_proba_per_query, content_free_per_query
        probs = predict(self.answer_lm, self.task, [r.text for r in self.test], demos, progress=self.progress,
                        batch_size=self.batch_size)
        bias = content_free(self.answer_lm, self.task, demos, batch_size=self.batch_size) if self.calibrated else None
        return probs, bias, fitted

    def demonstrations(self, chosen: Sequence[int], labels: Sequence[str], seed: int,
                       pipeline: Pipeline | None = None,
                       fitted: dict[str, Any] | None = None) -> list[list[Demonstration]]:
        """Per test item, ``k`` demonstrations retrieved from the annotated items (by ``pipeline``'s
        retriever, else this experiment's); ``fitted`` receives the retriever's fitted scalars."""
        retriever = self.fitted_retriever(chosen, labels, seed, pipeline)
        if fitted is not None:
            fitted.update(fitted_scalars(retriever))
        return retriever.demonstrations(self.test_probe, self.k)

    def fitted_retriever(self, chosen: Sequence[int], labels: Sequence[str], seed: int,
                         pipeline: Pipeline | None = None):
        """``pipeline``'s retriever (else this experiment's) fitted on the annotated items."""
        pipeline = pipeline or Pipeline("", "random", self.retriever, retriever_params=self.retriever_params)
        return pipeline.make_retriever(seed).fit(self.pool_probe.subset(list(chosen)), list(labels))

    def run(self, strategies: Iterable[str | Pipeline], budgets: Iterable[int], seeds: Iterable[int], *,
            skip: Callable[[Pipeline, int, int], bool] | None = None,
            on_record: Callable[[ExperimentRecord], None] | None = None) -> list[ExperimentRecord]:
        """Every (strategy, budget, seed) cell, in that nesting order: the one runner behind the CLI, the
        demo, the recipes and the benchmarks.

        ``skip(pipeline, budget, seed)`` returning True leaves a cell out (one already in a results
        file, so a killed run resumes where it stopped); ``on_record(record)`` is called as each cell
        finishes (to append it to that file, print it), so nothing finished is lost on interruption.
        """
        cells = [(self.pipeline(s), b, seed) for s in strategies for b in budgets for seed in seeds]
        cells = [c for c in cells if skip is None or not skip(*c)]
        for _, budget, _ in cells:  # before the pool is probed
            if check_whole("budget", budget) > len(self.pool):
                raise NeuroshotError(f"budget {budget} is larger than the {len(self.pool)} items in the pool")
        records = []
        for pipeline, budget, seed in tqdm(cells, unit="cell", desc="experiment", disable=not self.progress):
            records.append(self.run_one(pipeline, budget, seed))
            if on_record is not None:
                on_record(records[-1])
        return records


def fitted_scalars(retriever) -> dict[str, Any]:
    """What a fitted retriever chose, as recorded with each cell: its public ``name_`` scalars."""
    return {k: v for k, v in vars(retriever).items()
            if k.endswith("_") and not k.startswith("_") and isinstance(v, (int, float, str))}


def run_experiment(lm: LanguageModel, task: Task, pool: Sequence[Record], test: Sequence[Record], strategy: str,
                   budget: int, seed: int = 0, **kwargs: Any) -> ExperimentRecord:
    """One cell: ``Experiment(lm, task, pool, test, **kwargs).run_one(strategy, budget, seed)``."""
    return Experiment(lm, task, pool, test, **kwargs).run_one(strategy, budget, seed)


def _check_records(task: Task, records: Sequence[Record], what: str) -> None:
    if not records:
        raise NeuroshotError(f"the {what} is empty")
    for r in records:
        if r.label is None:
            raise NeuroshotError(f"{what} item {r.id!r} has no gold label: evaluation needs labelled data")
        task.label_index(r.label)


# --------------------------------------------------------------------------------------------
# Learning curves and label efficiency
# --------------------------------------------------------------------------------------------

def write_records(path: str | os.PathLike, records: Iterable[ExperimentRecord]) -> None:
    """Save records atomically: ``.jsonl`` keeps every field (per-item predictions too), any other
    suffix writes CSV, one flat :meth:`ExperimentRecord.to_row` per record."""
    jsonl = Path(path).suffix.lower() == ".jsonl"
    write_rows(path, [asdict(r) if jsonl else r.to_row() for r in records])


Curves = Mapping[str, Mapping[int, Sequence[float]]]


def learning_curves(records: Iterable[ExperimentRecord], metric: str = "accuracy") -> dict[str, dict[int, list[float]]]:
    """``{strategy: {budget: [metric per seed]}}``, budgets ascending. One regime at a time."""
    records = list(records)
    regimes = {r.regime for r in records}
    if len(regimes) > 1:
        raise NeuroshotError(f"records mix regimes ({', '.join(sorted(regimes))}): build curves per regime")
    curves: dict[str, dict[int, list[float]]] = {}
    for r in records:
        value = getattr(r, metric, None)
        if value is None:
            raise NeuroshotError(f"records have no '{metric}' (calibrated metrics need calibrated=True)")
        curves.setdefault(r.pipeline or r.strategy, {}).setdefault(r.budget, []).append(float(value))
    return {s: dict(sorted(c.items())) for s, c in curves.items()}


@dataclass
class LabelEfficiency:
    """Smallest budget at which ``strategy`` reaches ``target`` = the baseline's mean at its largest budget.

    ``budget`` is None when no budget tried reaches it.
    """

    strategy: str
    budget: int | None
    target: float
    baseline: str
    baseline_budget: int

    @property
    def saving(self) -> float | None:
        """How many times fewer labels than the baseline needs (baseline budget / budget)."""
        return None if self.budget is None else self.baseline_budget / self.budget

    def __str__(self) -> str:
        if self.budget is None:
            return f"{self.strategy}: does not reach {self.target:.3f} within the budgets tried"
        saving = "the same budget" if self.budget == self.baseline_budget else f"{self.saving:.2g}x fewer labels"
        return f"{self.strategy}: reaches {self.target:.3f} at {self.budget} labels ({saving})"


def label_efficiency(curves: Curves | Iterable[ExperimentRecord], baseline: str = "random",
                     metric: str = "accuracy") -> dict[str, LabelEfficiency]:
    """Per strategy, the smallest budget whose mean (over seeds) reaches the baseline's mean at its
    largest budget (DESIGN.md, "label efficiency"). ``curves`` as from :func:`learning_curves`,
    or experiment records."""
    if not isinstance(curves, Mapping):
        curves = learning_curves(curves, metric)
    if baseline not in curves or not curves[baseline]:
        raise NeuroshotError(f"label efficiency needs the baseline '{baseline}' among the strategies "
                             f"({', '.join(sorted(curves)) or 'none'})")
    top = max(curves[baseline])
    target = float(np.mean(curves[baseline][top]))
    out = {}
    for name, curve in curves.items():
        reached = [b for b in sorted(curve) if float(np.mean(curve[b])) >= target - 1e-12]
        out[name] = LabelEfficiency(name, reached[0] if reached else None, target, baseline, top)
    return out
