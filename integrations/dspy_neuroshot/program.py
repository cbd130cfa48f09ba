"""A DSPy module that gives every call its own neuron-retrieved demonstrations."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import dspy
import numpy as np
from dspy.predict.parameter import Parameter

from neuroshot import (CriticalNeurons, ModelLike, NeuroshotError, ProbeResult, Retrieved, Retriever, get_pipeline,
                       get_retriever, probe, resolve_model)
from neuroshot.probing import item_scores

from ._task import SignatureTask, label_field, program_signature

log = logging.getLogger(__name__)


class AnnotatedSet(Parameter):
    """The annotated examples a per-query program retrieves from, saved and loaded with the program.

    DSPy saves every ``Parameter`` of a module through ``dump_state``/``load_state``; this one holds
    the examples (inputs and label), the retrieval settings, and the task-critical neurons, so a
    loaded program retrieves exactly as the compiled one did.
    """

    def __init__(self, examples: Sequence[dspy.Example] = (), settings: dict | None = None,
                 critical: CriticalNeurons | None = None) -> None:
        self.examples = list(examples)
        self.settings = dict(settings or {})
        self.critical = critical

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        critical = None
        if self.critical is not None:
            c = self.critical
            critical = {"ids": c.ids.tolist(), "weights": c.weights.tolist(), "n_layers": c.n_layers, "d_ff": c.d_ff,
                        "fraction": c.fraction, "by": c.by}
        return {"examples": [dict(ex.toDict()) for ex in self.examples],
                "input_keys": sorted(self.examples[0].inputs().keys()) if self.examples else [],
                "settings": self.settings, "critical": critical}

    def load_state(self, state: dict[str, Any]) -> AnnotatedSet:
        keys = state.get("input_keys", [])
        self.examples = [dspy.Example(**row).with_inputs(*keys) for row in state.get("examples", [])]
        self.settings = dict(state.get("settings", {}))
        c = state.get("critical")
        self.critical = None if c is None else CriticalNeurons(
            np.asarray(c["ids"], dtype=np.int64), np.asarray(c["weights"], dtype=np.float64), int(c["n_layers"]),
            int(c["d_ff"]), float(c["fraction"]), str(c["by"]))
        return self

    def __len__(self) -> int:
        return len(self.examples)


class _Runtime:
    """Loaded model, task and fitted retriever: rebuilt when needed, shared (not copied) by deep copies."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.spec: SignatureTask | None = None
        self.retriever: Retriever | None = None
        self.lm = None

    def __deepcopy__(self, memo: dict) -> _Runtime:
        return self


