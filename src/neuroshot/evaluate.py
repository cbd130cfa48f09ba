"""Scoring a prompt setup on labelled test items: accuracy and macro-F1 of label prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .models import LanguageModel
from .scoring import calibrate, content_free_proba, predict_proba
from .task import Demonstration, Task


@dataclass
class EvalResult:
    """Accuracy, macro-F1 and per-class recall of one prompt setup on a test set."""

    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    n: int


def metrics(task: Task, gold: Sequence[str], predicted: Sequence[int]) -> EvalResult:
    """Accuracy, macro-F1 (over the task's labels) and per-class recall."""
    y = np.array([task.label_index(g) for g in gold])
    p = np.asarray(predicted)
    f1s, recall = [], {}
    for c, label in enumerate(task.labels):
        tp = int(((p == c) & (y == c)).sum())
        support, predicted_c = int((y == c).sum()), int((p == c).sum())
        if support:
            recall[label] = tp / support
        if support or predicted_c:
            f1s.append(2 * tp / (support + predicted_c))
    return EvalResult(float((p == y).mean()), float(np.mean(f1s)) if f1s else 0.0, recall, len(y))


def evaluate_static(lm: LanguageModel, task: Task, texts: Sequence[str], gold: Sequence[str],
                    demos: Sequence[Demonstration] = (), *, batch_size: int = 16,
                    calibrated: bool = False) -> EvalResult:
    """Score one fixed set of demonstrations (the same prompt prefix for every query).

    ``calibrated=True`` applies contextual calibration (divide by the content-free label probabilities).
    """
    probs = predict_proba(lm, task, texts, demos, batch_size=batch_size)
    if calibrated:
        probs = calibrate(probs, content_free_proba(lm, task, demos))
    return metrics(task, gold, probs.argmax(1))
