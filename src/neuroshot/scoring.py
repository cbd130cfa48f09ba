"""Prompt encoding and label scoring: length-normalised verbalizer log-probabilities, batched."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ._validation import check_texts
from .errors import ContextOverflowError, NeuroshotError
from .models import PREFIX_KWARG, LanguageModel, base_model, model_lock
from .task import Demonstration, Task

log = logging.getLogger(__name__)

_MAX_LOGIT_FLOATS = 64_000_000  # caps [rows, positions, vocab] logits per continuation pass (~256 MB)


@dataclass
class EncodedPrompts:
    """Token ids of each prompt (ending right before the answer) and of each label's answer."""

    prompts: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0

    @property
    def single_token(self) -> bool:
        return all(len(ids) == 1 for ids in self.labels)


def fit_demos(lm: LanguageModel, task: Task, demos: Sequence[Demonstration]) -> tuple[Demonstration, ...]:
    """``demos`` with each text cut to ``task.max_text_tokens`` tokens, as query texts are.

    A long pool text (a whole abstract or contract clause) would otherwise crowd the prompt in
    every query it is shown to. Without ``max_text_tokens`` the demonstrations are kept whole.
    """
    if not task.max_text_tokens:
        return tuple(demos)
    cut = []
    for demo in demos:
        ids = lm.tokenizer(demo.text, add_special_tokens=False)["input_ids"]
        if len(ids) > task.max_text_tokens:
            demo = replace(demo, text=lm.tokenizer.decode(ids[:task.max_text_tokens], skip_special_tokens=True))
        cut.append(demo)
    return tuple(cut)


def encode(lm: LanguageModel, task: Task, texts: Sequence[str], demos: Sequence[Demonstration] = ()) -> EncodedPrompts:
    """Tokenise prompts and label answers.

    Texts (queries and demonstrations) are cut to ``task.max_text_tokens``; queries too long for
    the context are truncated with a warning.
    """
    check_texts(texts)
    tok = lm.tokenizer
    demos = fit_demos(lm, task, demos)
    labels = [tok(task.answer_prefix + v, add_special_tokens=False)["input_ids"] for v in task.verbalized]
    if any(not ids for ids in labels):
        raise NeuroshotError("a verbalizer encodes to no tokens: give every label a non-empty answer string")
    overhead = len(tok(task.prompt("", demos))["input_ids"]) + max(map(len, labels)) + 1
    context_limit = lm.max_length - overhead
    if context_limit < 1:
        raise ContextOverflowError(f"the prompt without the text already fills the model's context ({lm.max_length} tokens)")
    limit = min(context_limit, task.max_text_tokens or context_limit)
    prompts, truncated, over_context = [], 0, 0
    for text in texts:
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(text_ids) > limit:
            over_context += len(text_ids) > context_limit
            text = tok.decode(text_ids[:limit], skip_special_tokens=True)
            truncated += 1
        prompts.append(tok(task.prompt(text, demos))["input_ids"])
    if over_context:
        log.warning("%d text(s) longer than the model's context (%d tokens) were truncated to %d tokens",
                    over_context, lm.max_length, limit)
    return EncodedPrompts(prompts, labels, truncated)


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad so the last position of every row is the answer position."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def forward(lm: LanguageModel, ids: torch.Tensor, mask: torch.Tensor, *, logits_to_keep: int = 1,
            past=None, past_mask: torch.Tensor | None = None, use_cache: bool = False, prefix=None):
    """One model call with positions computed from the mask (correct under left padding).

    ``prefix``: a one-row KV cache every row continues (only where :func:`~neuroshot.models.shares_prefix`);
    ``mask`` and the returned cache then cover the rows' own tokens only.
    """
    full_mask = mask if past_mask is None else torch.cat([past_mask, mask], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:] + _prefix_length(prefix)
    with model_lock(lm):
        return lm.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=use_cache,
                        logits_to_keep=logits_to_keep, **({_cache_kwarg(lm): past} if past is not None else {}),
                        **_prefix_kwargs(prefix))


def _prefix_length(prefix) -> int:
    return 0 if prefix is None else prefix.get_seq_length()


def _prefix_kwargs(prefix) -> dict:
    return {} if prefix is None else {PREFIX_KWARG: prefix}


