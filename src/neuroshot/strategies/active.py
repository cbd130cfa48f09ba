"""Active rounds as a strategy: ``get_strategy("active:entropy")`` (AdaICL-style).

One ``plan`` call is one round. Without labels it is the base strategy on the given probe. With
labels (``labeled`` as index -> label) it first re-probes the not-yet-annotated items with the
annotated ones as demonstrations in the prompt, so label probabilities, signatures and
task-critical neurons describe the model *with* those demonstrations, and then lets the base
strategy plan on that probe. :func:`neuroshot.active.active_plan` runs all rounds with an
annotator; the command line: docs/cli.md (``plan --strategy active:NAME``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import zip_longest
from typing import Any

import numpy as np

from .._validation import check_whole
from ..errors import NeuroshotError
from ..probing import ProbeResult, probe
from ..task import Demonstration, Task
from .base import Pick, Plan, Strategy, get_strategy, register

__all__ = ["ActiveStrategy", "context_demonstrations", "round_seed"]


def round_seed(seed: int, round_: int) -> int:
    """The seed of active round ``round_`` (1-based) of a loop seeded ``seed``: rounds differ, reruns agree."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def context_demonstrations(texts: Sequence[str], annotated: Sequence[int], labels: Mapping[int, str],
                           task: Task, limit: int) -> list[Demonstration]:
    """The annotated items shown in context while re-probing: all of them up to ``limit``; beyond
    that, label-balanced (round-robin over labels, earliest annotated first), in annotation order."""
    chosen = list(annotated)
    if len(chosen) > limit:
        queues = [[i for i in annotated if labels[i] == label] for label in task.labels]
        round_robin = [i for turn in zip_longest(*queues) for i in turn if i is not None]
        picked = set(round_robin[:limit])
        chosen = [i for i in annotated if i in picked]
    return [Demonstration(texts[i], labels[i]) for i in chosen]


@register
class ActiveStrategy(Strategy):
    """The base strategy, planned on a probe re-run with the labels so far in context.

    ``base`` / ``base_params``: the strategy that plans each round, by name or as an object
    (``get_strategy("active:neufs", tau=0.3)`` puts ``tau`` into ``base_params``). ``context_demos``: at most this many annotated
    items in context (see :func:`context_demonstrations`). ``lm`` and ``probe_kwargs`` (method,
    top_k, critical_fraction, store, ...) re-probe; without ``lm`` only a first round (no labels)
    can be planned. ``reprobe=False`` plans every round on the given (zero-shot) probe and only hands
    the base strategy the labels so far: for a base that reads labels itself (``adaptive_coverage``),
    at no probing cost. After each ``plan`` the round's probe is in ``round_probe_`` with its rows
    (pool indices, annotated items first) in ``round_rows_`` and the demonstrations in ``round_demos_``.
    """

    name = "active"

    def __init__(self, base: str | Strategy = "entropy", base_params: Mapping[str, Any] | None = None,
                 context_demos: int = 8, lm: Any = None, probe_kwargs: Mapping[str, Any] | None = None,
                 progress: bool = False, reprobe: bool = True) -> None:
        if isinstance(base, Strategy):
            self._base, self.base, self.base_params = base, base.name, base.get_params()
        else:
            self.base, self.base_params = base, dict(base_params or {})
            self._base = get_strategy(base, **self.base_params)
        if isinstance(self._base, ActiveStrategy):
            raise NeuroshotError(f"active: base={self.base!r}: active rounds cannot be nested")
        self.context_demos = check_whole("context_demos", context_demos)
        self.lm, self.probe_kwargs, self.progress, self.reprobe = lm, dict(probe_kwargs or {}), progress, bool(reprobe)

    @classmethod
    def around(cls, strategy: Strategy, **params: Any) -> ActiveStrategy:
        """Active rounds of ``strategy``: around its base (and with its ``reprobe`` and ``context_demos``)
        when it is already an active strategy, so a pipeline's ``active:`` planner runs rounds as itself."""
        if isinstance(strategy, ActiveStrategy):
            params = {"reprobe": strategy.reprobe, "context_demos": strategy.context_demos, **params}
            strategy = strategy._base
        return cls(strategy, **params)

    def plan(self, probed: ProbeResult, budget: int, *, labeled: Sequence[int] | Mapping[int, str] = (),
             seed: int = 0) -> Plan:
        labels = dict(labeled) if isinstance(labeled, Mapping) else {}
        current, rows, demos = probed, list(range(len(probed))), []
        if labels and self.reprobe:
            if self.lm is None:
                raise NeuroshotError("active rounds re-probe the pool with the labels so far in context: "
                                     "give the model (lm=)")
            annotated = list(labels)
            demos = context_demonstrations(probed.texts, annotated, labels, probed.task, self.context_demos)
            rest = [i for i in range(len(probed)) if i not in labels]
            ids = None if probed.ids is None else [probed.ids[i] for i in rest]
            fresh = probe(self.lm, probed.task, [probed.texts[i] for i in rest], demos=demos, ids=ids,
                          progress=self.progress, **self.probe_kwargs)
            current, rows = probed.subset(annotated).extend(fresh), annotated + rest
        step = self._base.plan(current, budget, labeled={row: labels[i] for row, i in enumerate(rows) if i in labels}
                               if labels else labeled, seed=seed)
        self.round_probe_, self.round_rows_, self.round_demos_ = current, rows, demos
        picks = [replace(p, index=rows[p.index]) for p in step.picks]
        return Plan(f"{self.name}:{self.base}", int(budget), seed, picks, self.get_params())

    def _select(self, probed: ProbeResult, candidates: np.ndarray, budget: int,
                labeled: Sequence[int] | Mapping[int, str], rng: np.random.Generator) -> list[Pick]:
        raise NotImplementedError("ActiveStrategy plans in plan()")  # pragma: no cover

    def get_params(self) -> dict[str, Any]:
        return {"base": self.base, "base_params": self.base_params, "context_demos": self.context_demos,
                "reprobe": self.reprobe}
