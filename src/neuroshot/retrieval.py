"""Per-query demonstrations: for each query, the annotated items to put in its prompt.

The regime DESIGN.md treats as primary: annotate a set once, then give every query its own few
demonstrations from it. Every retriever has the same calls, as scikit-learn estimators do:
``fit(annotated_probe, labels)``, then ``demonstrations(query_probe, k)`` (one list per query, in
prompt order) or ``retrieve`` (with why each was chosen). Usage: docs/concepts.md, "Retrievers" and "Under the one call".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from ._registry import Pluggable, Registry
from ._validation import check_in, check_k_available, check_whole
from .embeddings import pool_embeddings
from .errors import NeuroshotError
from .neighbours import (MIXING_WEIGHTS, STANDARDIZE_FROM, label_agreement_weight, label_has_another,
                         leave_one_out_agreement, mmr_select, neuron_shift_scale, neuron_triples,
                         standardized_unit_rows)
from .probing import ProbeResult
from .task import Demonstration

_REGISTRY: Registry[Retriever] = Registry("retriever")
RETRIEVERS = _REGISTRY.classes


@dataclass
class Retrieved:
    """One demonstration chosen for one query, and why."""

    index: int  # position in the annotated set
    label: str
    similarity: float  # to the query
    score: float  # the selection score when it was chosen (MMR for the neuron retriever)
    neurons: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, neuron, share of the similarity)

    def why(self) -> str:
        bits = [f"similarity {self.similarity:.3f}", f"score {self.score:.3f}"]
        if self.neurons:
            bits.append("shared neurons " + ", ".join(f"L{l}.{n}" for l, n, _ in self.neurons[:3]))
        return "; ".join(bits)


class Retriever(Pluggable, ABC):
    """Choose ``k`` annotated items per query. Subclasses implement ``_fit`` and ``_retrieve_one``."""

    def fit(self, annotated: ProbeResult, labels: Sequence[str]) -> Retriever:
        """Remember the annotated items (their probe) and their labels; returns ``self``."""
        if len(annotated) == 0:
            raise NeuroshotError("no annotated items to retrieve demonstrations from")
        if len(labels) != len(annotated):
            raise NeuroshotError(f"{len(labels)} labels for {len(annotated)} annotated items")
        for label in labels:
            annotated.task.label_index(label)  # raises on a label outside the task
        self.annotated_, self.labels_ = annotated, list(labels)
        self._query_cache: tuple[ProbeResult, Any] | None = None
        self._fit(annotated)
        return self

    def retrieve(self, queries: ProbeResult, k: int) -> list[list[Retrieved]]:
        """Per query, ``k`` annotated items, most relevant first."""
        if not hasattr(self, "annotated_"):
            raise NeuroshotError(f"{type(self).__name__} is not fitted: call fit(annotated, labels) first")
        k = check_k_available(check_whole("k", k), len(self.annotated_))
        return [self._retrieve_one(queries, q, k) for q in range(len(queries))]

    def demonstrations(self, queries: ProbeResult, k: int) -> list[list[Demonstration]]:
        """Per query, the chosen items as demonstrations in prompt order: the most relevant last,
        right before the query."""
        return [[Demonstration(self.annotated_.texts[r.index], r.label) for r in reversed(chosen)]
                for chosen in self.retrieve(queries, k)]

    def _query_similarities(self, queries: ProbeResult) -> Any:
        """``_similarities(queries)`` (in the subclasses that score queries), computed once per queries
        object: ``retrieve`` asks for it once per query."""
        if self._query_cache is None or self._query_cache[0] is not queries:
            self._query_cache = (queries, self._similarities(queries))
        return self._query_cache[1]

    @abstractmethod
    def _fit(self, annotated: ProbeResult) -> None: ...

    @abstractmethod
    def _retrieve_one(self, queries: ProbeResult, q: int, k: int) -> list[Retrieved]: ...


def register_retriever(cls: type[Retriever]) -> type[Retriever]:
    """Class decorator: make a retriever available by its ``name``."""
    return _REGISTRY.register(cls)


def get_retriever(name: str, **params: Any) -> Retriever:
    """A retriever by name, e.g. ``get_retriever("neuron", mmr=0.5)``."""
    return _REGISTRY.create(name, **params)


def _unit_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix


@register_retriever
class NeuronRetriever(Retriever):
    """Cosine similarity of signatures over the task-critical neurons, with MMR and optional label balance.

    ``mmr`` is MMR's lambda (1.0 = pure similarity). ``balance=True`` caps each label at
    ``ceil(k / labels present)`` demonstrations; ``balance="auto"`` does so only where the model
    already knows the task better than the neighbours' labels do: where its zero-shot answers on the
    annotated items are right more often than their ``neighbours`` nearest other annotated items carry
    their label (leave-one-out; only items whose label has another annotated item count, at least
    ``MIN_AUTO`` of them, else no balance). A small model copies its demonstrations' labels, so nearest
    neighbours would pull its answers toward labels that agree less often than it does; balanced ones
    show the format and leave the decision to the model. The choice is in ``balance_``. With ``standardize`` (default) each critical
    neuron is z-scored with the annotated items' mean and spread before the cosine (from
    ``MIN_STANDARDIZE`` annotated items on), so neurons that fire alike for every item do not
    make every pair look similar. ``label_weighted=True`` also weighs each neuron by how well it
    separates the annotated labels (:func:`label_separation`). A query that touches none of the
    critical neurons falls back to cosine over its whole signature.
    """

    MIN_STANDARDIZE: ClassVar[int] = STANDARDIZE_FROM
    MIN_AUTO: ClassVar[int] = 8  # fewer annotated items: no choice is made from them

    name = "neuron"

    def __init__(self, mmr: float = 0.7, balance: bool | str = False, standardize: bool = True,
                 label_weighted: bool = False, neighbours: int = 4) -> None:
        check_in("mmr", mmr, 0.0, 1.0)
        if balance not in (True, False, "auto"):
            raise NeuroshotError(f"balance must be True, False or 'auto', not {balance!r}")
        check_whole("neighbours", neighbours)
        self.mmr, self.balance, self.standardize = mmr, balance, standardize
        self.label_weighted, self.neighbours = label_weighted, neighbours

    def _fit(self, annotated: ProbeResult) -> None:
        self._fit_neurons(annotated)
        self._choose_balance()

    def _fit_neurons(self, annotated: ProbeResult) -> None:
        """The critical-neuron vectors of the annotated items, their pairwise cosines and label ids."""
        self._critical = annotated.critical
        values = annotated.critical.restrict(annotated.signatures).toarray()
        self._shift, self._scale = neuron_shift_scale(values, self.standardize)
        if self.label_weighted:  # a neuron that separates no labels gets an infinite scale: weight 0
            with np.errstate(divide="ignore"):
                self._scale = self._scale / label_separation(values, self.labels_)
        self._demo_critical = self._vectors(values)
        self._demo_full = _unit_rows(annotated.signatures.to_csr().astype(np.float64))
        self._pair = self._demo_critical @ self._demo_critical.T
        self._groups = np.array([annotated.task.label_index(label) for label in self.labels_])

    def _choose_balance(self) -> None:
        """``balance_``: ``balance``, or with ``"auto"`` the choice on the annotated items (see the class)."""
        if self.balance != "auto":
            self.balance_ = bool(self.balance)
            return
        evidence = self._balance_evidence()
        self.balance_ = evidence is not None and evidence[0] > evidence[1]

    def _balance_evidence(self) -> tuple[float, float] | None:
        """What ``balance="auto"`` compares, on the annotated items whose label has another annotated
        item: the model's zero-shot accuracy, and the share of their ``neighbours`` nearest other annotated
        items that carry their label (leave-one-out). None with fewer than ``MIN_AUTO`` such items."""
        # with one item per label the neighbours' labels are wrong by construction, and say nothing
        judged = label_has_another(self._groups)
        if judged.sum() < self.MIN_AUTO:
            return None
        agreement = leave_one_out_agreement(self._pair, self._groups, self.neighbours)[judged].mean()
        zero_shot = np.mean(self.annotated_.probs.argmax(1)[judged] == self._groups[judged])
        return float(zero_shot), float(agreement)

    def _similarities(self, queries: ProbeResult) -> tuple[np.ndarray, np.ndarray]:
        """``[Q, D]`` cosine over critical neurons (full-signature cosine where a query has none) and
        the ``[Q, n_critical]`` unit query vectors."""
        restricted = self._critical.restrict(queries.signatures).astype(np.float64)
        vectors = self._vectors(restricted.toarray())
        sim = vectors @ self._demo_critical.T
        empty = np.asarray(restricted.getnnz(axis=1)).ravel() == 0
        if empty.any():
            q_full = _unit_rows(queries.signatures.to_csr().astype(np.float64)[np.flatnonzero(empty)])
            sim[empty] = (q_full @ self._demo_full.T).toarray()
        return sim, vectors

    def _vectors(self, values: np.ndarray) -> np.ndarray:
        """Unit rows of (standardised) critical-neuron values."""
        return standardized_unit_rows(values, self._shift, self._scale)

    def _retrieve_one(self, queries: ProbeResult, q: int, k: int) -> list[Retrieved]:
        sim, q_vectors = self._query_similarities(queries)
        per_group = int(np.ceil(k / len(np.unique(self._groups)))) if self.balance_ else None
        chosen = mmr_select(sim[q], self._pair, k, self.mmr, self._groups, per_group)
        out = []
        for index, score in chosen:
            shared = q_vectors[q] * self._demo_critical[index]  # each neuron's share of the cosine
            top = [int(t) for t in np.argsort(-shared)[:5] if shared[t] > 0]
            neurons = neuron_triples(self._critical.ids[top], shared[top], self._critical.d_ff)
            out.append(Retrieved(index, self.labels_[index], float(sim[q, index]), score, neurons))
        return out


def label_separation(values: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Per neuron (column), how well it separates the given labels: sqrt of the Fisher ratio
    (between-label over within-label variance), scaled to mean 1. Uniform (all 1) when fewer than
    two labels have two or more items, so nothing is learned from too few annotations."""
    labels = np.asarray(labels)
    kinds, counts = np.unique(labels, return_counts=True)
    if (counts >= 2).sum() < 2:
        return np.ones(values.shape[1])
    grand = values.mean(0)
    between = np.zeros(values.shape[1])
    within = np.zeros(values.shape[1])
    for kind in kinds:
        rows = values[labels == kind]
        between += len(rows) * (rows.mean(0) - grand) ** 2
        within += ((rows - rows.mean(0)) ** 2).sum(0)
    ratio = np.sqrt(between / (within + 1e-6 * (within.mean() + 1e-12)))
    return ratio / max(float(ratio.mean()), 1e-12)


