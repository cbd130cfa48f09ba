"""Neuron attribution on one batch: which FFN neurons drive the model's predicted label.

Methods (DESIGN.md, "Neurons and signatures"):

- ``direct_logit`` (forward only, NeuFS): ``a[l,i] * (W_out[l][:, i] . u[y_t])`` at each answer
  position ``t``, where ``u`` is the unembedding row of the answer token.
- ``grad_x_act``: ``a[l,i] * d objective / d a[l,i]``, one backward pass w.r.t. activations only.
- ``integrated_gradients``: per layer, the activation at the answer span scaled from 0 to its
  value (knowledge-neuron IG); slow, a reference for the fast methods.

Answer positions: the positions that *predict* the answer tokens, i.e. the last prompt token
and every answer token but the last (teacher forcing). Every one of them is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._validation import check_choice
from .models import LanguageModel, model_lock
from .scoring import cache_of, forward, pad_left, scores_after_prompt

METHODS = ("direct_logit", "grad_x_act", "integrated_gradients")
OBJECTIVES = ("logprob", "margin", "entropy")


class ActivationRecorder:
    """Forward pre-hooks on every FFN output projection, recording its input (the neuron activations).

    With ``leaf=True`` the first layer's activation becomes a leaf that requires grad, so one
    ``torch.autograd.grad`` call gives gradients w.r.t. every layer's activation (later layers stay
    on the graph; detaching them would cut the paths through later MLPs).
    ``edit`` optionally replaces one layer's activation (used by integrated gradients).
    """

    def __init__(self, lm: LanguageModel, *, leaf: bool = False,
                 edit: tuple[int, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> None:
        self.lm, self.leaf, self.edit = lm, leaf, edit
        self.acts: list[torch.Tensor | None] = [None] * lm.n_layers

    def __enter__(self) -> ActivationRecorder:
        self._lock = model_lock(self.lm)  # hooks see every forward pass: no other thread's while they are on
        self._lock.acquire()
        self._handles = [layer.module.register_forward_pre_hook(self._hook(layer.index)) for layer in self.lm.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._lock.release()

    def _hook(self, index: int):
        def hook(module, args):
            h = args[0]
            if self.edit is not None and self.edit[0] == index:
                h = self.edit[1](h)
            elif self.leaf and not h.requires_grad:
                h = h.detach().requires_grad_(True)
            self.acts[index] = h
            return (h, *args[1:])

        return hook


@dataclass
class BatchAttribution:
    """Attributions of one batch at the answer span, and the labels they explain."""

    values: torch.Tensor  # [B, L, S, d_ff], zero outside the span
    span_mask: torch.Tensor  # [B, S] True where the position predicts an answer token
    predicted: torch.Tensor  # [B] index of the explained (predicted) label
    label_scores: torch.Tensor | None  # [B, C] length-normalised log-probs, when attribute() scored the labels


def _targets(answers: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer tokens right-aligned to the span (as wide as the longest), and the mask of valid span positions."""
    target, mask = pad_left(answers, 0, device)
    return target, mask.bool()


def objective_fn(kind: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 label_first_tokens: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Per-row objective whose gradient is attributed.

    ``logprob``: mean log-prob of the predicted answer's tokens. ``margin`` (predicted label minus
    the best other) and ``entropy`` use the label distribution at the first answer position
    (exact for single-token verbalizers, the first token's view otherwise).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    if kind == "logprob":
        tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return (tok * mask).sum(-1) / mask.sum(-1)
    first = mask.float().argmax(-1)  # first valid span position per row
    rows = torch.arange(logits.shape[0], device=logits.device)
    label_logp = torch.log_softmax(logp[rows, first][:, label_first_tokens], dim=-1)
    if kind == "margin":
        is_pred = torch.nn.functional.one_hot(predicted, label_logp.shape[1]).bool()
        return label_logp[rows, predicted] - label_logp.masked_fill(is_pred, float("-inf")).max(-1).values
    return -(label_logp.exp() * label_logp).sum(-1)  # entropy


def attribute(lm: LanguageModel, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], *,
              predicted: Sequence[int] | None = None, method: str = "direct_logit", objective: str = "logprob",
              ig_steps: int = 16) -> BatchAttribution:
    """Attribute each row's predicted label to every FFN neuron at the answer span.

    ``labels`` are the token ids of every label's answer. With ``predicted=None`` the labels are
    scored here and the argmax explained: for single-token labels (any method) the attribution
    pass is the scoring pass; for multi-token labels with ``direct_logit`` the prompt's KV cache
    is reused, so only the answer tokens are run again. Otherwise pass the predicted label index
    per row (see ``scoring.label_scores``).
    """
    check_choice("attribution method", method, METHODS)
    check_choice("objective", objective, OBJECTIVES)
    firsts = torch.tensor([lab[0] for lab in labels], device=lm.device)
    w_out = lm.output_weights() if method == "direct_logit" else None  # before hooks are on
    if predicted is None and any(len(lab) != 1 for lab in labels):
        if method != "direct_logit":
            raise ValueError("multi-token labels: pass the predicted label of each row")
        return _direct_logit_reusing_cache(lm, prompts, labels, w_out)
    if predicted is None:
        seqs, width = [list(p) for p in prompts], 1
    else:
        answers = [labels[p] for p in predicted]  # teacher forcing: prompt + answer[:-1]
        seqs, width = [list(p) + list(a[:-1]) for p, a in zip(prompts, answers)], max(map(len, answers))
    ids, mask = pad_left(seqs, lm.tokenizer.pad_token_id, lm.device)
    with torch.enable_grad() if method == "grad_x_act" else torch.no_grad(), \
            ActivationRecorder(lm, leaf=method == "grad_x_act") as rec:
        logits = forward(lm, ids, mask, logits_to_keep=width).logits
        scores = None
        if predicted is None:
            scores = torch.log_softmax(logits[:, -1].detach().float(), dim=-1)[:, firsts]
            predicted = scores.argmax(-1).tolist()
        pred = torch.tensor(list(predicted), device=lm.device)
        target, span = _targets([labels[p] for p in predicted], lm.device)

        def obj(out_logits: torch.Tensor) -> torch.Tensor:
            return objective_fn(objective, out_logits, target, span, firsts, pred)

        if method == "grad_x_act":
            grads = torch.autograd.grad(obj(logits).sum(), rec.acts)
            values = torch.stack([(a[:, -width:] * g[:, -width:]).detach().float() for a, g in zip(rec.acts, grads)], 1)
        elif method == "direct_logit":
            values = _direct_logit([a[:, -width:] for a in rec.acts], lm.unembedding()[target], w_out)
        else:
            acts = [a.detach() for a in rec.acts]
    if method == "integrated_gradients":
        values = torch.stack([_integrated_gradients(lm, ids, mask, width, l, acts[l], obj, ig_steps)
                              for l in range(lm.n_layers)], 1)
    values = values * span[:, None, :, None] / span.sum(-1)[:, None, None, None]
    return BatchAttribution(values, span, pred, scores)


