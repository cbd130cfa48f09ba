"""Named pipelines: which items to annotate (a strategy) and which of them each prompt shows (a retriever).

What a user compares is a pipeline, not a planner (docs/concepts.md, "Pipelines": the baselines are the
LangChain and DSPy practice). Each named pipeline fixes a strategy, a per-query retriever and their
settings; in the static regime only the strategy and ``order`` matter (every annotated item is a
demonstration). ``"recommended"`` is neuroshot's default everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._registry import parameters
from ._validation import check_choice
from .errors import NeuroshotError

__all__ = ["Pipeline", "PIPELINES", "RECOMMENDED", "ORDERS", "get_pipeline"]

ORDERS = ("plan", "entropy")  # a static prompt's order: as planned, or neuroshot.ordering.order_demonstrations


@dataclass(frozen=True)
class Pipeline:
    """A strategy with its parameters and a retriever with its parameters, under one name."""

    name: str
    strategy: str
    retriever: str = "embedding"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    retriever_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    order: str = "plan"  # static prompts: "plan" (as planned) or "entropy" (neuroshot.ordering)

    def __post_init__(self) -> None:
        check_choice("order", self.order, ORDERS)

    def customized(self, *, strategy: str | None = None, strategy_params: Mapping[str, Any] | None = None,
                   retriever: str | None = None, retriever_params: Mapping[str, Any] | None = None) -> Pipeline:
        """This pipeline with another strategy or retriever and/or more parameters: given parameters
        override the pipeline's own, which are kept only while its strategy (retriever) is kept."""
        s_name, r_name = strategy or self.strategy, retriever or self.retriever
        s_params = {**(dict(self.strategy_params) if s_name == self.strategy else {}), **dict(strategy_params or {})}
        r_params = {**(dict(self.retriever_params) if r_name == self.retriever else {}), **dict(retriever_params or {})}
        return replace(self, strategy=s_name, strategy_params=s_params, retriever=r_name, retriever_params=r_params)

    def make_strategy(self):
        """A fresh strategy object (``get_strategy(strategy, **strategy_params)``)."""
        from .strategies import get_strategy

        return get_strategy(self.strategy, **dict(self.strategy_params))

    def make_retriever(self, seed: int | None = None):
        """A fresh retriever object; ``seed`` goes to retrievers that take one."""
        from .retrieval import RETRIEVERS, get_retriever

        params = dict(self.retriever_params)
        if seed is not None and "seed" in parameters(RETRIEVERS.get(self.retriever, object)):
            params.setdefault("seed", seed)
        return get_retriever(self.retriever, **params)

    def __str__(self) -> str:
        def spec(name: str, params: Mapping[str, Any]) -> str:
            return name + (f"({', '.join(f'{k}={v!r}' for k, v in params.items())})" if params else "")

        order = f", static order {self.order}" if self.order != "plan" else ""
        return f"{self.name}: plan {spec(self.strategy, self.strategy_params)}, " \
               f"retrieve {spec(self.retriever, self.retriever_params)}{order}"


RECOMMENDED = Pipeline(
    "recommended", "neuron_coverage", "hybrid", {"embedding_weight": 0.5}, {"embedding_weight": "auto"},
    "facility location over task-critical neurons and sentence embeddings together; per query, the annotated items "
    "most similar in both, the two weighed by how well each groups the annotated labels; a static prompt in the "
    "order under which the model's answers on unlabeled pool texts spread most evenly (chosen on validation "
    "slices of the pool, never a test split: benchmarks/README.md, 'Choosing the recommended pipeline')",
    order="entropy")

PIPELINES: dict[str, Pipeline] = {p.name: p for p in (
    RECOMMENDED,
    Pipeline("random+knn", "random", "embedding", description="random annotation, MiniLM nearest neighbours, most "
             "similar last (LangChain's SemanticSimilarityExampleSelector, DSPy's KNNFewShot)"),
    Pipeline("votek+knn", "votek", "embedding", description="vote-k annotation (Su et al. 2022), MiniLM kNN"),
    Pipeline("ideal+knn", "ideal", "embedding", description="IDEAL annotation (Zhang et al. 2024), MiniLM kNN"),
    Pipeline("neuron_coverage+neuron", "neuron_coverage", "neuron",
             description="neuroshot's earlier default: neuron coverage, neuron-signature retrieval"),
)}


def get_pipeline(name: str | Pipeline) -> Pipeline:
    """A named pipeline, or a strategy name as a pipeline with the embedding retriever."""
    if isinstance(name, Pipeline):
        return name
    if name in PIPELINES:
        return PIPELINES[name]
    from .strategies import STRATEGIES

    if name in STRATEGIES:
        return Pipeline(name, name)
    raise NeuroshotError(f"unknown pipeline '{name}' (available: {', '.join(PIPELINES)}, or a strategy: "
                         f"{', '.join(sorted(STRATEGIES))})")
