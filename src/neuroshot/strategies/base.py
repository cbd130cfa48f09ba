"""The planning interface: ``Strategy.plan(probed, budget, labeled=..., seed=...) -> Plan``.

One small class per strategy (as in small-text's query strategies); register it with
``@register`` and it is available by name everywhere (Python API, CLI, benchmarks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._registry import Pluggable, Registry, parameters
from .._validation import check_whole
from ..errors import NeuroshotError
from ..neighbours import neuron_triples
from ..probing import ProbeResult

_REGISTRY: Registry[Strategy] = Registry("strategy")
STRATEGIES = _REGISTRY.classes


@dataclass
class Pick:
    """One planned item and why it was chosen."""

    index: int  # position in the pool
    rank: int  # 1-based order in the plan
    score: float
    parts: dict[str, float] = field(default_factory=dict)  # the score's components
    cluster: int | None = None
    neurons: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, neuron, value), strongest first

    def why(self) -> str:
        """A one-line explanation."""
        bits = [f"score {self.score:.3g}"]
        bits += [f"{k} {v:.3g}" for k, v in self.parts.items()]
        if self.cluster is not None:
            bits.append(f"cluster {self.cluster}")
        if self.neurons:
            bits.append("neurons " + ", ".join(f"L{l}.{n}" for l, n, _ in self.neurons[:3]))
        return "; ".join(bits)


@dataclass
class Plan:
    """The ordered items to annotate, with an explanation of each pick."""

    strategy: str
    budget: int
    seed: int
    picks: list[Pick]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> list[int]:
        return [p.index for p in self.picks]

    def __len__(self) -> int:
        return len(self.picks)

    def explain(self, texts: Sequence[str] | None = None, width: int = 70) -> str:
        """A readable table: rank, item, why."""
        lines = [f"plan: {self.strategy}, budget {self.budget}, seed {self.seed}"]
        for p in self.picks:
            text = "" if texts is None else " " + _shorten(texts[p.index], width)
            lines.append(f"{p.rank:>3}. #{p.index}{text}\n     {p.why()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Strategy(Pluggable, ABC):
    """Choose ``budget`` pool items to annotate next. Subclasses implement ``_select``.

    ``labeled`` lists items already annotated (a sequence of indices, or a mapping index ->
    label once labels exist); they are never picked again and strategies may build on them.
    """

    def plan(self, probed: ProbeResult, budget: int, *, labeled: Sequence[int] | Mapping[int, str] = (),
             seed: int = 0) -> Plan:
        labeled_idx = np.array(sorted(labeled), dtype=np.int64)
        if len(labeled_idx) and (labeled_idx.min() < 0 or labeled_idx.max() >= len(probed)):
            raise NeuroshotError("labeled indices must index the pool")
        candidates = np.setdiff1d(np.arange(len(probed)), labeled_idx)
        budget = check_whole("budget", budget)
        if budget > len(candidates):
            raise NeuroshotError(f"budget {budget} is larger than the {len(candidates)} unlabeled items in the pool")
        picks = self._select(probed, candidates, budget, labeled, np.random.default_rng(seed))
        for rank, pick in enumerate(picks, start=1):
            pick.rank = rank
        return Plan(self.name, budget, seed, picks, self.get_params())

    @abstractmethod
    def _select(self, probed: ProbeResult, candidates: np.ndarray, budget: int,
                labeled: Sequence[int] | Mapping[int, str], rng: np.random.Generator) -> list[Pick]:
        """Return ``budget`` picks from ``candidates`` in plan order (ranks are filled in by ``plan``)."""


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    return _REGISTRY.register(cls)


def get_strategy(name: str, **params: Any) -> Strategy:
    """A strategy by name, e.g. ``get_strategy("neufs", tau=0.5)``.

    ``"WRAPPER:BASE"`` (e.g. ``"active:entropy"``) builds the wrapper strategy around ``BASE``;
    parameters the wrapper does not take go to the base strategy.
    """
    wrapper, sep, base = name.partition(":")
    if not sep:
        return _REGISTRY.create(name, **params)
    own = set(parameters(STRATEGIES[wrapper])) if wrapper in STRATEGIES else set()
    base_params = {**params.pop("base_params", {}), **{k: params.pop(k) for k in list(params) if k not in own}}
    return _REGISTRY.create(wrapper, base=base, base_params=base_params, **params)


def item_neurons(probed: ProbeResult, index: int, among: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """The item's 5 strongest signature neurons (by default among the task-critical ones)."""
    ids, values = probed.signatures.item(index)
    keep = np.isin(ids, probed.critical.ids if among is None else among)
    ids, values = ids[keep], values[keep]
    order = np.argsort(-np.abs(values))[:5]
    return neuron_triples(ids[order], values[order], probed.signatures.d_ff)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