def _direct_logit(span_acts: Sequence[torch.Tensor], unembedded: torch.Tensor, w_out: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, L, S, d_ff]``: each activation times its neuron's direct effect on the target token's logit."""
    u = unembedded.float()  # [B, S, H]
    return torch.stack([a.float() * (u @ w) for a, w in zip(span_acts, w_out)], 1)


@torch.no_grad()
def _direct_logit_reusing_cache(lm: LanguageModel, prompts, labels, w_out) -> BatchAttribution:
    """Multi-token ``direct_logit`` in one prompt pass: score the labels from its KV cache, then run
    only the predicted answer's tokens on that cache to read the activations at the later span positions."""
    ids, mask = pad_left(prompts, lm.tokenizer.pad_token_id, lm.device)
    with ActivationRecorder(lm) as rec:
        out = forward(lm, ids, mask, use_cache=True)
    last = [a[:, -1] for a in rec.acts]  # [B, d_ff] at the last prompt token
    scores = scores_after_prompt(lm, out, mask, labels)
    predicted = scores.argmax(-1).tolist()
    answers = [labels[p] for p in predicted]
    width = max(map(len, answers))
    span_acts = [a.new_zeros(len(answers), width, a.shape[-1]) for a in last]
    for l, a in enumerate(last):
        for row, ans in enumerate(answers):
            span_acts[l][row, width - len(ans)] = a[row]
    if width > 1:  # answer tokens but the last, right-padded, on the prompt's cache
        feed = torch.full((len(answers), width - 1), lm.tokenizer.pad_token_id, dtype=torch.long, device=lm.device)
        valid = torch.zeros_like(feed)
        for row, ans in enumerate(answers):
            feed[row, :len(ans) - 1] = torch.tensor(ans[:-1])
            valid[row, :len(ans) - 1] = 1
        with ActivationRecorder(lm) as rec:
            forward(lm, feed, valid, past=cache_of(out), past_mask=mask)
        for l, a in enumerate(rec.acts):
            for row, ans in enumerate(answers):
                span_acts[l][row, width - len(ans) + 1:] = a[row, :len(ans) - 1]
    target, span = _targets(answers, lm.device)
    values = _direct_logit(span_acts, lm.unembedding()[target], w_out)
    values = values * span[:, None, :, None] / span.sum(-1)[:, None, None, None]
    return BatchAttribution(values, span, torch.tensor(predicted, device=lm.device), scores)


def _integrated_gradients(lm: LanguageModel, ids, mask, width: int, layer: int, act: torch.Tensor,
                          obj: Callable[[torch.Tensor], torch.Tensor], steps: int) -> torch.Tensor:
    """IG of ``obj`` w.r.t. layer ``layer``'s activation at the span, baseline zero (midpoint rule)."""
    total = torch.zeros_like(act[:, -width:], dtype=torch.float32)
    for step in range(steps):
        alpha = (step + 0.5) / steps
        scaled = act.clone()
        scaled[:, -width:] *= alpha
        scaled.requires_grad_(True)
        with torch.enable_grad(), ActivationRecorder(lm, edit=(layer, lambda h, s=scaled: s)):
            out = forward(lm, ids, mask, logits_to_keep=width)
            (grad,) = torch.autograd.grad(obj(out.logits).sum(), scaled)
        total += grad[:, -width:].float()
    return act[:, -width:].float() * total / steps

