"""``plan_annotations``: which items of an unlabeled pool to label first, from LangChain code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import neuroshot
from neuroshot import LanguageModel, NeuroshotError, Task, get_pipeline

from .selector import example_text


def plan_annotations(
    texts: Sequence[str] | Sequence[Mapping[str, Any]],
    *,
    model: LanguageModel | str,
    task: Task,
    budget: int,
    strategy: str | None = None,
    seed: int = 0,
    input_keys: Sequence[str] | None = None,
    labeled: Sequence[int] = (),
    strategy_params: Mapping[str, Any] | None = None,
    method: str = "direct_logit",
    top_k: int = 64,
    critical_fraction: float = 0.01,
    store: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Probe an unlabeled pool and plan ``budget`` items to annotate, in plan order.

    ``texts`` are strings or dicts (their ``input_keys`` form the text, default all keys). Each
    returned dict has ``rank``, ``index`` (into ``texts``), ``text``, ``example`` (the input dict,
    or ``{"text": text}``: add a ``"label"`` and pass it to ``NeuronAwareExampleSelector``),
    ``score``, ``why`` and ``neurons``. ``labeled`` lists indices already annotated (never picked).
    The LangChain face of :func:`neuroshot.plan_annotations` (which takes records or a pool file).
    """
    if not texts:
        raise NeuroshotError("nothing to plan: the pool is empty")
    examples = [dict(t) if isinstance(t, Mapping) else {"text": t} for t in texts]
    keys = list(input_keys) if input_keys is not None else None
    pool_texts = []
    for n, example in enumerate(examples):
        try:
            pool_texts.append(example_text(example, keys if keys is not None else list(example)))
        except NeuroshotError as exc:
            raise NeuroshotError(f"pool item {n}: {exc}") from None
    chosen = get_pipeline("recommended").customized(strategy=strategy, strategy_params=strategy_params)
    planned = neuroshot.plan_annotations(model, task, pool_texts, budget, pipeline=chosen,
                                         labeled=[str(i) for i in labeled], seed=seed, progress=progress,
                                         method=method, top_k=top_k, critical_fraction=critical_fraction, store=store)
    return [{"rank": p.rank, "index": p.index, "text": pool_texts[p.index], "example": examples[p.index],
             "score": p.score, "why": p.why(), "neurons": list(p.neurons)} for p in planned.plan.picks]
