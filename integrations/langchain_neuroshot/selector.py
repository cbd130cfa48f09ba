"""``NeuronAwareExampleSelector``: few-shot examples chosen by the neurons the local model uses for the task."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.example_selectors import BaseExampleSelector
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, PrivateAttr, field_validator, model_validator

from neuroshot import (LanguageModel, NeuroshotError, ProbeResult, Retriever, Task, get_pipeline, order_planned,
                       probe, resolve_model)
from neuroshot._validation import check_k_available



@dataclass
class ExampleExplanation:
    """Why one example was chosen for a query."""

    example: dict[str, Any]
    index: int  # position in the selector's ``examples``
    rank: int  # 1 = the most relevant (per-query) or the first planned (static)
    score: float  # MMR score when chosen (per-query) or the strategy's score (static)
    similarity: float | None  # cosine to the query over the task-critical neurons (per-query only)
    neurons: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, neuron, value), strongest first

    def why(self) -> str:
        bits = [f"rank {self.rank}", f"score {self.score:.3f}"]
        if self.similarity is not None:
            bits.append(f"similarity {self.similarity:.3f}")
        if self.neurons:
            bits.append(("shared neurons " if self.similarity is not None else "neurons ")
                        + ", ".join(f"L{l}.{n}" for l, n, _ in self.neurons[:3]))
        return "; ".join(bits)


def example_text(example: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The text the model reads for an example (or a query): its ``keys`` values, one per line."""
    missing = [k for k in keys if k not in example]
    if missing:
        raise NeuroshotError(f"missing key(s) {', '.join(map(repr, missing))} (got: {', '.join(map(repr, example))})")
    return "\n".join(str(example[k]) for k in keys)


