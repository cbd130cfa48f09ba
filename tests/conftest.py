"""Shared fixtures: a tiny random-weight LLaMA and a character-level tokenizer (no downloads)."""

from __future__ import annotations

import os
import string
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REQUIRE_SHARED = "NEUROSHOT_REQUIRE_SHARED_DATA"


def require_shared(path: Path = SHARED_DATA) -> Path:
    """``path`` (shared data beside the repository), or stop the test: a skip on a developer's machine,
    a failure where ``$NEUROSHOT_REQUIRE_SHARED_DATA`` is set (``.ci/run`` sets it), so CI never passes
    by skipping the tests on real data."""
    return require_present(path, REQUIRE_SHARED, f"shared data not found at {path}")


def require_present(path: Path, env: str, message: str) -> Path:
    """``path``, or stop the test with ``message``: a skip, or a failure where ``$env`` is set (CI)."""
    if not path.exists():
        if os.environ.get(env):
            pytest.fail(f"{message} (${env} is set)", pytrace=False)
        pytest.skip(message)
    return path

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # letters, digits, punctuation, " ", "\n"
TINY_LLAMA = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)
TINY_TEXTS = [
    "the cat sat on the mat", "stocks fell sharply today", "great movie, loved it", "rain again",
    "who wrote this book?", "the team won the final match 3-1", "terrible service", "ok",
    "how far is the moon from earth", "new phone released with a bigger screen", "meh", "what a day!",
]


def build_char_tokenizer():
    """A character-level fast tokenizer: every character is one token, ``<s>`` is prepended, ``decode`` fuses."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def build_tiny_llama(seed: int = 0):
    """A 3-layer LLaMA (hidden 32, 64 neurons per layer) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).float()


def build_tiny_lm(seed: int = 0):
    from neuroshot.models import from_pretrained_objects

    return from_pretrained_objects(build_tiny_llama(seed), build_char_tokenizer(), "tiny-llama")


@pytest.fixture(scope="session")
def tiny_lm():
    """Session-wide tiny LLaMA wrapped as a ``LanguageModel``; do not modify it (build your own to wrap/patch)."""
    return build_tiny_lm()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny LLaMA and its tokenizer saved as a model folder: ``load_model(str(folder))`` and
    ``--model FOLDER`` load it (for CLI runs in-process)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One real Label Studio server for the whole run (label_studio_server.py), shared by every test that
    needs one: a skip without it on a developer's machine, a failure under ``$NEUROSHOT_REQUIRE_LABEL_STUDIO``."""
    from label_studio_server import start, stop

    proc, srv = start(tmp_path_factory.mktemp("label-studio") / "data")
    yield srv
    stop(proc)


@pytest.fixture
def single_thread():
    """Run the test with one torch thread: on tiny models, thread start-up and contention dominate."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_task():
    """Three single-token labels (one character each, no answer prefix)."""
    from neuroshot.task import Task

    return Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")


@pytest.fixture
def tiny_task_multi():
    """Three multi-token labels of different lengths (" yes" = 4 tokens, " no" = 3, " maybe" = 6)."""
    from neuroshot.task import Task

    return Task(labels=("yes", "no", "maybe"), instruction="Answer {labels}.")


@pytest.fixture
def tiny_texts():
    return list(TINY_TEXTS)
