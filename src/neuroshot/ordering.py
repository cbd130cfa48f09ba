"""The order of a static prompt's demonstrations, chosen from the model's predictions on unlabeled texts.

A small model reads a fixed prompt's order as a label prior: the same annotated items in another
order move its accuracy by many points, mostly by how evenly its answers spread over the labels
(measured: benchmarks/README.md, "The order of a static prompt on validation").
:func:`order_demonstrations` tries a few seeded orders and keeps the one whose answers on unlabeled
pool texts are spread most evenly (the "GlobalE" criterion of Lu et al. 2022, *Fantastically Ordered
Prompts and Where to Find Them*, with pool texts in place of the paper's generated probing set). It
reads no gold label but the demonstrations' own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ._validation import check_whole
from .errors import ContextOverflowError, NeuroshotError
from .evaluate import predict_proba_static
from .models import LanguageModel
from .task import Demonstration, Task

__all__ = ["order_demonstrations", "order_planned", "prediction_entropy"]

log = logging.getLogger(__name__)


def prediction_entropy(probs: np.ndarray) -> float:
    """Entropy (nats) of the histogram of predicted labels (argmax of each ``[N, C]`` row)."""
    counts = np.bincount(np.asarray(probs).argmax(1), minlength=probs.shape[1]) / len(probs)
    counts = counts[counts > 0]
    return float(-(counts * np.log(counts)).sum())


def order_demonstrations(lm: LanguageModel, task: Task, demos: Sequence[Demonstration], texts: Sequence[str], *,
                         candidates: int = 8, seed: int = 0, batch_size: int = 16) -> list[Demonstration]:
    """``demos`` in the order (the given one and ``candidates - 1`` seeded permutations) whose predicted
    labels on ``texts`` (unlabeled; e.g. 64 pool items not annotated) have the highest entropy.

    Ties keep the earliest candidate, so the given order wins unless another is strictly better.
    Costs ``candidates`` static scorings of ``texts`` (each with its prefix cached once).
    """
    demos = list(demos)
    return [demos[i] for i in _best_order(lm, task, demos, texts, candidates, seed, batch_size)]


def order_planned(lm: LanguageModel, task: Task, pool_texts: Sequence[str], chosen: Sequence[int],
                  labels: Sequence[str], *, unlabeled: int = 64, candidates: int = 8, seed: int = 0,
                  batch_size: int = 16) -> list[int]:
    """The planned pool indices ``chosen`` (annotated with ``labels``, in the same order) reordered by
    :func:`order_demonstrations`, which reads a seeded sample of ``unlabeled`` pool texts not planned
    (their texts only). With no such text left, or a prompt of these demonstrations too long for the
    model's context, the plan's order (with a warning in the second case)."""
    check_whole("unlabeled", unlabeled)
    rest = np.setdiff1d(np.arange(len(pool_texts)), np.asarray(chosen, dtype=int))
    if not len(rest):
        return list(chosen)
    sample = np.sort(np.random.default_rng(seed).choice(rest, size=min(unlabeled, len(rest)), replace=False))
    demos = [Demonstration(pool_texts[i], label) for i, label in zip(chosen, labels)]
    try:
        order = _best_order(lm, task, demos, [pool_texts[i] for i in sample], candidates, seed, batch_size)
    except ContextOverflowError as exc:  # e.g. an integration's own prompt format, shorter than neuroshot's
        log.warning("demonstrations kept in the plan's order: %s", exc)
        return list(chosen)
    return [chosen[i] for i in order]


def _best_order(lm: LanguageModel, task: Task, demos: list[Demonstration], texts: Sequence[str], candidates: int,
                seed: int, batch_size: int) -> list[int]:
    check_whole("candidates", candidates)
    if not len(texts):
        raise NeuroshotError("ordering demonstrations needs unlabeled texts to read the model's answers on")
    if len(demos) < 2:
        return list(range(len(demos)))
    rng = np.random.default_rng(seed)
    orders = [tuple(range(len(demos)))] + [tuple(rng.permutation(len(demos)).tolist()) for _ in range(candidates - 1)]
    best, best_entropy = orders[0], -1.0
    for order in dict.fromkeys(orders):  # a short prompt may repeat an order
        probs = predict_proba_static(lm, task, texts, [demos[i] for i in order], batch_size=batch_size)
        entropy = prediction_entropy(probs)
        if entropy > best_entropy + 1e-9:
            best, best_entropy = order, entropy
    return list(best)
