"""One loaded model per spec, shared by the engine and the teleprompter, and one lock per model.

Probing registers forward hooks on the model's FFN layers; a generation running at the same time
in another thread (``dspy.Evaluate(num_threads=...)``) would be seen by those hooks. Every use of
a model from this package therefore holds :func:`model_lock`.
"""

from __future__ import annotations

import threading
import weakref

from neuroshot import LanguageModel, NeuroshotError, load_model

ModelLike = str | LanguageModel

_LOADED: dict[str, LanguageModel] = {}
_LOAD_LOCK = threading.Lock()
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolve_model(model: ModelLike) -> LanguageModel:
    """A loaded model: ``model`` itself, or the model for a spec (``"default"``, a folder, a .gguf),
    loaded once per process."""
    if isinstance(model, LanguageModel):
        return model
    if not isinstance(model, str) or not model:
        raise NeuroshotError(f"model must be a model spec string or a neuroshot.LanguageModel, got {model!r}")
    with _LOAD_LOCK:
        if model not in _LOADED:
            _LOADED[model] = load_model(model)
        return _LOADED[model]


def model_lock(lm: LanguageModel) -> threading.RLock:
    """The lock that serialises every forward pass of this package on ``lm``'s weights."""
    with _LOAD_LOCK:
        lock = _LOCKS.get(lm.model)
        if lock is None:
            lock = _LOCKS[lm.model] = threading.RLock()
        return lock