class NeuronAwareExampleSelector(BaseExampleSelector, BaseModel):
    """Select few-shot examples by what the local LLM's task neurons (and a sentence embedding) say
    is similar to the query.

    Every example is probed once on ``model`` (``neuroshot.probe``). ``mode="per_query"`` probes
    each query (no label needed: the probe follows the model's own prediction) and picks the
    ``k`` closest examples with the retriever of ``pipeline`` (default ``"recommended"``: the
    hybrid of task-critical-neuron and MiniLM cosine; ``retriever="neuron"`` for neurons only),
    with optional MMR diversity (``mmr``, 1.0 = pure similarity) and label balance.
    ``mode="static"`` returns the same planned set for every query (the pipeline's strategy, or
    ``strategy``). Examples come back in prompt order: the most relevant last, right before the
    query. The selector owns a copy of its examples.

    Example::

        selector = NeuronAwareExampleSelector.from_examples(examples, model="default", task=task, k=4)
        prompt = FewShotPromptTemplate(example_selector=selector, example_prompt=..., suffix=...,
                                       input_variables=["text"])
    """

    model: InstanceOf[LanguageModel]
    """The local model (or a ``neuroshot.load_model`` spec string, loaded once per process)."""
    task: InstanceOf[Task]
    """The classification task: its labels and the prompt the model is probed with."""
    examples: list[dict[str, Any]] = Field(min_length=1)
    """The annotated examples (dicts); the selector keeps its own copy."""
    k: int = Field(4, ge=1)
    """Examples per query."""
    input_keys: list[str] | None = None
    """Keys that form an example's (and a query's) text; default: every key of the examples but ``label_key``."""
    label_key: str = "label"
    """Key of the label; its values must be in ``task.labels``."""
    example_keys: list[str] | None = None
    """If given, returned examples hold only these keys."""
    mode: Literal["per_query", "static"] = "per_query"
    pipeline: str = "recommended"
    """The ``neuroshot`` pipeline whose retriever (per query) and strategy (static) are used."""
    retriever: str | None = None
    """Per-query: a retriever name instead of the pipeline's (``neuron``, ``hybrid``, ``embedding``, ...)."""
    retriever_params: dict[str, Any] = Field(default_factory=dict)
    """Per-query: retriever parameters, over the pipeline's (when the retriever is the pipeline's)."""
    mmr: float | None = Field(None, ge=0.0, le=1.0)
    """MMR lambda for per-query selection (1.0 = pure similarity, lower = more diverse); default: the retriever's."""
    balance: bool | None = None
    """Per-query: cap each label at ``ceil(k / labels present)`` examples; default: the retriever's (off)."""
    strategy: str | None = None
    """Static mode: the ``neuroshot`` planning strategy; default: the pipeline's."""
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    """Static mode: strategy parameters, over the pipeline's (when the strategy is the pipeline's)."""
    seed: int = 0
    method: str = "direct_logit"
    """Neuron attribution of the probe (``direct_logit``, ``grad_x_act``, ``integrated_gradients``)."""
    top_k: int = Field(64, ge=1)
    """Signature neurons kept per layer."""
    critical_fraction: float = Field(0.01, gt=0.0, le=1.0)
    """Fraction of all neurons kept as task-critical (over the examples)."""
    store: Path | None = None
    """Optional signature store folder for the examples' probe (reused across runs)."""
    query_cache_size: int = Field(256, ge=0)
    """Query probes remembered (by text), so ``explain`` after ``select_examples`` costs no model call."""
    progress: bool = False
    """Show a progress bar while probing the examples."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _probe: ProbeResult | None = PrivateAttr(default=None)
    _retriever: Retriever | None = PrivateAttr(default=None)
    _plan: Any = PrivateAttr(default=None)
    _static_order: list[int] = PrivateAttr(default_factory=list)
    _queries: OrderedDict = PrivateAttr(default_factory=OrderedDict)
    _last_query: ProbeResult | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)

    # ----------------------------------------------------------------- construction

    @field_validator("model", mode="before")
    @classmethod
    def _load_model(cls, value: Any) -> Any:
        return resolve_model(value) if not isinstance(value, LanguageModel) else value

    @field_validator("examples", mode="after")
    @classmethod
    def _own_copy(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(example) for example in value]

    @model_validator(mode="after")
    def _check_and_probe(self) -> NeuronAwareExampleSelector:
        """Check the examples against the keys and the task, then probe them (pydantic runs this after
        ``model_post_init``, so private state is ready)."""
        keys = self.text_keys
        if not keys:
            raise ValueError(f"examples have no input key besides the label key '{self.label_key}'")
        if self.label_key in keys:
            raise ValueError(f"the label key '{self.label_key}' cannot be an input key")
        for n, example in enumerate(self.examples):
            self._check_example(example, f"example {n}", error=ValueError)
        texts = [example_text(e, keys) for e in self.examples]
        self._make_retriever()  # an unknown pipeline or retriever fails before any model call
        self._probe = probe(self.model, self.task, texts, progress=self.progress, store=self.store,
                            **self._probe_settings())
        self._refit()
        if self.mode == "static":
            self._static()  # plan now: an unknown strategy or bad parameters fail at construction
        return self

    @classmethod
    def from_examples(cls, examples: list[dict[str, Any]], model: LanguageModel | str, task: Task, k: int = 4,
                      input_keys: list[str] | None = None, **kwargs: Any) -> NeuronAwareExampleSelector:
        """Probe ``examples`` on ``model`` (a ``LanguageModel`` or a ``load_model`` spec) and build the selector.

        Other fields (``label_key``, ``mode``, ``mmr``, ``balance``, ``strategy``, ``seed``, ...) go in ``kwargs``.
        """
        return cls(examples=examples, model=model, task=task, k=k, input_keys=input_keys, **kwargs)

    # ----------------------------------------------------------------- the selector interface

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``k`` examples for this query, in prompt order (the most relevant last)."""
        return [e.example for e in self.explain(input_variables)]

    async def aselect_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """As ``select_examples``; the model call runs in a worker thread, never on the event loop."""
        return [e.example for e in await self.aexplain(input_variables)]

    def add_example(self, example: dict[str, Any]) -> int:
        """Probe only the new example and add it; returns its index in ``examples``."""
        example, text = self._prepare_new(example)
        return self._commit(example, self._probe_texts([text]))

    async def aadd_example(self, example: dict[str, Any]) -> int:
        """As ``add_example``; the probe runs in a worker thread, never on the event loop."""
        example, text = self._prepare_new(example)
        return self._commit(example, await asyncio.to_thread(self._probe_texts, [text]))

    def explain(self, input_variables: dict[str, Any]) -> list[ExampleExplanation]:
        """Per chosen example (in ``select_examples`` order): its score, similarity and shared neurons."""
        if self.mode == "static":
            return self._static()
        return self._per_query(self._query_probe(self._query_text(input_variables)))

    async def aexplain(self, input_variables: dict[str, Any]) -> list[ExampleExplanation]:
        """As ``explain``; the model call runs in a worker thread."""
        if self.mode == "static":
            return self._static()
        text = self._query_text(input_variables)
        return self._per_query(await asyncio.to_thread(self._query_probe, text))

    @property
    def probe_result(self) -> ProbeResult:
        """The examples' probe (signatures, task-critical neurons, scores), in ``examples`` order."""
        return self._probe

    @property
    def text_keys(self) -> list[str]:
        """The keys that form an example's text: ``input_keys``, or the first example's keys but the label's."""
        if self.input_keys is not None:
            return list(self.input_keys)
        return [key for key in self.examples[0] if key != self.label_key]

    # ----------------------------------------------------------------- internals

    def _probe_settings(self) -> dict[str, Any]:
        return {"method": self.method, "top_k": self.top_k, "critical_fraction": self.critical_fraction}

    def _probe_texts(self, texts: list[str], store: Path | None = None) -> ProbeResult:
        return probe(self.model, self.task, texts, progress=False, store=store, **self._probe_settings())

    def _check_example(self, example: Mapping[str, Any], where: str, error: type[Exception] = NeuroshotError) -> None:
        if not isinstance(example, Mapping):
            raise error(f"{where} must be a dict, got {type(example).__name__}")
        try:
            example_text(example, [*self.text_keys, self.label_key])
        except NeuroshotError as exc:
            raise error(f"{where}: {exc}") from None
        if str(example[self.label_key]) not in self.task.labels:
            raise error(f"{where}: label {example[self.label_key]!r} is not one of the task's labels "
                        f"({', '.join(self.task.labels)})")

    def _prepare_new(self, example: dict[str, Any]) -> tuple[dict[str, Any], str]:
        self._check_example(example, "new example")
        example = dict(example)
        return example, example_text(example, self.text_keys)

    def _commit(self, example: dict[str, Any], probed: ProbeResult) -> int:
        with self._lock:
            self._probe = self._probe.extend(probed)
            self.examples.append(example)
            self._refit()
            return len(self.examples) - 1

    def _pipeline(self):
        """The pipeline with this selector's overrides (strategy, retriever, their parameters, mmr, balance)."""
        extra = {**self.retriever_params,
                 **{k: v for k, v in (("mmr", self.mmr), ("balance", self.balance)) if v is not None}}
        return get_pipeline(self.pipeline).customized(strategy=self.strategy, strategy_params=self.strategy_params,
                                                      retriever=self.retriever, retriever_params=extra)

    def _make_retriever(self) -> Retriever:
        return self._pipeline().make_retriever(self.seed)

    def _make_strategy(self):
        return self._pipeline().make_strategy()

    def _refit(self) -> None:
        labels = [str(e[self.label_key]) for e in self.examples]
        self._retriever = self._make_retriever().fit(self._probe, labels)
        self._plan = None

    def _query_text(self, input_variables: Mapping[str, Any]) -> str:
        try:
            return example_text(input_variables, self.text_keys)
        except NeuroshotError as exc:
            raise NeuroshotError(f"the prompt variables lack the selector's input key(s): {exc}") from None

    def _query_probe(self, text: str) -> ProbeResult:
        with self._lock:
            hit = self._queries.get(text)
            if hit is not None:
                self._queries.move_to_end(text)
                return hit
        result = self._probe_texts([text])
        with self._lock:
            if self.query_cache_size:
                self._queries[text] = result
                while len(self._queries) > self.query_cache_size:
                    self._queries.popitem(last=False)
        return result

    def _output(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        return {k: example[k] for k in self.example_keys} if self.example_keys else dict(example)

    def _per_query(self, query: ProbeResult) -> list[ExampleExplanation]:
        with self._lock:
            self._last_query = query  # keeps it alive: the retriever's similarity cache is keyed by id()
            chosen = self._retriever.retrieve(query, self.k)[0]
            return [ExampleExplanation(self._output(r.index), r.index, rank, r.score, r.similarity, list(r.neurons))
                    for rank, r in reversed(list(enumerate(chosen, start=1)))]

    def _static(self) -> list[ExampleExplanation]:
        with self._lock:
            if self._plan is None:
                self._plan = self._make_strategy().plan(self._probe, check_k_available(self.k, len(self.examples)),
                                                           seed=self.seed)
                self._static_order = self._order([p.index for p in self._plan.picks])
            picks = {p.index: p for p in self._plan.picks}
            return [ExampleExplanation(self._output(i), i, picks[i].rank, picks[i].score, None, list(picks[i].neurons))
                    for i in self._static_order]

    def _order(self, chosen: list[int]) -> list[int]:
        """The planned examples in prompt order: as planned, or (a pipeline with ``order="entropy"``) the
        order under which the model's answers on the other examples' texts spread most evenly."""
        if self._pipeline().order != "entropy":
            return chosen
        labels = [str(self.examples[i][self.label_key]) for i in chosen]
        return order_planned(self.model, self.task, self._probe.texts, chosen, labels, seed=self.seed)
