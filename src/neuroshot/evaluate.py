"""In-context inference over a labelled test set: accuracy, macro-F1, per-class recall, confusion.

Two regimes (DESIGN.md, "Evaluation protocol"): **static**, one set of demonstrations for every
query (:func:`predict_proba_static`, :func:`evaluate_static`), and **per-query**, each query with
its own demonstrations from a retriever (:func:`predict_proba_per_query`,
:func:`evaluate_per_query`). In both, the prompt prefix the queries share runs once, as a cached
prefix, and the result equals full-prompt scoring (:func:`neuroshot.scoring.predict_proba`) up to
float rounding (:func:`shared_prefix` says which static prompts are scored in full). Contextual
calibration (Zhao et al. 2021) divides by the label probabilities of content-free inputs under the
same demonstrations: 3 extra prompts for a static set; per query, :func:`content_free_per_query`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # older transformers: caches are repeated
    DynamicLayer = None

from ._validation import check_texts
from .errors import NeuroshotError
from .models import LanguageModel, shares_prefix
from .scoring import cache_of, calibrate, encode, fit_demos, forward, pad_left, prompt_proba, scores_after_prompt
from .task import Demonstration, Task

MIN_SHARED_PREFIX = 8  # per-query: fewer shared leading tokens are not worth a separate cached pass
CONTENT_FREE = ("N/A", "", "[MASK]")

__all__ = ["EvalResult", "metrics", "evaluate_static", "evaluate_per_query", "predict_proba_static",
           "predict_proba_per_query", "predict_proba_prompts", "content_free_static", "content_free_per_query",
           "shared_prefix"]


@dataclass
class EvalResult:
    """Accuracy, macro-F1 and per-class recall of one prompt setup on a test set.

    ``confusion`` (only when asked for) is ``[C, C]`` counts, rows = gold label, columns =
    predicted label, both in ``labels`` order.
    """

    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    n: int
    confusion: np.ndarray | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()

    def confusion_table(self) -> str:
        """The confusion matrix as aligned text (gold labels down, predicted across)."""
        if self.confusion is None:
            raise NeuroshotError("no confusion matrix: evaluate with confusion=True")
        width = max(8, *(len(label) for label in self.labels))
        head = " " * width + " " + " ".join(f"{label[:width]:>{width}}" for label in self.labels)
        rows = [f"{label:<{width}} " + " ".join(f"{int(v):>{width}}" for v in row)
                for label, row in zip(self.labels, self.confusion)]
        return "\n".join(["gold \\ predicted", head, *rows])


def metrics(task: Task, gold: Sequence[str], predicted: Sequence[int], *, confusion: bool = False) -> EvalResult:
    """Accuracy, macro-F1 (over the task's labels) and per-class recall; the confusion matrix on request."""
    y = np.array([task.label_index(g) for g in gold], dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if len(y) != len(p):
        raise NeuroshotError(f"{len(gold)} gold labels for {len(p)} predictions")
    if not len(y):
        raise NeuroshotError("nothing to evaluate: the test set is empty")
    f1s, recall = [], {}
    for c, label in enumerate(task.labels):
        tp = int(((p == c) & (y == c)).sum())
        support, predicted_c = int((y == c).sum()), int((p == c).sum())
        if support:
            recall[label] = tp / support
        if support or predicted_c:
            f1s.append(2 * tp / (support + predicted_c))
    matrix = None
    if confusion:
        n = len(task.labels)
        matrix = np.bincount(y * n + p, minlength=n * n).reshape(n, n)
    return EvalResult(float((p == y).mean()), float(np.mean(f1s)), recall, len(y), matrix,
                      tuple(task.labels))


# --------------------------------------------------------------------------------------------
# Static demonstrations: the shared prefix's KV cache, computed once
# --------------------------------------------------------------------------------------------


def shared_prefix(lm: LanguageModel, task: Task, demos: Sequence[Demonstration],
                  prompts: Sequence[Sequence[int]]) -> tuple[list[int], np.ndarray]:
    """Token ids of the prompt prefix shared by every query, and which prompts really start with them.

    The prefix is the instruction and the demonstrations. Tokenisation can merge tokens across
    the boundary (e.g. a trailing ``"\\n\\n"`` is one token alone but two before a letter), so
    the split is tried right after and right before the last separator; the candidate that is a
    token-exact prefix of the most prompts wins (ties: the longer one). Prompts it is not a
    prefix of (or that would leave no query tokens) are marked False: score them in full.
    """
    query_part = task.input_template.format(text="")
    text = task.prompt("", fit_demos(lm, task, demos))
    prefix_text = text[: len(text) - len(query_part)]
    candidates = [prefix_text]
    if task.separator and prefix_text.endswith(task.separator):
        candidates.append(prefix_text[: -len(task.separator)])
    options = []
    for candidate in filter(None, candidates):
        ids = lm.tokenizer(candidate)["input_ids"]
        ok = np.array([len(p) > len(ids) and list(p[:len(ids)]) == ids for p in prompts], dtype=bool)
        options.append((int(ok.sum()), len(ids), ids, ok))
    best = max(options, key=lambda option: option[:2], default=None)  # the first of equals
    if best is None or best[0] == 0:
        return [], np.zeros(len(prompts), dtype=bool)
    return best[2], best[3]


@torch.no_grad()
def _prefix_cache(lm: LanguageModel, prefix: Sequence[int]):
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=lm.device)
    out = forward(lm, ids, torch.ones_like(ids), use_cache=True)
    return cache_of(out)


def _expand_cache(cache, rows: int):
    """A copy of a one-row KV cache for ``rows`` rows; the shared cache is never changed.

    Plain dynamic layers get broadcast views (the model's next update concatenates into new
    tensors, so the prefix is copied once, not twice); other cache types are repeated.
    """
    past = copy.deepcopy(cache)
    layers = getattr(past, "layers", None)
    if layers and all(type(layer) is DynamicLayer and layer.get_seq_length() > 0 for layer in layers):
        for layer in layers:
            layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            layer.values = layer.values.expand(rows, *layer.values.shape[1:])
    else:
        past.batch_repeat_interleave(rows)
    return past


@torch.no_grad()
def _continuation_scores(lm: LanguageModel, prefix_cache, prefix_len: int, suffixes: Sequence[Sequence[int]],
                         labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, C]`` label scores of prompts = shared prefix (cached) + each suffix (left-padded)."""
    ids, mask = pad_left(suffixes, lm.tokenizer.pad_token_id, lm.device)
    use_cache = any(len(lab) > 1 for lab in labels)
    if shares_prefix(lm.model):
        out = forward(lm, ids, mask, prefix=prefix_cache, use_cache=use_cache)
        return scores_after_prompt(lm, out, mask, labels, prefix=prefix_cache)
    past = _expand_cache(prefix_cache, len(suffixes))
    past_mask = torch.ones((len(suffixes), prefix_len), dtype=mask.dtype, device=mask.device)
    out = forward(lm, ids, mask, past=past, past_mask=past_mask, use_cache=use_cache)
    return scores_after_prompt(lm, out, torch.cat([past_mask, mask], dim=1), labels)


def _score_rows(lm: LanguageModel, prompts: Sequence[Sequence[int]], labels, rows: Sequence[int], out: np.ndarray,
                batch_size: int, max_batch_tokens: int, bar, prefix: Sequence[int] = ()) -> None:
    """Score ``rows`` of ``prompts`` into ``out``, batched by length; with ``prefix`` (which those prompts all
    start with) the prefix runs once, as a shared KV cache, and each batch runs only its own tokens."""
    start = len(prefix)
    cache = _prefix_cache(lm, prefix) if start else None
    score = (lambda chosen: _continuation_scores(lm, cache, start, chosen, labels)) if start else None
    out[rows] = prompt_proba(lm, [prompts[i][start:] for i in rows], labels, batch_size=batch_size,
                             max_batch_tokens=max_batch_tokens, score=score, bar=bar)


def _common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens all prompts share, leaving every prompt at least one token of its own."""
    n = min(map(len, prompts)) - 1
    first = np.asarray(prompts[0][:max(n, 0)])
    for prompt in prompts[1:]:
        if n <= 0:
            break
        differ = np.flatnonzero(np.asarray(prompt[:n]) != first[:n])
        n = int(differ[0]) if len(differ) else n
    return max(n, 0)


def predict_proba_static(lm: LanguageModel, task: Task, texts: Sequence[str], demos: Sequence[Demonstration] = (),
                         *, reuse_prefix: bool = True, batch_size: int = 16, max_batch_tokens: int = 8192,
                         progress: bool = False) -> np.ndarray:
    """``[N, C]`` label probabilities with one fixed set of demonstrations.

    With ``reuse_prefix`` (default) the shared prefix's KV cache is computed once and each
    batch of queries runs only its own tokens; the probabilities equal
    :func:`neuroshot.scoring.predict_proba` (full prompts, ``reuse_prefix=False``) up to float
    rounding. ``max_batch_tokens`` caps a batch's padded query tokens (full prompts: prompt tokens).
    """
    if not len(texts):
        raise NeuroshotError("nothing to score: no texts")
    enc = encode(lm, task, texts, demos)
    out = np.zeros((len(texts), len(task.labels)), dtype=np.float32)
    prefix, ok = shared_prefix(lm, task, demos, enc.prompts) if reuse_prefix else ([], np.zeros(len(texts), bool))
    with tqdm(total=len(texts), unit="item", desc="evaluate (static)", disable=not progress) as bar:
        _score_rows(lm, enc.prompts, enc.labels, np.flatnonzero(~ok).tolist(), out, batch_size, max_batch_tokens, bar)
        _score_rows(lm, enc.prompts, enc.labels, np.flatnonzero(ok).tolist(), out, batch_size, max_batch_tokens, bar,
                    prefix)
    return out


def content_free_static(lm: LanguageModel, task: Task, demos: Sequence[Demonstration] = (), **kwargs) -> np.ndarray:
    """``[C]`` mean label probabilities of the content-free inputs under ``demos`` (the prompt's label bias)."""
    return predict_proba_static(lm, task, CONTENT_FREE, demos, **kwargs).mean(0)


def evaluate_static(lm: LanguageModel, task: Task, texts: Sequence[str], gold: Sequence[str],
                    demos: Sequence[Demonstration] = (), *, batch_size: int = 16, calibrated: bool = False,
                    confusion: bool = False, reuse_prefix: bool = True, progress: bool = False) -> EvalResult:
    """Score one fixed set of demonstrations (the same prompt prefix for every query).

    ``calibrated=True`` applies contextual calibration (divide by the content-free label
    probabilities); ``confusion=True`` adds the confusion matrix. The prefix's KV cache is
    reused across queries unless ``reuse_prefix=False``.
    """
    return _evaluate(predict_proba_static, content_free_static, lm, task, texts, gold, demos, batch_size=batch_size,
                     calibrated=calibrated, confusion=confusion, reuse_prefix=reuse_prefix, progress=progress)


# --------------------------------------------------------------------------------------------
# Per-query demonstrations
# --------------------------------------------------------------------------------------------


def _demo_groups(demos_per_query: Sequence[Sequence[Demonstration]]) -> dict[tuple[Demonstration, ...], list[int]]:
    groups: dict[tuple[Demonstration, ...], list[int]] = {}
    for q, demos in enumerate(demos_per_query):
        groups.setdefault(tuple(demos), []).append(q)
    return groups


def _encode_groups(lm: LanguageModel, task: Task, texts: Sequence[str],
                   groups: Iterable[tuple[tuple[Demonstration, ...], list[int]]], n: int):
    """Prompts of queries ``texts[rows]`` under each group's demonstrations, in one list of length ``n``."""
    prompts: list[list[int]] = [[] for _ in range(n)]
    labels = None
    for demos, rows in groups:
        enc = encode(lm, task, [texts[q] for q in rows], demos)
        labels = enc.labels
        for q, ids in zip(rows, enc.prompts):
            prompts[q] = ids
    return prompts, labels


def predict_proba_per_query(lm: LanguageModel, task: Task, texts: Sequence[str],
                            demos_per_query: Sequence[Sequence[Demonstration]], *, reuse_prefix: bool = True,
                            batch_size: int = 16, max_batch_tokens: int = 8192, progress: bool = False) -> np.ndarray:
    """``[N, C]`` label probabilities, each query with its own demonstrations; batched by prompt length.

    With ``reuse_prefix`` (default) the tokens every prompt starts with (the instruction) run
    once and their KV cache is shared; the probabilities equal full-prompt scoring up to float
    rounding, because the split is made on the prompts' own token ids.
    """
    check_texts(texts)
    if len(demos_per_query) != len(texts):
        raise NeuroshotError(f"{len(demos_per_query)} demonstration lists for {len(texts)} queries")
    if not len(texts):
        raise NeuroshotError("nothing to score: no texts")
    prompts, labels = _encode_groups(lm, task, texts, _demo_groups(demos_per_query).items(), len(texts))
    return predict_proba_prompts(lm, prompts, labels, reuse_prefix=reuse_prefix, batch_size=batch_size,
                                 max_batch_tokens=max_batch_tokens, progress=progress)


def predict_proba_prompts(lm: LanguageModel, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], *,
                          reuse_prefix: bool = True, batch_size: int = 16, max_batch_tokens: int = 8192,
                          progress: bool = False) -> np.ndarray:
    """``[N, C]`` label probabilities of already tokenised prompts, each followed by every label's tokens.

    For callers that build their own prompts (the DSPy engine). Batched by length; with
    ``reuse_prefix`` the tokens every prompt starts with run once, as a shared KV cache.
    """
    if not len(prompts):
        raise NeuroshotError("nothing to score: no prompts")
    out = np.zeros((len(prompts), len(labels)), dtype=np.float32)
    shared = _common_prefix_length(prompts) if reuse_prefix else 0
    prefix = prompts[0][:shared] if shared >= MIN_SHARED_PREFIX else ()
    with tqdm(total=len(prompts), unit="item", desc="evaluate (per-query)", disable=not progress) as bar:
        _score_rows(lm, prompts, labels, list(range(len(prompts))), out, batch_size, max_batch_tokens, bar, prefix)
    return out


