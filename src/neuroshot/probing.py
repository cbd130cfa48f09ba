"""Probing a pool: label probabilities, sparse neuron signatures, task-critical neurons, item scores."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ._validation import check_choice, check_in, check_texts, check_whole
from .attribution import METHODS, OBJECTIVES, attribute
from .errors import NeuroshotError
from .models import LanguageModel
from .scoring import batches, encode, fit_demos, label_scores
from .signatures import CriticalNeurons, Signatures, critical_neurons, top_k_signatures
from .store import SignatureStore, StoredItem, text_key
from .task import Demonstration, Task


@dataclass
class ItemScores:
    """Per-item scores (DESIGN.md, "Per-item scores"); arrays of length N."""

    consensus: np.ndarray  # NeuFS Q: unique neurons in the signature
    entropy: np.ndarray  # label entropy (nats)
    margin: np.ndarray  # top-1 minus top-2 label probability
    influence: np.ndarray  # L2 norm of the signature on the task-critical neurons


@dataclass
class ProbeResult:
    """Everything a planning strategy may read about a pool. It never holds gold labels."""

    texts: list[str]
    task: Task
    probs: np.ndarray  # [N, C] label probabilities
    signatures: Signatures
    critical: CriticalNeurons
    scores: ItemScores
    method: str = "direct_logit"
    ids: list[str] | None = None
    embeddings: np.ndarray | None = field(default=None, repr=False)  # filled by embedding baselines

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def predicted(self) -> np.ndarray:
        """Index of the model's predicted label per item."""
        return self.probs.argmax(1)

    def subset(self, rows: Sequence[int]) -> ProbeResult:
        """The probe of ``rows`` only, in that order; the task-critical neurons stay those of this pool."""
        rows = list(rows)
        scores = ItemScores(*(values[rows] for values in vars(self.scores).values()))
        return ProbeResult([self.texts[i] for i in rows], self.task, self.probs[rows], self.signatures.subset(rows),
                           self.critical, scores, self.method, None if self.ids is None else [self.ids[i] for i in rows],
                           None if self.embeddings is None else self.embeddings[rows])

    def extend(self, other: ProbeResult) -> ProbeResult:
        """This probe followed by ``other`` (same model and task), task-critical neurons recomputed over both."""
        if other.task != self.task or other.method != self.method:
            raise NeuroshotError("can only extend a probe with one of the same task and attribution method")
        signatures = Signatures.concat([self.signatures, other.signatures])
        probs = np.concatenate([self.probs, other.probs])
        critical = critical_neurons(signatures, self.critical.fraction)
        ids = None if self.ids is None or other.ids is None else self.ids + other.ids
        embeddings = (None if self.embeddings is None or other.embeddings is None
                      else np.concatenate([self.embeddings, other.embeddings]))
        return ProbeResult(self.texts + other.texts, self.task, probs, signatures, critical,
                           item_scores(probs, signatures, critical), self.method, ids, embeddings)


def item_scores(probs: np.ndarray, signatures: Signatures, critical: CriticalNeurons) -> ItemScores:
    """Consensus, uncertainty and influence of every item."""
    p = np.clip(probs, 1e-12, 1.0)
    top2 = np.sort(probs, axis=1)[:, -2:]
    restricted = critical.restrict(signatures)
    influence = np.sqrt(np.asarray(restricted.multiply(restricted).sum(axis=1)).ravel())
    return ItemScores(signatures.sizes().astype(np.int64), -(p * np.log(p)).sum(1), top2[:, 1] - top2[:, 0], influence)


