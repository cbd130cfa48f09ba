"""An app whose LLM is served: the neurons come from a local model, the answers from another model.

The core (``Experiment(answer_lm=...)``), the LangChain selector in a chain whose LLM is another model,
the DSPy teleprompter compiling a program whose LM is another model, and the proxy benchmark's pairing
(docs/served-llms.md's blocks run in tests/test_docs_examples.py). Mechanics run on two tiny random-weight models with
different weights: the one probed and the one that answers.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))  # never ~/.dspy_cache
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dspy_neuroshot import LocalEngine, NeuronAwareFewShot  # noqa: E402
from langchain_neuroshot import NeuronAwareExampleSelector, few_shot_prompt, neuroshot_pipeline  # noqa: E402
from neuroshot import get_pipeline, probe  # noqa: E402
from neuroshot.embeddings import with_embeddings  # noqa: E402
from neuroshot.evaluate import predict_proba_per_query  # noqa: E402

from conftest import TINY_LLAMA, TINY_TEXTS, build_char_tokenizer  # noqa: E402
from test_dspy import Kind, demo_turns, trainset  # noqa: E402
from test_evaluate import POOL_TEXTS, TEST_TEXTS, _records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(top_k=8, critical_fraction=0.2)  # small signatures for the tiny model
LABELS = ["A", "B", "C", "A", "B", "C", "A", "B"]


@pytest.fixture(scope="module")
def served():
    """Another model object with other weights (and room for DSPy's chat prompts): what a served LLM is to the
    local one that is probed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from neuroshot.models import from_pretrained_objects

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "max_position_embeddings": 2048})).float()
    return from_pretrained_objects(model, build_char_tokenizer(), "tiny-served")


@contextmanager
def forward_calls(*lms):
    """Counts, per model, the forward passes run inside the block (every path goes through the embeddings)."""
    counts = [0] * len(lms)
    hooks = [lm.model.get_input_embeddings().register_forward_hook(
        lambda *_, i=i: counts.__setitem__(i, counts[i] + 1)) for i, lm in enumerate(lms)]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()


# ------------------------------------------------------------------------------ core


def test_experiment_plans_and_retrieves_on_lm_and_answers_with_answer_lm(tiny_lm, tiny_task, served, single_thread):
    from neuroshot.experiment import Experiment

    pool, test = _records(tiny_task, POOL_TEXTS, "p"), _records(tiny_task, TEST_TEXTS, "t")
    kw = dict(regime="per-query", k=2, probe_kwargs={"critical_fraction": 0.1}, progress=False)
    own = Experiment(tiny_lm, tiny_task, pool, test, **kw)
    split = Experiment(tiny_lm, tiny_task, pool, test, answer_lm=served, **kw)
    mine, theirs = own.run_one("neuron_coverage", 4, seed=1), split.run_one("neuron_coverage", 4, seed=1)
    assert theirs.ids == mine.ids  # the plan reads the probed model's neurons only
    labels = {r.id: r.label for r in pool}
    chosen = [[r.id for r in pool].index(i) for i in theirs.ids]
    demos = split.demonstrations(chosen, [labels[i] for i in theirs.ids], seed=1)
    assert demos == own.demonstrations(chosen, [labels[i] for i in theirs.ids], seed=1)  # so does retrieval
    texts = [r.text for r in test]
    by_served, by_probed = (predict_proba_per_query(lm, tiny_task, texts, demos) for lm in (served, tiny_lm))
    assert not np.allclose(by_served, by_probed)  # the two models answer differently...
    names = tiny_task.labels
    assert theirs.predicted == [names[i] for i in by_served.argmax(1)]  # ...and the answers are the served one's
    assert mine.predicted == [names[i] for i in by_probed.argmax(1)]
    assert split.pool_probe.texts == own.pool_probe.texts and split.answer_lm is served and own.answer_lm is tiny_lm


# ------------------------------------------------------------------------------ LangChain


def test_langchain_selector_probes_its_model_while_the_chain_llm_is_another(tiny_lm, tiny_task, served,
                                                                            single_thread):
    examples = [{"text": t, "label": label} for t, label in zip(TINY_TEXTS[:8], LABELS)]
    selector = NeuronAwareExampleSelector.from_examples(examples, model=tiny_lm, task=tiny_task, k=3, **SETTINGS)
    llm = neuroshot_pipeline(served, max_new_tokens=3)
    chain = few_shot_prompt(tiny_task, selector) | llm
    assert llm.pipeline.model is served.model and selector.model is tiny_lm
    retriever = get_pipeline("recommended").make_retriever().fit(
        with_embeddings(probe(tiny_lm, tiny_task, TINY_TEXTS[:8], progress=False, **SETTINGS)), LABELS)
    for text in TINY_TEXTS[8:10]:
        query = {"text": text}
        expected = retriever.retrieve(with_embeddings(probe(tiny_lm, tiny_task, [text], progress=False, **SETTINGS)),
                                      3)[0]
        with forward_calls(tiny_lm, served) as calls:
            picked = selector.select_examples(query)
            probed, answered = calls[0], calls[1]
            out = chain.invoke(query)
        assert picked == [examples[r.index] for r in reversed(expected)]  # the neuron model's probe chose them
        assert probed > 0 and answered == 0  # selecting ran the neuron model only
        assert calls[1] > 0  # the chain's LLM answered
        assert out == llm.invoke(few_shot_prompt(tiny_task, selector).format(**query))