@register_retriever
class HybridRetriever(NeuronRetriever):
    """Weighted sum of two cosines: sentence embeddings (MiniLM) and task-critical neurons.

    ``similarity = w * cos(embeddings) + (1 - w) * cos(neurons)``, the neuron part as in
    :class:`NeuronRetriever` (standardised, optionally label-weighted). Embeddings say what a text
    is about, neurons how the model reads it for the task; which matters more depends on the
    task (on validation slices, neurons place sentiment far better than MiniLM does, MiniLM places
    banking intents far better than the neurons). ``embedding_weight="auto"`` (default) chooses
    ``w`` from ``weights`` on the annotated items alone: the weight whose ``k`` nearest annotated
    neighbours (leave-one-out) most often share an item's label, ties to the middle. Only labels
    already paid for are read. ``embedding_weight=1`` is plain embedding kNN, ``0`` the neuron retriever.
    """

    name = "hybrid"
    WEIGHTS: ClassVar[tuple[float, ...]] = MIXING_WEIGHTS
    def __init__(self, embedding_weight: float | str = "auto", mmr: float = 1.0, balance: bool | str = False,
                 standardize: bool = True, label_weighted: bool = False, neighbours: int = 4,
                 embedding_model: Any = None) -> None:
        if embedding_weight != "auto":
            check_in("embedding_weight ('auto' or a number)", embedding_weight, 0.0, 1.0)
        super().__init__(mmr=mmr, balance=balance, standardize=standardize, label_weighted=label_weighted,
                         neighbours=neighbours)
        self.embedding_weight, self.embedding_model = embedding_weight, embedding_model

    def _fit(self, annotated: ProbeResult) -> None:
        self._fit_neurons(annotated)
        self._demo_embeddings = pool_embeddings(annotated, self.embedding_model)
        embedding_pair, neuron_pair = self._demo_embeddings @ self._demo_embeddings.T, self._pair
        self.embedding_weight_ = (self._choose_weight(embedding_pair, neuron_pair)
                                  if self.embedding_weight == "auto" else float(self.embedding_weight))
        w = self.embedding_weight_
        self._pair = w * embedding_pair + (1 - w) * neuron_pair
        self._choose_balance()  # on the mixed similarity the queries will see

    def _choose_weight(self, embedding_pair: np.ndarray, neuron_pair: np.ndarray) -> float:
        """The ``embedding_weight="auto"`` choice among ``WEIGHTS`` (see the class); 0.5 below ``MIN_AUTO`` items."""
        if len(embedding_pair) < self.MIN_AUTO:
            return 0.5
        return label_agreement_weight(embedding_pair, neuron_pair, self.labels_, self.neighbours, self.WEIGHTS)

    def _similarities(self, queries: ProbeResult) -> tuple[np.ndarray, np.ndarray]:
        neuron_sim, vectors = super()._similarities(queries)
        w = self.embedding_weight_
        sim = w * (pool_embeddings(queries, self.embedding_model) @ self._demo_embeddings.T) + (1 - w) * neuron_sim
        return sim, vectors