def probe(
    lm: LanguageModel,
    task: Task,
    texts: Sequence[str],
    *,
    method: str = "direct_logit",
    objective: str = "logprob",
    top_k: int = 64,
    demos: Sequence[Demonstration] = (),
    critical_fraction: float = 0.01,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    store: str | Path | None = None,
    chunk_size: int = 64,
    on_damage: str = "error",
    ig_steps: int = 16,
    progress: bool = True,
    ids: Sequence[str] | None = None,
    backend: str = "local",
    actors: int = 2,
    ray_address: str | None = None,
    pool_source: str | Path | None = None,
    text_field: str = "text",
) -> ProbeResult:
    """Probe every text: label probabilities and the top-``top_k`` neurons per layer by attribution.

    With ``store`` (a folder) results are written in chunks as they are computed and reused on the
    next call with the same model, task, demonstrations and settings, so an interrupted probe
    (Ctrl-C or kill -9) resumes where it stopped; a second process probing into the same store
    waits for the first and reuses its results. A store chunk failing its checksum raises a
    :class:`NeuroshotError` naming it, or with ``on_damage="recompute"`` its items are probed again
    (:class:`~neuroshot.store.SignatureStore`). ``backend="ray"`` probes what the store lacks on
    Ray Data with ``actors`` model copies (:mod:`neuroshot.distributed`; needs ``store`` and a
    model from :func:`~neuroshot.load_model`), on the cluster at ``ray_address`` or a local one;
    with ``pool_source`` (the file or URI ``texts`` came from: JSONL, CSV/TSV or Parquet, its
    ``text_field`` column) Ray Data reads the pool itself and the driver ships no texts.
    """
    check_probe_settings(method=method, objective=objective, top_k=top_k, critical_fraction=critical_fraction)
    check_choice("backend", backend, ("local", "ray"))
    check_whole("actors", actors)
    check_texts(texts, blank_ok=False)
    if not texts:
        raise NeuroshotError("nothing to probe: the pool is empty")
    if ids is not None and len(ids) != len(texts):
        raise NeuroshotError(f"{len(ids)} ids for {len(texts)} texts")
    if backend == "ray" and store is None:
        raise NeuroshotError("the ray backend writes its results to a signature store: pass store=FOLDER")
    if pool_source is not None and backend != "ray":
        raise NeuroshotError("pool_source is read by Ray Data: it needs backend='ray'")
    enc = encode(lm, task, texts, demos)
    keys = [text_key(t) for t in texts]
    settings = {"model": lm.fingerprint, "task": task.fingerprint(), "method": method, "top_k": top_k,
                "objective": objective if method != "direct_logit" else None,
                "ig_steps": ig_steps if method == "integrated_gradients" else None,
                "demos": [[d.text, d.label] for d in fit_demos(lm, task, demos)]}
    cache = SignatureStore(store, settings, on_damage) if store is not None else None
    first: dict[str, int] = {}  # each distinct text once
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    results, todo = _stored(cache, first)
    if not todo:
        return _assemble(lm, task, texts, keys, results, method, critical_fraction, ids)
    with cache.writing() if cache is not None else contextlib.nullcontext():
        if cache is not None:  # read again: another writer may have stored items while this one waited
            cache.refresh()
            results, todo = _stored(cache, first)
        _probe_missing(lm, task, texts, keys, enc, list(first.values()), todo, results, cache, settings,
                       backend=backend,
                       method=method, objective=objective, top_k=top_k, ig_steps=ig_steps, demos=demos,
                       batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size,
                       actors=actors, ray_address=ray_address, pool_source=pool_source, text_field=text_field,
                       progress=progress)
    return _assemble(lm, task, texts, keys, results, method, critical_fraction, ids)


def _stored(cache: SignatureStore | None, first: dict[str, int]) -> tuple[dict[str, StoredItem], list[int]]:
    """The items of ``first`` (key -> index of its text) the store has, and the indices of the rest."""
    stored = {key: cache.get(key) for key in first} if cache is not None else {}
    results = {key: item for key, item in stored.items() if item is not None}
    return results, [i for key, i in first.items() if key not in results]