class NeuronFewShotProgram(dspy.Module):
    """Wrap a program so that each call gets ``k`` demonstrations retrieved by neuron signatures.

    For each call the input is probed on the local model, the ``k`` annotated examples whose
    signatures are closest on the task-critical neurons (with MMR diversity, optional label
    balance) are retrieved, and the program runs with them: a ``dspy.Predict`` or
    ``dspy.ChainOfThought`` through ``demos=``, any other program on a per-call shallow copy whose
    predictors carry the demos (thread-safe under ``dspy.Evaluate(num_threads=...)``).

    Save and load it with DSPy's own ``save``/``load``: the annotated set, settings and critical
    neurons are part of its state. After loading, the annotated examples are probed again on first
    use (one forward pass per example, or none with a probe ``store``).
    """

    def __init__(self, program: dspy.Module, annotated: Sequence[dspy.Example] = (), *, k: int = 4,
                 model: ModelLike = "default", retriever: str | None = None,
                 retriever_params: dict[str, Any] | None = None, mmr: float | None = None,
                 balance: bool | None = None, output_field: str | None = None, labels: Sequence[str] | None = None, method: str = "direct_logit",
                 top_k: int = 64, max_text_tokens: int | None = None, store: str | None = None,
                 critical: CriticalNeurons | None = None, _annotated_probe: ProbeResult | None = None) -> None:
        super().__init__()
        if not isinstance(k, int) or k < 1:
            raise NeuroshotError(f"k must be a whole number >= 1, got {k!r}")
        self.program = program
        self.model = model
        self.store = store
        name, params = retriever_settings(retriever, retriever_params, mmr, balance)
        get_retriever(name, **params)  # fail fast on a bad name or parameter
        settings = {"k": k, "retriever": name, "retriever_params": params, "output_field": output_field,
                    "labels": None if labels is None else list(labels), "method": method, "top_k": top_k,
                    "max_text_tokens": max_text_tokens}
        self.annotated = AnnotatedSet(annotated, settings, critical)
        self._runtime = _Runtime()
        if _annotated_probe is not None:
            self._fit(_annotated_probe)

    # ------------------------------------------------------------------ public

    @property
    def k(self) -> int:
        return int(self.annotated.settings["k"])

    def retrieve(self, **inputs: Any) -> list[tuple[dspy.Example, Retrieved]]:
        """The demonstrations this call would get, in prompt order (most similar last), each with
        why it was chosen (``Retrieved.why()``: similarity, MMR score, shared neurons)."""
        runtime = self._ready()
        query = self._probe([runtime.spec.text(inputs)])
        chosen = runtime.retriever.retrieve(query, self.k)[0]
        return [(self.annotated.examples[r.index], r) for r in reversed(chosen)]

    def forward(self, **inputs: Any) -> dspy.Prediction:
        demos = [ex for ex, _ in self.retrieve(**_inputs_only(inputs))]
        if isinstance(self.program, (dspy.Predict, dspy.ChainOfThought)):
            return self.program(**inputs, demos=demos)
        return _with_demos(self.program, demos)(**inputs)

    # ------------------------------------------------------------------ internals

    def _spec(self) -> SignatureTask:
        s = self.annotated.settings
        signature = program_signature(self.program)
        field = s.get("output_field") or label_field(signature)
        return SignatureTask.from_signature(signature, output_field=field, labels=s.get("labels"),
                                            trainset_labels=[ex.get(field) for ex in self.annotated.examples],
                                            max_text_tokens=s.get("max_text_tokens"))

    def _probe(self, texts: list[str], store: str | None = None) -> ProbeResult:
        runtime = self._runtime
        s = self.annotated.settings
        return probe(runtime.lm, runtime.spec.task, texts, method=s["method"], top_k=s["top_k"], store=store,
                     progress=False)

    def _ready(self) -> _Runtime:
        """Load the model, build the task and fit the retriever (again after ``load``)."""
        if not self.annotated.examples:
            raise NeuroshotError("this NeuronFewShotProgram has no annotated examples: compile it with "
                                 "NeuronAwareFewShot(per_query=True) or load a saved one")
        key = (id(self.annotated.examples), len(self.annotated.examples), repr(self.annotated.settings))
        if self._runtime.key != key:
            self._runtime.lm = resolve_model(self.model)
            self._runtime.spec = self._spec()
            texts = [self._runtime.spec.text(ex, f"annotated example {i}") for i, ex in enumerate(self.annotated.examples)]
            self._fit(self._probe(texts, self.store))
        return self._runtime

    def _fit(self, annotated_probe: ProbeResult) -> None:
        runtime = self._runtime
        runtime.lm = resolve_model(self.model)
        runtime.spec = runtime.spec or self._spec()
        critical = self.annotated.critical
        if critical is None:
            self.annotated.critical = annotated_probe.critical
        elif critical is not annotated_probe.critical:  # after load: the neurons chosen at compile time
            if critical.d_ff != annotated_probe.signatures.d_ff or critical.n_layers != annotated_probe.signatures.n_layers:
                raise NeuroshotError("the saved critical neurons belong to a model of another shape than the one loaded")
            annotated_probe = dataclasses.replace(annotated_probe, critical=critical,
                                                  scores=item_scores(annotated_probe.probs, annotated_probe.signatures, critical))
        s = self.annotated.settings
        labels = [runtime.spec.label_of(ex, f"annotated example {i}") for i, ex in enumerate(self.annotated.examples)]
        if "retriever" in s:
            retriever = get_retriever(s["retriever"], **s["retriever_params"])
        else:  # saved before retrievers were named: the neuron retriever
            retriever = get_retriever("neuron", mmr=s.get("mmr", 0.7), balance=s.get("balance", False))
        runtime.retriever = retriever.fit(annotated_probe, labels)
        runtime.key = (id(self.annotated.examples), len(self.annotated.examples), repr(self.annotated.settings))


def retriever_settings(retriever: str | None, params: dict[str, Any] | None, mmr: float | None,
                       balance: bool | None, pipeline: str = "recommended") -> tuple[str, dict[str, Any]]:
    """Retriever name and parameters: the pipeline's unless ``retriever`` names another; ``params``,
    ``mmr`` and ``balance`` (when given) override."""
    extra = {**(params or {}), **{k: v for k, v in (("mmr", mmr), ("balance", balance)) if v is not None}}
    chosen = get_pipeline(pipeline).customized(retriever=retriever, retriever_params=extra)
    return chosen.retriever, dict(chosen.retriever_params)


def _inputs_only(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k not in {"demos", "config", "signature", "lm"}}


def _with_demos(program: dspy.Module, demos: list[dspy.Example]) -> dspy.Module:
    """A shallow copy of ``program`` whose predictors (shallow copies too) carry ``demos``."""
    clone = copy.copy(program)
    for name, _ in program.named_predictors():
        if name == "self":
            continue
        parts = name.split(".")
        if any("[" in p for p in parts):
            raise NeuroshotError(f"per-query demos need predictors reachable by attribute, not '{name}'")
        parent = clone
        for part in parts[:-1]:
            child = copy.copy(getattr(parent, part))
            setattr(parent, part, child)
            parent = child
        predictor = copy.copy(getattr(parent, parts[-1]))
        predictor.demos = list(demos)
        setattr(parent, parts[-1], predictor)
    if isinstance(program, dspy.Predict):
        clone.demos = list(demos)
    return clone