# ------------------------------------------------------------------------------ DSPy


def test_dspy_teleprompter_probes_its_model_while_the_program_lm_is_another(tiny_lm, served, single_thread):
    with forward_calls(tiny_lm, served) as calls:
        program = NeuronAwareFewShot(k=2, model=tiny_lm, per_query=True, progress=False).compile(
            dspy.Predict(Kind), trainset=trainset())
    assert calls[0] > 0 and calls[1] == 0  # compiling probed the neuron model only
    lm = dspy.LM("local/served", engine=LocalEngine(served, max_new_tokens=4), cache=False)
    for question in ("who painted it", "where is the sea"):
        with forward_calls(tiny_lm, served) as calls:
            chosen = program.retrieve(question=question)
            probed, answered = calls[0], calls[1]
            with dspy.context(lm=lm):
                prediction = program(question=question)
        assert probed > 0 and answered == 0  # retrieval ran the neuron model only
        assert calls[1] > 0  # the program's LM answered
        assert demo_turns(lm) == [ex.question for ex, _ in chosen]  # with the demos the neurons chose
        assert prediction.label in ("person", "place", "number")


# ------------------------------------------------------------------------------ the benchmark's pairing


def _bits(right) -> str:
    return "".join("1" if c else "0" for c in right)


def test_proxy_benchmark_pairs_each_cell_with_the_answering_models_own(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import proxy_model

    rng = np.random.default_rng(0)
    common = dict(regime="per-query", k=4, pool_size=600, test_size=300, validation=0, command="cmd")
    own, proxy = [], []
    for name, edge in (("trec", 0.3), ("sst2", 0.0)):
        truth = rng.random(300) < 0.5
        for budget in (18, 50):
            plan = [f"{name}-{budget}-{i}" for i in range(budget)]
            for seed in (0, 1, 2):
                for model, pipeline, right in (("gemma", "recommended", truth), ("gemma", "random+knn", truth),
                                               ("default", "recommended", ~truth)):
                    own.append(dict(common, model=model, set=name, pipeline=pipeline, budget=budget, seed=seed,
                                    accuracy=float(right.mean()), correct=_bits(right), ids=plan))
                better = (truth | (rng.random(300) < edge))[:300 if name == "trec" else 100]  # sst2: the first 100
                proxy.append(dict(common, model="gemma", neuron_model="default", set=name, pipeline="recommended",
                                  budget=budget, seed=seed, accuracy=float(better.mean()), correct=_bits(better),
                                  ids=plan if name == "trec" else plan[::-1],
                                  test_items=None if name == "trec" else 100))
        # another test sample of the same set: never paired
        own.append(dict(common, model="gemma", set=name, pipeline="votek+knn", budget=18, seed=0, test_size=150,
                        accuracy=0.0, correct="0" * 150, ids=[]))
    out = tmp_path / "proxy"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in proxy))
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nkept as it is\n")
    args = proxy_model.parse_args(["--out", str(out), "--markdown", str(md), "--own", str(tmp_path / "own.jsonl"),
                                   "--summarize"])
    text = proxy_model.summarize(args)
    page = md.read_text()
    assert page.startswith("# Results\n\nkept as it is\n") and "<!-- section: proxy-model -->" in page
    assert text in page and "votek+knn" not in text  # the 150-item sample is not paired
    assert "## `recommended` on `default`'s neurons, answered by `gemma` (per-query)" in text
    assert "test items per set: sst2 100, trec 300" in text  # sst2 paired on the first 100 items only
    assert "| − `recommended` | − `random+knn` |" in text  # own pipeline first, then random+knn
    (trec,) = [line for line in text.splitlines() if line.startswith("| trec | **+")]
    assert trec.count("**+") == 2  # significantly above both of the answering model's own arms
    assert "| sst2 | +0.0 [+0.0, +0.0] | +0.0 [+0.0, +0.0] |" in text  # identical answers: a tie at 0
    assert re.search(r"\| trec \| 18 \| 0\.\d{3} \| 0\.\d{3} \| 0\.\d{3} \| 0\.\d{3} \|", text)
    assert "equal `default`'s own `recommended` plan in head_to_head.py in 6 of 12 cells" in text


# ------------------------------------------------------------------------------ the page, as written
