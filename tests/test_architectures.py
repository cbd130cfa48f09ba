"""Every supported MLP family is found by name and probed; others get a clear error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers

from neuroshot.attribution import attribute
from neuroshot.models import from_pretrained_objects

SMALL = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, max_position_embeddings=64)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, SMALL),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, SMALL),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, SMALL),
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM, {**SMALL, "pad_token_id": 0}),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, {**SMALL, "head_dim": 8}),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel,
             dict(vocab_size=32, n_embd=16, n_inner=24, n_layer=2, n_head=2, n_positions=64)),
}


def _tiny(family: str):
    config_cls, model_cls, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).float()
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token="</s>", padding_side="left")
    return from_pretrained_objects(model, tokenizer, family)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_is_probed(family):
    lm = _tiny(family)
    suffix = "mlp.c_proj" if family == "gpt2" else "mlp.down_proj"
    assert lm.n_layers == 2 and all(layer.name.endswith(suffix) for layer in lm.layers)
    assert lm.d_ff == 24
    prompts, labels = [[1, 2, 3, 4], [5, 6]], [[7], [8], [9]]
    for method in ("direct_logit", "grad_x_act"):
        att = attribute(lm, prompts, labels, method=method)
        assert att.values.shape == (2, 2, 1, 24)
        assert torch.isfinite(att.values).all() and (att.values.abs().sum((1, 2, 3)) > 0).all()
    # direct_logit by hand for the first layer: activation x (W_out column . unembedding row)
    acts = {}
    handle = lm.layers[0].module.register_forward_pre_hook(lambda m, a: acts.setdefault("a", a[0][:, -1]))
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([prompts[0]])).logits[0, -1]
    handle.remove()
    predicted = int(torch.stack([logits[7], logits[8], logits[9]]).argmax())
    att = attribute(lm, prompts[:1], labels, method="direct_logit")
    expected = acts["a"][0] * (lm.unembedding()[labels[predicted][0]] @ lm.output_weights()[0])
    torch.testing.assert_close(att.values[0, 0, -1], expected, atol=1e-5, rtol=1e-4)


def _reference_scores(lm, prompts, labels) -> torch.Tensor:
    """Each prompt + label scored alone, no cache, no padding: mean log-prob of the label's tokens."""
    rows = []
    for prompt in prompts:
        row = []
        for label in labels:
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([prompt + label])).logits[0].float()
            logp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
            row.append(logp[torch.arange(len(label)), torch.tensor(label)].mean())
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("logit_cap", [None, 1])
def test_multi_token_labels_match_scoring_each_prompt_alone(family, logit_cap, monkeypatch):
    """Block-masked continuation scoring (left-padded batch, one cache copy) equals one-by-one full prompts."""
    from neuroshot import scoring

    if logit_cap is not None:  # one continuation token per pass: every label split across passes
        monkeypatch.setattr(scoring, "_MAX_LOGIT_FLOATS", logit_cap)
    lm = _tiny(family)
    prompts = [[1, 2, 3, 4, 5, 6], [5, 6], [7, 3, 9, 2]]
    labels = [[7], [8, 9, 10], [11, 12], [13, 14, 15, 16], [17]]
    got = scoring.label_scores(lm, prompts, labels)
    torch.testing.assert_close(got, _reference_scores(lm, prompts, labels), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prompts_after_a_cached_prefix_match_full_prompts(family):
    """The static scorer's continuation of a one-row cached prefix (shared or expanded per row) equals full prompts."""
    from neuroshot.evaluate import _continuation_scores, _prefix_cache
    from neuroshot.models import shares_prefix

    lm = _tiny(family)
    assert shares_prefix(lm.model) == (family not in ("gemma3", "mistral"))  # sliding windows: expanded per row
    prefix, suffixes = [1, 2, 3, 4, 5, 6, 7], [[8, 9], [3], [4, 5, 6, 2]]
    labels = [[7], [8, 9, 10], [11, 12]]
    got = _continuation_scores(lm, _prefix_cache(lm, prefix), len(prefix), suffixes, labels)
    torch.testing.assert_close(got, _reference_scores(lm, [prefix + s for s in suffixes], labels), atol=1e-5, rtol=1e-5)
