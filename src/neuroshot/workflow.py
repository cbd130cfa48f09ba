"""The shortest path through a pipeline: probe and plan a pool in one call, then turn the labels
that come back into demonstrations, per query or for one static prompt.

``plan_annotations(lm, task, pool, budget)`` runs the ``recommended`` pipeline (its planner, its
retriever and their settings, :mod:`neuroshot.pipelines`) with nothing to copy from the docs;
the :class:`AnnotationPlan` it returns exports the items to label and, given ``{id: label}`` (what
:func:`~neuroshot.annotation.read_annotations` returns), builds the pipeline's retriever.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .annotation import AnnotationItem, export_for_annotation
from ._validation import check_whole
from .data import Record, load_records
from .errors import NeuroshotError
from .models import LanguageModel, ModelLike, resolve_model
from .ordering import order_planned
from .pipelines import Pipeline, get_pipeline
from .probing import ProbeResult, probe
from .retrieval import Retriever
from .strategies import Plan
from .task import Demonstration, Task

__all__ = ["AnnotationPlan", "plan_annotations"]

Pool = str | os.PathLike | Sequence[Record] | Sequence[str]


@dataclass
class AnnotationPlan:
    """Which pool items to annotate (``plan``, in plan order), the pool's probe, and the pipeline that
    planned them, whose retriever later turns the labels into demonstrations."""

    pipeline: Pipeline
    probe: ProbeResult  # the pool's zero-shot probe: texts, ids, signatures, critical neurons (no labels)
    plan: Plan
    probe_kwargs: dict[str, Any] = field(default_factory=dict)  # the probe settings, reused for queries

    @property
    def task(self) -> Task:
        return self.probe.task

    @property
    def records(self) -> list[Record]:
        """The items to annotate, in plan order (ids and texts; never a label)."""
        return [Record(self.probe.ids[i], self.probe.texts[i]) for i in self.plan.indices]

    def explain(self, width: int = 70) -> str:
        """Rank, text and why each item was chosen."""
        return self.plan.explain(self.probe.texts, width)

    def items(self) -> list[AnnotationItem]:
        """The items as an annotator sees them (id, text, rank, why)."""
        return [AnnotationItem(self.probe.ids[p.index], self.probe.texts[p.index], p.rank, p.why())
                for p in self.plan.picks]

    def export(self, path: str | os.PathLike, fmt: str | None = None) -> Path:
        """Write the items to label: ``.csv`` and ``.jsonl`` with an empty ``label`` column, ``.json`` for
        Label Studio (plus its labeling config); read them back with ``read_annotations``."""
        return export_for_annotation(self.items(), path, self.task.labels, fmt)

    def labelled(self, labels: Mapping[str, str]) -> tuple[list[int], list[str]]:
        """Pool positions and labels of the labelled items (``labels``: ``{id: label}``): planned items in
        plan order, then any others in pool order."""
        if not labels:
            raise NeuroshotError("no labels yet: annotate some planned items first")
        position = {item_id: n for n, item_id in enumerate(self.probe.ids)}
        unknown = [item_id for item_id in labels if item_id not in position]
        if unknown:
            raise NeuroshotError(f"{len(unknown)} labelled id(s) are not in the pool (e.g. {unknown[0]!r})")
        for label in labels.values():
            self.task.label_index(label)  # raises on a label outside the task
        rank = {n: r for r, n in enumerate(self.plan.indices)}
        rows = sorted((position[item_id] for item_id in labels), key=lambda n: (rank.get(n, len(rank)), n))
        return rows, [labels[self.probe.ids[n]] for n in rows]

    def retriever(self, labels: Mapping[str, str], seed: int = 0) -> Retriever:
        """The pipeline's retriever, fitted on the labelled pool items."""
        rows, names = self.labelled(labels)
        return self.pipeline.make_retriever(seed).fit(self.probe.subset(rows), names)

    def demonstrations(self, lm: ModelLike, texts: Sequence[str], labels: Mapping[str, str], k: int = 4,
                       seed: int = 0) -> list[list[Demonstration]]:
        """Per text, ``k`` labelled items as demonstrations (the most similar last, right before the text):
        the texts are probed like the pool (no label needed) and the pipeline's retriever chooses."""
        queries = probe(resolve_model(lm), self.task, list(texts), **{**self.probe_kwargs, "progress": False,
                                                                        "store": None})
        return self.retriever(labels, seed).demonstrations(queries, k)

    def static_demonstrations(self, lm: ModelLike, labels: Mapping[str, str], seed: int = 0) -> list[Demonstration]:
        """Every labelled item in one prompt, in the pipeline's static order (``recommended``: the order under
        which the model's answers on unlabeled pool texts spread most evenly, ``neuroshot.order_planned``)."""
        rows, names = self.labelled(labels)
        if self.pipeline.order == "entropy":
            by_row = dict(zip(rows, names))
            rows = order_planned(resolve_model(lm), self.task, self.probe.texts, rows, names, seed=seed)
            names = [by_row[n] for n in rows]
        return [Demonstration(self.probe.texts[n], label) for n, label in zip(rows, names)]


def plan_annotations(lm: ModelLike, task: Task, pool: Pool, budget: int, *,
                     pipeline: str | Pipeline = "recommended", labeled: Sequence[str] | Mapping[str, str] = (),
                     seed: int = 0, progress: bool = True, **probe_kwargs: Any) -> AnnotationPlan:
    """Probe ``pool`` on ``lm`` and plan ``budget`` items to annotate with ``pipeline`` (``recommended``).

    ``pool``: a JSONL / CSV / Parquet file (``load_records``), records, or plain texts (ids ``"0"``,
    ``"1"``, ...); gold labels in it are never read. ``labeled``: ids already annotated (never planned
    again). ``probe_kwargs`` go to :func:`~neuroshot.probing.probe` (``store=`` caches the signatures
    on disk, so a rerun probes nothing twice). A budget larger than the unlabeled pool is an error,
    raised before anything is probed.
    """
    records = _pool_records(pool)
    budget = check_whole("budget", budget)
    ids = [r.id for r in records]
    position = {item_id: n for n, item_id in enumerate(ids)}
    missing = [item_id for item_id in labeled if item_id not in position]
    if missing:
        raise NeuroshotError(f"{len(missing)} labeled id(s) are not in the pool (e.g. {missing[0]!r})")
    free = len(records) - len(set(labeled))
    if budget > free:
        raise NeuroshotError(f"budget {budget} is larger than the {free} unlabeled items in the pool: "
                             f"ask for at most {free}, or add items to the pool")
    chosen = get_pipeline(pipeline)
    strategy = chosen.make_strategy()  # fails on bad settings before the probe
    model: LanguageModel = resolve_model(lm)
    probed = probe(model, task, [r.text for r in records], ids=ids, progress=progress, **probe_kwargs)
    plan = strategy.plan(probed, budget, labeled=sorted(position[i] for i in labeled), seed=seed)
    return AnnotationPlan(chosen, probed, plan, dict(probe_kwargs))


def _pool_records(pool: Pool) -> list[Record]:
    if isinstance(pool, (str, os.PathLike)):
        return load_records(pool)
    items = list(pool)
    if not items:
        raise NeuroshotError("nothing to plan: the pool is empty")
    if all(isinstance(item, Record) for item in items):
        return items
    if all(isinstance(item, str) for item in items):
        return [Record(str(n), text) for n, text in enumerate(items)]
    raise NeuroshotError("pool must be a file path, a list of neuroshot.Record or a list of texts")