@register_retriever
class RandomRetriever(Retriever):
    """``k`` annotated items drawn at random per query (seeded; the control)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_whole("seed", seed, minimum=0)

    def _fit(self, annotated: ProbeResult) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _retrieve_one(self, queries: ProbeResult, q: int, k: int) -> list[Retrieved]:
        picks = self._rng.choice(len(self.annotated_), size=k, replace=False)
        return [Retrieved(int(i), self.labels_[int(i)], 0.0, 0.0) for i in picks]


@register_retriever
class EmbeddingRetriever(Retriever):
    """Per-query kNN by cosine of sentence embeddings over the annotated items (``mmr < 1`` adds diversity).

    Embeddings come from ``annotated.embeddings`` / ``queries.embeddings`` when set, else MiniLM.
    """

    name = "embedding"

    def __init__(self, mmr: float = 1.0, embedding_model: Any = None) -> None:
        check_in("mmr", mmr, 0.0, 1.0)
        self.mmr, self.embedding_model = mmr, embedding_model

    def _fit(self, annotated: ProbeResult) -> None:
        self._demo = pool_embeddings(annotated, self.embedding_model)
        self._pair = self._demo @ self._demo.T

    def _similarities(self, queries: ProbeResult) -> np.ndarray:
        q = pool_embeddings(queries, self.embedding_model)
        if q.shape[1] != self._demo.shape[1]:
            raise NeuroshotError(f"query embeddings have {q.shape[1]} dimensions, the annotated ones {self._demo.shape[1]}")
        return q @ self._demo.T

    def _retrieve_one(self, queries: ProbeResult, q: int, k: int) -> list[Retrieved]:
        sim = self._query_similarities(queries)[q]
        chosen = mmr_select(sim, self._pair, k, self.mmr)  # mmr = 1: plain kNN, ties to the earlier item
        return [Retrieved(j, self.labels_[j], float(sim[j]), score) for j, score in chosen]
