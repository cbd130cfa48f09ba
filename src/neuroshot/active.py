"""Active rounds for any strategy (AdaICL-style): annotate in batches, re-probing with the labels so far.

:func:`active_plan` runs the rounds and asks the annotator for exactly each round's picks. One
round is one :class:`~neuroshot.strategies.active.ActiveStrategy` plan, whose module says how the
rest of the pool is re-probed with the annotated items in context. Uncertainty strategies then
spend the next batch where the model stays uncertain in context, coverage strategies where
task-critical neurons stay uncovered. Cost: one probe of the remaining pool per round after the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import check_whole
from .data import Annotator
from .errors import NeuroshotError
from .models import LanguageModel
from .probing import ProbeResult, probe
from .strategies import Pick, Plan, Strategy, get_strategy
from .strategies.active import ActiveStrategy, context_demonstrations, round_seed
from .task import Demonstration, Task

__all__ = ["ActivePlan", "ActiveRound", "active_plan", "round_sizes", "context_demonstrations"]  # noqa: F822


@dataclass
class ActiveRound:
    """One round: the pool indices it chose, the demonstrations in context while probing, and that probe.

    ``probe`` rows are ``rows`` of the pool (annotated items first, then the rest).
    """

    round: int
    indices: list[int]
    demos: list[Demonstration]
    probe: ProbeResult = field(repr=False)
    rows: list[int] = field(repr=False)


@dataclass
class ActivePlan:
    """The final plan over the whole pool (picks carry their round), the labels given, and each round."""

    plan: Plan
    labels: dict[str, str]  # item id -> label, in annotation order
    rounds: list[ActiveRound]

    @property
    def indices(self) -> list[int]:
        return self.plan.indices


def round_sizes(budget: int, rounds: int | None = None, batch_size: int | None = None) -> list[int]:
    """Split ``budget`` into per-round batch sizes: ``rounds`` near-equal batches (earlier ones larger)
    or batches of ``batch_size`` (the last one smaller). Default: 3 rounds."""
    if rounds is not None and batch_size is not None:
        raise NeuroshotError("give either rounds or batch_size, not both")
    if batch_size is not None:
        check_whole("batch_size", batch_size)
        return [min(batch_size, budget - start) for start in range(0, budget, batch_size)]
    rounds = 3 if rounds is None else rounds
    rounds = min(check_whole("rounds", rounds), budget)
    return [budget // rounds + (r < budget % rounds) for r in range(rounds)]


def active_plan(lm: LanguageModel, task: Task, texts: Sequence[str], strategy: str | Strategy, budget: int, *,
                annotator: Annotator, ids: Sequence[str] | None = None, rounds: int | None = None,
                batch_size: int | None = None, seed: int = 0, pool: ProbeResult | None = None,
                context_demos: int = 8, probe_kwargs: Mapping[str, Any] | None = None,
                progress: bool = True) -> ActivePlan:
    """Plan and annotate ``budget`` items in rounds, re-probing the rest with the annotated items in context.

    ``annotator(ids) -> {id: label}`` is called once per round with exactly that round's picks
    (e.g. a :class:`~neuroshot.annotation.SimulatedAnnotator`); ``ids`` name the texts (default:
    ``pool.ids`` or the positions as strings). ``pool`` is the zero-shot probe of ``texts`` if
    already computed; ``probe_kwargs`` go to every :func:`~neuroshot.probing.probe` call (method,
    top_k, critical_fraction, store, ...). At most ``context_demos`` annotated items are placed in
    context (see :func:`context_demonstrations`). Each pick's explanation carries its round.
    """
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    if budget > len(texts):
        raise NeuroshotError(f"budget {budget} is larger than the {len(texts)} items in the pool")
    sizes = round_sizes(budget, rounds, batch_size)
    kwargs = dict(probe_kwargs or {})
    if ids is None:
        ids = pool.ids if pool is not None and pool.ids is not None else [str(i) for i in range(len(texts))]
    ids = list(ids)
    if len(ids) != len(texts) or len(set(ids)) != len(ids):
        raise NeuroshotError("ids must name every text once")
    rounds_of = ActiveStrategy.around(strategy, context_demos=context_demos, lm=lm, probe_kwargs=kwargs,
                                      progress=progress)
    base = rounds_of._base
    if pool is None:
        pool = probe(lm, task, texts, ids=ids, progress=progress, **kwargs)
    elif len(pool) != len(texts) or list(pool.texts) != list(texts):
        raise NeuroshotError("pool must be the probe of the same texts, in the same order")
    labels: dict[int, str] = {}  # pool index -> label, in annotation order
    picks: list[Pick] = []
    history: list[ActiveRound] = []
    state = pool  # pool order; annotated items keep the probe of the round they were planned in
    for r, size in enumerate(sizes, start=1):
        step = rounds_of.plan(state, size, labeled=dict(labels), seed=round_seed(seed, r))
        current, rows = rounds_of.round_probe_, rounds_of.round_rows_
        chosen = step.indices
        given = annotator([ids[i] for i in chosen])
        missing = [ids[i] for i in chosen if ids[i] not in given]
        if missing:
            raise NeuroshotError(f"the annotator gave no label for {', '.join(missing[:5])}")
        for p, i in zip(step.picks, chosen):
            task.label_index(given[ids[i]])  # an unknown label fails here, not in the next probe
            labels[i] = given[ids[i]]
            picks.append(Pick(i, len(picks) + 1, p.score, {"round": float(r), **p.parts}, p.cluster, p.neurons))
        history.append(ActiveRound(r, chosen, list(rounds_of.round_demos_), current, list(rows)))
        state = current.subset(np.argsort(rows).tolist())  # back to pool order
    params = {**rounds_of.get_params(), "rounds": len(sizes), "sizes": sizes}
    plan = Plan(f"active:{base.name}", int(budget), seed, picks, params)
    return ActivePlan(plan, {ids[i]: label for i, label in labels.items()}, history)