def content_free_per_query(lm: LanguageModel, task: Task, demos_per_query: Sequence[Sequence[Demonstration]], *,
                           reuse_prefix: bool = True, batch_size: int = 16, max_batch_tokens: int = 8192,
                           progress: bool = False) -> np.ndarray:
    """``[N, C]``: for each query, the content-free label probabilities under its own demonstrations.

    Exact contextual calibration per query. Costs 3 prompts per distinct demonstration set
    (queries sharing a set share the estimate), all batched together.
    """
    groups = list(_demo_groups(demos_per_query))
    cf_texts = [t for _ in groups for t in CONTENT_FREE]
    cf_demos = [list(g) for g in groups for _ in CONTENT_FREE]
    probs = predict_proba_per_query(lm, task, cf_texts, cf_demos, reuse_prefix=reuse_prefix, batch_size=batch_size,
                                    max_batch_tokens=max_batch_tokens, progress=progress)
    bias = probs.reshape(len(groups), len(CONTENT_FREE), -1).mean(1)
    index = {g: i for i, g in enumerate(groups)}
    return bias[[index[tuple(d)] for d in demos_per_query]]


def evaluate_per_query(lm: LanguageModel, task: Task, texts: Sequence[str], gold: Sequence[str],
                       demos_per_query: Sequence[Sequence[Demonstration]], *, batch_size: int = 16,
                       calibrated: bool = False, confusion: bool = False, reuse_prefix: bool = True,
                       progress: bool = False) -> EvalResult:
    """Score each query with its own demonstrations (e.g. from a retriever).

    ``calibrated=True`` applies exact per-query contextual calibration: 3 content-free prompts
    per distinct demonstration set (up to 4x the cost of plain evaluation). The instruction's KV
    cache is shared by all queries unless ``reuse_prefix=False``.
    """
    return _evaluate(predict_proba_per_query, content_free_per_query, lm, task, texts, gold, demos_per_query,
                     batch_size=batch_size, calibrated=calibrated, confusion=confusion, reuse_prefix=reuse_prefix,
                     progress=progress)


def _evaluate(predict, content_free, lm: LanguageModel, task: Task, texts: Sequence[str], gold: Sequence[str], demos,
              *, batch_size: int, calibrated: bool, confusion: bool, reuse_prefix: bool, progress: bool) -> EvalResult:
    """Metrics of ``predict``'s probabilities (static or per-query), calibrated by ``content_free`` on request."""
    if len(texts) != len(gold):
        raise NeuroshotError(f"{len(gold)} gold labels for {len(texts)} test texts")
    kw = dict(reuse_prefix=reuse_prefix, batch_size=batch_size)
    probs = predict(lm, task, texts, demos, progress=progress, **kw)
    if calibrated:
        probs = calibrate(probs, content_free(lm, task, demos, **kw))
    return metrics(task, gold, probs.argmax(1), confusion=confusion)