@functools.cache
def _cache_kwarg_of(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _cache_kwarg(lm: LanguageModel) -> str:
    """transformers >= 5.2x names the KV cache argument ``cache``; older ones ``past_key_values``."""
    return _cache_kwarg_of(type(base_model(lm.model)))


def cache_of(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Length-bucketed batches of indices: sorted by length, capped by rows and padded tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batch: list[int] = []
    for i in order.tolist():
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[i] > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.no_grad()
def label_scores(lm: LanguageModel, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, C]`` mean log-probability of each label's tokens after each prompt (one batch)."""
    ids, mask = pad_left(prompts, lm.tokenizer.pad_token_id, lm.device)
    out = forward(lm, ids, mask, use_cache=any(len(lab) > 1 for lab in labels))
    return scores_after_prompt(lm, out, mask, labels)


@torch.no_grad()
def scores_after_prompt(lm: LanguageModel, out, mask: torch.Tensor, labels: Sequence[Sequence[int]], *,
                        prefix=None) -> torch.Tensor:
    """Label scores from a prompt pass's output (its KV cache is copied, never changed); ``prefix`` as in :func:`forward`."""
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    firsts = torch.tensor([lab[0] for lab in labels], device=lm.device)
    scores = first[:, firsts].clone()
    if all(len(lab) == 1 for lab in labels):
        return scores
    multi = [c for c, lab in enumerate(labels) if len(lab) > 1]
    per_pass = max(1, _MAX_LOGIT_FLOATS // (mask.shape[0] * out.logits.shape[-1]))  # continuation tokens per pass
    for group in _token_groups([len(labels[c]) - 1 for c in multi], per_pass):
        chosen = [multi[i] for i in group]
        scores[:, chosen] += _continuation_logprob(lm, cache_of(out), mask, [labels[c] for c in chosen], prefix)
    lengths = torch.tensor([len(lab) for lab in labels], device=lm.device, dtype=scores.dtype)
    return scores / lengths


def _token_groups(sizes: Sequence[int], cap: int) -> Iterator[list[int]]:
    """Consecutive index groups whose sizes sum to at most ``cap`` (a single larger item gets its own group)."""
    group: list[int] = []
    total = 0
    for i, size in enumerate(sizes):
        if group and total + size > cap:
            yield group
            group, total = [], 0
        group.append(i)
        total += size
    if group:
        yield group


def _continuation_logprob(lm: LanguageModel, cache, prompt_mask: torch.Tensor,
                          labels: Sequence[Sequence[int]], prefix=None) -> torch.Tensor:
    """Sum of log p(label token t | prompt, earlier label tokens) for t >= 1, rows x labels.

    All labels' continuations run in one pass over one copy of the prompt's KV cache: they are laid
    end to end, and a block attention mask lets each token see the prompt and its own label's
    earlier tokens only, with positions restarting after the prompt for every label.
    """
    dev = lm.device
    feed = [t for lab in labels for t in lab[:-1]]
    target = torch.tensor([t for lab in labels for t in lab[1:]], device=dev)
    owner = torch.tensor([c for c, lab in enumerate(labels) for _ in lab[1:]], device=dev)
    offset = torch.tensor([j for lab in labels for j in range(len(lab) - 1)], device=dev)
    n_rows, n = prompt_mask.shape[0], len(feed)
    own_label = (owner[:, None] == owner[None, :]) & (offset[None, :] <= offset[:, None])
    attend = torch.cat([prompt_mask.bool()[:, None, :].expand(n_rows, n, -1), own_label.expand(n_rows, n, n)], dim=-1)
    dtype = lm.dtype
    block_mask = torch.zeros(attend.shape, dtype=dtype, device=dev).masked_fill_(~attend, torch.finfo(dtype).min)
    positions = prompt_mask.sum(-1, keepdim=True) + offset[None, :] + _prefix_length(prefix)
    with model_lock(lm):
        out = lm.model(input_ids=torch.tensor(feed, device=dev).expand(n_rows, n),
                       attention_mask=block_mask[:, None], position_ids=positions, use_cache=True,
                       logits_to_keep=n, **{_cache_kwarg(lm): copy.deepcopy(cache)}, **_prefix_kwargs(prefix))
    logp = torch.log_softmax(out.logits.float(), dim=-1).gather(-1, target.expand(n_rows, n)[..., None]).squeeze(-1)
    return torch.zeros((n_rows, len(labels)), device=dev, dtype=logp.dtype).index_add_(1, owner, logp)


def predict_proba(lm: LanguageModel, task: Task, texts: Sequence[str], demos: Sequence[Demonstration] = (), *,
                  batch_size: int = 16, max_batch_tokens: int = 8192) -> np.ndarray:
    """``[N, C]`` label probabilities: softmax over labels of length-normalised verbalizer log-probs."""
    enc = encode(lm, task, texts, demos)
    return prompt_proba(lm, enc.prompts, enc.labels, batch_size=batch_size, max_batch_tokens=max_batch_tokens)


def prompt_proba(lm: LanguageModel, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], *,
                 batch_size: int = 16, max_batch_tokens: int = 8192, score=None, bar=None) -> np.ndarray:
    """``[N, C]`` label probabilities of tokenised prompts, scored in length-bucketed batches.

    ``score(batch of prompts)`` gives a batch's ``[B, C]`` label scores (default: :func:`label_scores` of
    the full prompts); ``bar`` (a tqdm bar) is advanced by each batch's rows.
    """
    out = np.zeros((len(prompts), len(labels)), dtype=np.float32)
    for batch in batches([len(p) for p in prompts], batch_size, max_batch_tokens):
        chosen = [prompts[i] for i in batch]
        scores = label_scores(lm, chosen, labels) if score is None else score(chosen)
        out[batch] = torch.softmax(scores, dim=-1).cpu().numpy()
        if bar is not None:
            bar.update(len(batch))
    return out


def calibrate(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021): divide by the content-free probabilities, renormalise."""
    scaled = probs / np.clip(bias, 1e-12, None)
    return scaled / scaled.sum(axis=-1, keepdims=True)
