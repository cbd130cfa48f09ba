"""``NeuronAwareFewShot``: a DSPy teleprompter that chooses demonstrations by the model's neurons."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from neuroshot import (AnnotationItem, ModelLike, NeuroshotError, Plan, ProbeResult, SimulatedAnnotator,
                       export_for_annotation, get_pipeline, get_retriever, get_strategy, order_planned, probe,
                       read_annotations, resolve_model)
from neuroshot._validation import check_k_available

from ._task import SignatureTask, label_field, program_signature
from .program import NeuronFewShotProgram, retriever_settings

# DSPy users label one example at a time; the core's ``neuroshot.Annotator`` (ids -> labels) is taken as a
# SimulatedAnnotator, for evaluation
ExampleAnnotator = Callable[[dspy.Example], "str | None"] | SimulatedAnnotator


class AnnotationPending(NeuroshotError):
    """The planned items were exported for annotation and are not labeled yet."""


class NeuronAwareFewShot(Teleprompter):
    """Choose few-shot demonstrations by the FFN neurons the local model uses for the task.

    Like ``LabeledFewShot``, but the demos are chosen, not sampled: the trainset's inputs are
    probed on the local model (``model``), and the planning strategy of ``pipeline`` (default
    ``"recommended"``; or ``strategy``) picks the items that best cover what the model and a
    sentence embedding see in the pool. Labels are never read by the planner.

    - **static** (default): ``compile`` returns a copy of the student whose predictors carry the
      ``k`` planned demos (saved and loaded with DSPy's ``save``/``load``).
    - **per-query** (``per_query=True``): ``compile`` returns a :class:`NeuronFewShotProgram`
      that retrieves ``k`` demos per call from the annotated set with the pipeline's retriever (the
      recommended one: task-critical-neuron and MiniLM similarity, weighed on the annotated labels;
      ``retriever="neuron"`` for neurons only).
    - **active**: pass an unlabeled trainset with ``annotator=`` (a callable ``example -> label``
      or a ``neuroshot.SimulatedAnnotator``), or with ``export_path=`` (a .jsonl, .csv or Label
      Studio .json file written for annotators, read back on the next ``compile``). The planner
      picks ``budget`` items (default ``k``), only those are labeled, and only those become demos.

    Static demos come in the pipeline's order: the recommended pipeline's is the order (of 8 seeded
    ones) under which the model's answers on the other trainset inputs spread most evenly over the
    labels (``neuroshot.order_planned``); others keep the plan's order.

    After ``compile``, ``plan_`` holds the plan, ``demo_rows_`` the trainset rows of the demos in
    prompt order, and ``explain()`` says why each item was chosen.
    """

    def __init__(self, k: int = 4, *, model: ModelLike = "default", pipeline: str = "recommended",
                 strategy: str | None = None, strategy_params: Mapping[str, Any] | None = None,
                 per_query: bool = False, retriever: str | None = None,
                 retriever_params: Mapping[str, Any] | None = None, mmr: float | None = None,
                 balance: bool | None = None, labels: Sequence[str] | None = None, output_field: str | None = None,
                 annotator: ExampleAnnotator | None = None, budget: int | None = None,
                 export_path: str | os.PathLike | None = None, method: str = "direct_logit", top_k: int = 64,
                 critical_fraction: float = 0.01, max_text_tokens: int | None = None, store: str | None = None,
                 seed: int = 0, progress: bool = True) -> None:
        if not isinstance(k, int) or k < 1:
            raise NeuroshotError(f"k must be a whole number >= 1, got {k!r}")
        if budget is not None and (not isinstance(budget, int) or budget < 1):
            raise NeuroshotError(f"budget must be a whole number >= 1, got {budget!r}")
        if annotator is not None and export_path is not None:
            raise NeuroshotError("pass annotator= or export_path=, not both")
        self.k, self.model = k, model
        chosen = get_pipeline(pipeline).customized(strategy=strategy, strategy_params=strategy_params)
        self.pipeline, self.strategy, self.strategy_params = chosen.name, chosen.strategy, dict(chosen.strategy_params)
        self.order = chosen.order  # static demos: as planned, or "entropy" (neuroshot.order_planned)
        self.per_query, self.mmr, self.balance = per_query, mmr, balance
        self.retriever, self.retriever_params = retriever_settings(retriever, dict(retriever_params or {}), mmr,
                                                                   balance, chosen.name)
        self.labels, self.output_field = None if labels is None else list(labels), output_field
        self.annotator, self.budget, self.export_path = annotator, budget, export_path
        self.method, self.top_k, self.critical_fraction = method, top_k, critical_fraction
        self.max_text_tokens, self.store, self.seed, self.progress = max_text_tokens, store, seed, progress
        get_strategy(self.strategy, **self.strategy_params)  # fail fast on a bad name or parameter
        get_retriever(self.retriever, **self.retriever_params)

    @property
    def active(self) -> bool:
        """Whether labels come from an annotator or an annotation file rather than the trainset."""
        return self.annotator is not None or self.export_path is not None

    def compile(self, student: dspy.Module, *, trainset: Sequence[dspy.Example], teacher: dspy.Module | None = None,
                valset: Sequence[dspy.Example] | None = None) -> dspy.Module:
        """Return a new program with neuron-chosen demos (``teacher`` and ``valset`` are not used)."""
        trainset = list(trainset)
        if not trainset:
            raise NeuroshotError("the trainset is empty")
        signature = program_signature(student)
        field = self.output_field or label_field(signature)
        known = () if self.active else [ex.get(field) for ex in trainset]
        spec = SignatureTask.from_signature(signature, output_field=field, labels=self.labels, trainset_labels=known,
                                            max_text_tokens=self.max_text_tokens)
        self.spec_ = spec
        texts = [spec.text(ex, f"trainset example {i}") for i, ex in enumerate(trainset)]
        self.ids_ = [str(ex.get("id", i)) for i, ex in enumerate(trainset)]
        if len(set(self.ids_)) != len(self.ids_):
            raise NeuroshotError("trainset examples have duplicate 'id' values")
        lm = resolve_model(self.model)
        pool = probe(lm, spec.task, texts, method=self.method, top_k=self.top_k,
                     critical_fraction=self.critical_fraction, store=self.store, ids=self.ids_, progress=self.progress)
        self.probe_, self.texts_ = pool, texts

        if self.active:
            budget = self.budget or (self.k if not self.per_query else None)
            if budget is None:
                raise NeuroshotError("per_query active mode needs budget= (how many items to annotate)")
            rows, labels = self._annotate(trainset, self._plan(pool, budget))
        else:
            labels_all = [spec.label_of(ex, f"trainset example {i}") for i, ex in enumerate(trainset)]
            size = self.budget if self.per_query else check_k_available(self.k, len(trainset))
            if size is None or size >= len(trainset):
                self.plan_ = None
                rows = list(range(len(trainset)))
            else:
                rows = self._plan(pool, size).indices
            labels = [labels_all[i] for i in rows]
        if not rows:
            raise NeuroshotError("no planned item was annotated: nothing to use as demonstrations")
        if not self.per_query and self.order == "entropy" and len(rows) < len(trainset):
            by_row = dict(zip(rows, labels))
            rows = order_planned(lm, spec.task, texts, rows, labels, seed=self.seed)
            labels = [by_row[i] for i in rows]
        self.demo_rows_ = list(rows)
        demos = [self._demo(trainset[i], label) for i, label in zip(rows, labels)]

        if self.per_query:
            return NeuronFewShotProgram(student.reset_copy(), demos, k=self.k, model=lm, retriever=self.retriever,
                                        retriever_params=self.retriever_params, output_field=spec.output_field,
                                        labels=list(spec.task.labels), method=self.method, top_k=self.top_k,
                                        max_text_tokens=self.max_text_tokens, store=self.store,
                                        critical=pool.critical, _annotated_probe=pool.subset(rows))
        program = student.reset_copy()
        for _, predictor in program.named_predictors():
            predictor.demos = list(demos[: self.k])
        program._compiled = True
        return program

    def explain(self) -> str:
        """Why each planned item was chosen (rank, text, score parts, top neurons)."""
        if getattr(self, "plan_", None) is None:
            return "no plan: every trainset example was used"
        return self.plan_.explain(self.texts_)

    # ------------------------------------------------------------------ internals

    def _plan(self, pool: ProbeResult, budget: int) -> Plan:
        if budget > len(pool):
            raise NeuroshotError(f"budget {budget} is larger than the trainset ({len(pool)} examples)")
        self.plan_ = get_strategy(self.strategy, **self.strategy_params).plan(pool, budget, seed=self.seed)
        return self.plan_

    def _demo(self, example: dspy.Example, label: str) -> dspy.Example:
        if self.active:  # only the inputs and the annotated label, never a label the example carried
            return self.spec_.example(example, label)
        return example if example.get(self.spec_.output_field) == label else self.spec_.example(example, label)

    def _annotate(self, trainset: list[dspy.Example], plan: Plan) -> tuple[list[int], list[str]]:
        """Ask for the planned items' labels; returns the rows that got one (plan order) and the labels."""
        spec, rows = self.spec_, plan.indices
        ids = [self.ids_[i] for i in rows]
        if isinstance(self.annotator, SimulatedAnnotator):
            answers = self.annotator(ids)
        elif self.annotator is not None:
            answers = {}
            for i, item_id in zip(rows, ids):
                shown = dspy.Example(**{f: trainset[i][f] for f in spec.input_fields}).with_inputs(*spec.input_fields)
                answer = self.annotator(shown)
                if answer is not None and str(answer).strip():
                    answers[item_id] = answer
        else:
            answers = self._from_file(plan, ids)
        got = [(i, spec.canonical(answers[item_id], f"annotation of item {item_id!r}"))
               for i, item_id in zip(rows, ids) if item_id in answers]
        return [i for i, _ in got], [label for _, label in got]

    def _from_file(self, plan: Plan, ids: list[str]) -> dict[str, str]:
        path = Path(self.export_path)
        labels = list(self.spec_.task.labels)
        if not path.exists():
            items = [AnnotationItem(item_id, self.texts_[p.index], p.rank, p.why()) for item_id, p in zip(ids, plan.picks)]
            export_for_annotation(items, path, labels)
            raise AnnotationPending(f"wrote {len(items)} planned item(s) to {path}: fill in their labels "
                                    f"({', '.join(labels)}) and compile again")
        answers = {k: v for k, v in read_annotations(path, labels).items() if k in set(ids)}
        if not answers:
            raise AnnotationPending(f"{path} has no labels for the {len(ids)} planned item(s) yet: label them and "
                                    "compile again")
        return answers