def _probe_missing(lm, task, texts, keys, enc, distinct, todo, results, cache, settings, *, backend, method,
                   objective, top_k, ig_steps, demos, batch_size, max_batch_tokens, chunk_size, actors,
                   ray_address, pool_source, text_field, progress) -> None:
    """Probe the texts at ``todo`` into ``results`` (and the store, chunk by chunk, when there is one).

    The batches are those of every distinct text (``distinct``) less what is stored: a chunk holds
    whole batches, so a probe resumed after an interruption computes the very batches the
    uninterrupted one would, and its values are bit-identical (a batch's padding changes float
    rounding)."""
    store = None if cache is None else cache.path.parent
    if backend == "ray" and todo:
        from .distributed import probe_on_ray

        probe_on_ray(lm, task, None if pool_source is not None else [texts[i] for i in todo], settings, store,
                     compute=probe_texts, demos=demos, actors=actors, address=ray_address, chunk_size=chunk_size,
                     source=pool_source, text_field=text_field,
                     probe_args=dict(method=method, objective=objective, top_k=top_k, ig_steps=ig_steps,
                                     batch_size=batch_size, max_batch_tokens=max_batch_tokens))
        cache = SignatureStore(store, settings, cache.on_damage)  # read back what the actors wrote
        results.update((keys[i], cache.get(keys[i])) for i in todo)
        missing = [i for i in todo if results[keys[i]] is None]
        if missing:
            where = f" (are they in {pool_source}, column '{text_field}'?)" if pool_source is not None else ""
            raise NeuroshotError(f"the ray backend finished without probing {len(missing)} of the texts, "
                                 f"e.g. {texts[missing[0]][:60]!r}{where}")
        todo = []
    pending: dict[str, StoredItem] = {}
    bar = tqdm(total=len(todo), unit="item", desc=f"probe ({method})", disable=not progress or not todo)
    try:
        missing = set(todo)
        for batch in batches([len(enc.prompts[i]) for i in distinct], batch_size, max_batch_tokens):
            rows = [distinct[j] for j in batch if distinct[j] in missing]
            if not rows:
                continue
            for key, item in _probe_batch(lm, enc, [enc.prompts[i] for i in rows], method, objective, top_k,
                                          ig_steps, [keys[i] for i in rows]):
                results[key] = pending[key] = item
            bar.update(len(rows))
            if cache is not None and len(pending) >= chunk_size:
                cache.put(pending)
                pending = {}
    finally:  # on Ctrl-C too: keep every finished item
        bar.close()
        if cache is not None:
            cache.put(pending)


def probe_texts(lm: LanguageModel, task: Task, texts: Sequence[str], keys: Sequence[str], *,
                demos: Sequence[Demonstration] = (), method: str = "direct_logit", objective: str = "logprob",
                top_k: int = 64, ig_steps: int = 16, batch_size: int = 16,
                max_batch_tokens: int = 4096) -> dict[str, StoredItem]:
    """The store items of ``texts`` (under ``keys``), computed without a store (what one Ray actor runs)."""
    check_texts(texts, blank_ok=False)
    enc = encode(lm, task, texts, demos)
    results: dict[str, StoredItem] = {}
    for batch in batches([len(p) for p in enc.prompts], batch_size, max_batch_tokens):
        results.update(_probe_batch(lm, enc, [enc.prompts[i] for i in batch], method, objective, top_k, ig_steps,
                                    [keys[i] for i in batch]))
    return results


def _probe_batch(lm, enc, prompts, method, objective, top_k, ig_steps, keys):
    predicted, scores = None, None
    if not enc.single_token and method != "direct_logit":  # direct_logit scores multi-token labels itself
        scores = label_scores(lm, prompts, enc.labels)
        predicted = scores.argmax(-1).tolist()
    att = attribute(lm, prompts, enc.labels, predicted=predicted, method=method, objective=objective,
                    ig_steps=ig_steps)
    scores = att.label_scores if scores is None else scores
    neurons, values = top_k_signatures(att.values, top_k)
    return [(key, StoredItem(n, v, s)) for key, n, v, s in zip(keys, neurons, values, scores.cpu().numpy())]


def check_probe_settings(*, method: str = "direct_logit", objective: str = "logprob", top_k: int = 64,
                         critical_fraction: float = 0.01) -> None:
    """Raise :class:`NeuroshotError` on a probe setting out of range, before any model is run."""
    check_choice("attribution method", method, METHODS)
    check_choice("objective", objective, OBJECTIVES)
    check_whole("top_k", top_k)
    check_in("critical fraction", critical_fraction, 0.0, 1.0, low_open=True)


def _assemble(lm, task, texts, keys, results, method, critical_fraction, ids) -> ProbeResult:
    items = [results[k] for k in keys]
    signatures = Signatures.from_items([it.neurons for it in items], [it.values for it in items], lm.n_layers, lm.d_ff)
    probs = torch.softmax(torch.from_numpy(np.stack([it.label_scores for it in items])), dim=-1).numpy()
    critical = critical_neurons(signatures, critical_fraction)
    return ProbeResult(list(texts), task, probs, signatures, critical, item_scores(probs, signatures, critical),
                       method, list(ids) if ids is not None else None)
