"""One loaded model per spec string, and one lock per torch model shared by selectors and pipelines."""

from __future__ import annotations

import os
import threading
from weakref import WeakKeyDictionary

from neuroshot import LanguageModel, NeuroshotError, load_model

_MODELS: dict[str, LanguageModel] = {}
_LOADING = threading.Lock()
_LOCKS: WeakKeyDictionary = WeakKeyDictionary()  # torch module -> threading.Lock
_LOCKS_GUARD = threading.Lock()


def resolve_model(model: LanguageModel | str | os.PathLike) -> LanguageModel:
    """A ``LanguageModel`` as is, or a spec for ``neuroshot.load_model`` (``"default"``, a folder, a ``.gguf``).

    A spec is loaded once per process: two selectors built with ``model="default"`` share one copy.
    """
    if isinstance(model, LanguageModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        key = os.fspath(model)
        with _LOADING:
            if key not in _MODELS:
                _MODELS[key] = load_model(key)
            return _MODELS[key]
    raise NeuroshotError(f"model must be a neuroshot LanguageModel or a load_model spec string, "
                         f"got {type(model).__name__}")


def model_lock(lm: LanguageModel) -> threading.Lock:
    """The lock that serialises every use of ``lm.model`` from this package (probes and pipeline calls)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(lm.model)
        if lock is None:
            lock = _LOCKS[lm.model] = threading.Lock()
        return lock
