"""The LangChain integration on real langchain-core objects: selector, prompts, local chain, planning helper.

Mechanics run on the tiny random LLaMA (fast); formatting, async paths, incremental add and the local
chain also run on the real default model (``e2e``).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from langchain_core.example_selectors import BaseExampleSelector
from langchain_core.exceptions import OutputParserException
from langchain_core.prompts import (
    ChatPromptTemplate,
    FewShotChatMessagePromptTemplate,
    FewShotPromptTemplate,
    PromptTemplate,
)
from pydantic import ValidationError

import langchain_neuroshot.selector as selector_module
from langchain_neuroshot import (
    LabelOutputParser,
    NeuronAwareExampleSelector,
    few_shot_prompt,
    neuroshot_pipeline,
    plan_annotations,
    resolve_model,
)
from neuroshot import NeuronRetriever, NeuroshotError, Task, get_pipeline, order_planned, probe
from neuroshot.task import Demonstration
from tests.conftest import TINY_TEXTS

SETTINGS = dict(top_k=8, critical_fraction=0.2)  # small signatures for the tiny model
TINY_LABELS = ["A", "B", "C", "A", "B", "C", "A", "B"]


def tiny_examples(n: int = 8) -> list[dict[str, str]]:
    return [{"text": t, "label": lab} for t, lab in zip(TINY_TEXTS[:n], TINY_LABELS[:n])]


@pytest.fixture
def tiny_selector(tiny_lm, tiny_task):
    return NeuronAwareExampleSelector.from_examples(tiny_examples(), model=tiny_lm, task=tiny_task, k=3, mmr=0.5,
                                                    retriever="neuron", **SETTINGS)


@pytest.fixture
def probe_spy(monkeypatch):
    """Records the texts of every probe the selector module runs."""
    calls: list[list[str]] = []

    def spy(lm, task, texts, **kwargs):
        calls.append(list(texts))
        return probe(lm, task, texts, **kwargs)

    monkeypatch.setattr(selector_module, "probe", spy)
    return calls


# --------------------------------------------------------------------------- mechanics (tiny model)


def test_per_query_selection_is_the_core_neuron_retriever(tiny_lm, tiny_task, tiny_selector):
    texts = [e["text"] for e in tiny_examples()]
    annotated = probe(tiny_lm, tiny_task, texts, progress=False, **SETTINGS)
    retriever = NeuronRetriever(mmr=0.5).fit(annotated, TINY_LABELS)
    for query in TINY_TEXTS[8:]:
        chosen = retriever.retrieve(probe(tiny_lm, tiny_task, [query], progress=False, **SETTINGS), 3)[0]
        expected = [tiny_examples()[r.index] for r in reversed(chosen)]  # most relevant last
        assert tiny_selector.select_examples({"text": query}) == expected
        explained = tiny_selector.explain({"text": query})
        assert [e.index for e in explained] == [r.index for r in reversed(chosen)]
        assert [e.rank for e in explained] == [3, 2, 1]
        assert [e.similarity for e in explained] == pytest.approx([r.similarity for r in reversed(chosen)])
        assert [e.score for e in explained] == pytest.approx([r.score for r in reversed(chosen)])
        assert [e.neurons for e in explained] == [r.neurons for r in reversed(chosen)]


def test_default_selector_uses_the_recommended_pipelines_retriever(tiny_lm, tiny_task):
    from neuroshot.embeddings import with_embeddings

    selector = NeuronAwareExampleSelector.from_examples(tiny_examples(), model=tiny_lm, task=tiny_task, k=3,
                                                        **SETTINGS)
    recommended = get_pipeline("recommended")
    texts = [e["text"] for e in tiny_examples()]
    annotated = with_embeddings(probe(tiny_lm, tiny_task, texts, progress=False, **SETTINGS))
    retriever = recommended.make_retriever().fit(annotated, TINY_LABELS)
    assert type(selector._retriever) is type(retriever) and selector._retriever.name == recommended.retriever
    for query in TINY_TEXTS[8:10]:
        chosen = retriever.retrieve(with_embeddings(probe(tiny_lm, tiny_task, [query], progress=False, **SETTINGS)), 3)[0]
        assert selector.select_examples({"text": query}) == [tiny_examples()[r.index] for r in reversed(chosen)]
    with pytest.raises(NeuroshotError, match="unknown pipeline"):
        NeuronAwareExampleSelector.from_examples(tiny_examples(), model=tiny_lm, task=tiny_task, pipeline="nope")


def test_explain_gives_scores_and_shared_neurons(tiny_lm, tiny_task):
    selector = NeuronAwareExampleSelector.from_examples(tiny_examples(), model=tiny_lm, task=tiny_task, k=3, mmr=1.0,
                                                        **SETTINGS)
    explained = selector.explain({"text": tiny_examples()[5]["text"]})
    best = explained[-1]
    assert best.index == 5 and best.similarity == pytest.approx(1.0)  # an example is most like itself
    assert best.neurons and all(value > 0 for _, _, value in best.neurons)  # its own neurons, squared
    assert "similarity 1.000" in best.why() and "shared neurons L" in best.why()
    assert [e.similarity for e in explained] == sorted(e.similarity for e in explained)


def test_static_mode_returns_the_plan_for_every_query_without_a_model_call(tiny_lm, tiny_task, probe_spy):
    selector = NeuronAwareExampleSelector.from_examples(tiny_examples(), model=tiny_lm, task=tiny_task, k=4,
                                                        mode="static", seed=0, **SETTINGS)
    assert len(probe_spy) == 1  # the examples, once
    plan = get_pipeline("recommended").make_strategy().plan(selector.probe_result, 4, seed=0)
    examples = tiny_examples()
    order = order_planned(tiny_lm, tiny_task, [e["text"] for e in examples], plan.indices,
                          [examples[i]["label"] for i in plan.indices], seed=0)  # the recommended order
    assert sorted(order) == sorted(plan.indices) and order != plan.indices  # (here the order changes)
    first = selector.select_examples({"text": "anything"})
    assert first == [examples[i] for i in order]
    assert selector.select_examples({"text": "something else entirely"}) == first
    assert len(probe_spy) == 1  # static selection probes no query
    explained = selector.explain({"text": "x"})
    score = {p.index: p.score for p in plan.picks}
    assert [e.score for e in explained] == pytest.approx([score[i] for i in order])
    assert all(e.similarity is None and e.neurons for e in explained)
    as_planned = NeuronAwareExampleSelector.from_examples(examples, model=tiny_lm, task=tiny_task, k=4, mode="static",
                                                          pipeline="neuron_coverage+neuron", seed=0, **SETTINGS)
    planned = get_pipeline("neuron_coverage+neuron").make_strategy().plan(as_planned.probe_result, 4, seed=0)
    assert as_planned.select_examples({"text": "x"}) == [examples[i] for i in planned.indices]  # order "plan"


def test_add_example_probes_only_the_new_example(tiny_lm, tiny_task, probe_spy):
    examples = tiny_examples(8)
    selector = NeuronAwareExampleSelector.from_examples(examples[:6], model=tiny_lm, task=tiny_task, k=3,
                                                        **SETTINGS)
    assert probe_spy == [[e["text"] for e in examples[:6]]]
    for example in examples[6:]:
        selector.add_example(example)
    assert probe_spy[1:] == [[examples[6]["text"]], [examples[7]["text"]]]  # incremental, no full re-probe
    fresh = NeuronAwareExampleSelector.from_examples(examples, model=tiny_lm, task=tiny_task, k=3, **SETTINGS)
    np.testing.assert_array_equal(selector.probe_result.signatures.neurons, fresh.probe_result.signatures.neurons)
    np.testing.assert_array_equal(selector.probe_result.critical.ids, fresh.probe_result.critical.ids)
    assert selector.examples == fresh.examples
    for query in TINY_TEXTS[8:]:
        assert selector.select_examples({"text": query}) == fresh.select_examples({"text": query})


def test_selectors_never_see_each_others_examples(tiny_lm, tiny_task):
    mine, theirs = tiny_examples(8)[:4], tiny_examples(8)[4:]
    a = NeuronAwareExampleSelector.from_examples(mine, model=tiny_lm, task=tiny_task, k=10, **SETTINGS)
    b = NeuronAwareExampleSelector.from_examples(theirs, model=tiny_lm, task=tiny_task, k=10, **SETTINGS)
    a.add_example({"text": "a brand new example", "label": "C"})
    mine.append({"text": "appended to the caller's list later", "label": "A"})
    for query in TINY_TEXTS[8:]:
        with pytest.warns(UserWarning, match="annotated items: each prompt gets"):  # k=10 asks for all of them
            got_a = a.select_examples({"text": query})
            got_b = b.select_examples({"text": query})
        assert sorted(e["text"] for e in got_a) == sorted([e["text"] for e in mine[:4]] + ["a brand new example"])
        assert sorted(e["text"] for e in got_b) == sorted(e["text"] for e in theirs)
    got_a[0]["label"] = "changed by the caller"
    assert all(e["label"] in tiny_task.labels for e in a.examples)  # returned dicts are copies
    assert len(b.examples) == 4 and len(b.probe_result) == 4


def test_returned_examples_can_be_filtered_to_example_keys(tiny_lm, tiny_task):
    examples = [{**e, "id": str(i)} for i, e in enumerate(tiny_examples())]
    selector = NeuronAwareExampleSelector.from_examples(examples, model=tiny_lm, task=tiny_task, k=2,
                                                        input_keys=["text"], example_keys=["text", "label"],
                                                        **SETTINGS)
    assert all(set(e) == {"text", "label"} for e in selector.select_examples({"text": "a query", "other": 1}))


@pytest.mark.parametrize("change, match", [
    (dict(k=0), "greater than or equal to 1"),
    (dict(examples=[]), "at least 1 item"),
    (dict(examples=[{"text": "no label here"}]), "missing key.*'label'"),
    (dict(input_keys=["question"]), "missing key.*'question'"),
    (dict(examples=[{"text": "x", "label": "Z"}]), "'Z' is not one of the task's labels"),
    (dict(input_keys=["label"]), "cannot be an input key"),
    (dict(mmr=1.5), "less than or equal to 1"),
    (dict(mode="dynamic"), "'per_query' or 'static'"),
    (dict(vectorstore="nope"), "Extra inputs are not permitted"),
])
def test_bad_config_is_a_pydantic_error(tiny_lm, tiny_task, change, match):
    config = dict(examples=tiny_examples(), model=tiny_lm, task=tiny_task, **SETTINGS) | change
    with pytest.raises(ValidationError, match=match):
        NeuronAwareExampleSelector(**config)


def test_bad_input_at_run_time_is_a_clear_error(tiny_selector):
    with pytest.raises(NeuroshotError, match="lack the selector's input key.*'text'"):
        tiny_selector.select_examples({"question": "where is the text?"})
    with pytest.raises(NeuroshotError, match="'Z' is not one of the task's labels"):
        tiny_selector.add_example({"text": "new", "label": "Z"})
    with pytest.raises(NeuroshotError, match="missing key.*'label'"):
        tiny_selector.add_example({"text": "new"})
    with pytest.raises(NeuroshotError, match="unknown strategy 'nope'"):
        NeuronAwareExampleSelector(examples=tiny_examples(), model=tiny_selector.model, task=tiny_selector.task,
                                   mode="static", strategy="nope", **SETTINGS)
    with pytest.raises(NeuroshotError, match="LanguageModel or a load_model spec"):
        NeuronAwareExampleSelector(examples=tiny_examples(), model=42, task=tiny_selector.task)
    assert len(tiny_selector.examples) == 8  # nothing half-added


@pytest.mark.asyncio
async def test_async_paths_match_the_sync_ones(tiny_lm, tiny_task):
    def build():
        return NeuronAwareExampleSelector.from_examples(tiny_examples(6), model=tiny_lm, task=tiny_task, k=3,
                                                        query_cache_size=0, **SETTINGS)

    sync, concurrent = build(), build()
    sync.add_example(tiny_examples(8)[6])
    assert await concurrent.aadd_example(tiny_examples(8)[6]) == 6
    queries = [{"text": t} for t in TINY_TEXTS[7:]]
    got = await asyncio.gather(*(concurrent.aselect_examples(q) for q in queries))
    assert got == [sync.select_examples(q) for q in queries]


def test_few_shot_prompt_formats_exactly_as_the_task(tiny_selector, tiny_task):
    prompt = few_shot_prompt(tiny_task, tiny_selector)
    query = "where is the {brace} test?"
    demos = [Demonstration(e["text"], e["label"]) for e in tiny_selector.select_examples({"text": query})]
    assert prompt.format(text=query) == tiny_task.prompt(query, demos)
    with pytest.raises(NeuroshotError, match="verbalizers"):
        few_shot_prompt(Task(labels=("A", "B"), verbalizers={"A": "yes"}), tiny_selector)


def test_label_parser():
    parser = LabelOutputParser.from_task(Task(labels=("human", "number", "num")))
    assert parser.parse("  Human\nQuestion: x") == "human"
    assert parser.parse("number 5") == "number"  # the longest matching answer wins over "num"
    assert parser.parse("num.") == "num"
    with pytest.raises(OutputParserException):
        parser.parse("humanity")
    assert LabelOutputParser.from_task(Task(labels=("a", "b")), fallback="?").parse("zzz") == "?"


def test_plan_annotations_is_the_core_plan(tiny_lm, tiny_task):
    pool = [{"question": t, "source": "web"} for t in TINY_TEXTS]
    items = plan_annotations(pool, model=tiny_lm, task=tiny_task, budget=4, seed=1, input_keys=["question"],
                             labeled=[0, 1], progress=False, **SETTINGS)
    result = probe(tiny_lm, tiny_task, TINY_TEXTS, progress=False, **SETTINGS)
    plan = get_pipeline("recommended").make_strategy().plan(result, 4, labeled=[0, 1], seed=1)
    assert [it["index"] for it in items] == plan.indices and not {0, 1} & {it["index"] for it in items}
    assert [it["rank"] for it in items] == [1, 2, 3, 4]
    assert all(it["example"] == pool[it["index"]] and it["text"] == TINY_TEXTS[it["index"]] for it in items)
    assert all(it["why"] == p.why() for it, p in zip(items, plan.picks))
    strings = plan_annotations(TINY_TEXTS, model=tiny_lm, task=tiny_task, budget=2, strategy="random", progress=False)
    assert all(it["example"] == {"text": it["text"]} for it in strings)
    with pytest.raises(NeuroshotError, match="larger than"):
        plan_annotations(TINY_TEXTS[:3], model=tiny_lm, task=tiny_task, budget=5, progress=False)
    with pytest.raises(NeuroshotError, match="empty"):
        plan_annotations([], model=tiny_lm, task=tiny_task, budget=1)


# --------------------------------------------------------------------------- the real default model

TREC_TASK = Task(labels=("abbreviation", "description", "entity", "human", "location", "number"),
                 instruction="Classify the question by the type of its answer: {labels}.",
                 input_template="Question: {text}\nType:", demo_template="Question: {text}\nType: {label}")
QUESTIONS = [  # written for these tests
    ("What does the abbreviation UN stand for?", "abbreviation"),
    ("What is the short form of kilogram?", "abbreviation"),
    ("Why is the sky blue?", "description"), ("How does a refrigerator keep food cold?", "description"),
    ("What musical instrument has 88 keys?", "entity"), ("Which animal is the largest mammal?", "entity"),
    ("Who painted the ceiling of the Sistine Chapel?", "human"), ("Who was the first woman in space?", "human"),
    ("Where is the tallest mountain in Africa?", "location"), ("What country is Lisbon the capital of?", "location"),
    ("How many legs does a spider have?", "number"), ("In what year did the Berlin Wall fall?", "number"),
]
E2E_EXAMPLES = [{"question": q, "label": lab} for q, lab in QUESTIONS]


@pytest.fixture(scope="module")
def real_selector():
    return NeuronAwareExampleSelector.from_examples(E2E_EXAMPLES, model="default", task=TREC_TASK, k=4)


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_e2e_few_shot_prompt_template_sync_and_async(real_selector):
    prompt = FewShotPromptTemplate(
        example_selector=real_selector, example_prompt=PromptTemplate.from_template("Q: {question}\nA: {label}"),
        prefix="Answer types: " + ", ".join(TREC_TASK.labels) + ".", suffix="Q: {question}\nA:",
        input_variables=["question"])
    query = "Who wrote the novel Moby Dick?"
    chosen = real_selector.select_examples({"question": query})
    assert len(chosen) == 4 and all(e in E2E_EXAMPLES for e in chosen)
    expected = "\n\n".join(["Answer types: " + ", ".join(TREC_TASK.labels) + ".",
                            *(f"Q: {e['question']}\nA: {e['label']}" for e in chosen), f"Q: {query}\nA:"])
    assert prompt.format(question=query) == expected
    assert await prompt.aformat(question=query) == expected
    mirrored = few_shot_prompt(TREC_TASK, real_selector, text_key="question")
    demos = [Demonstration(e["question"], e["label"]) for e in chosen]
    assert await mirrored.aformat(question=query) == TREC_TASK.prompt(query, demos)


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_e2e_few_shot_chat_message_prompt_template(real_selector):
    chat = FewShotChatMessagePromptTemplate(
        example_selector=real_selector, input_variables=["question"],
        example_prompt=ChatPromptTemplate.from_messages([("human", "{question}"), ("ai", "{label}")]))
    query = {"question": "How far is the Moon from the Earth?"}
    chosen = real_selector.select_examples(query)
    for messages in (chat.format_messages(**query), await chat.aformat_messages(**query)):
        assert [m.type for m in messages] == ["human", "ai"] * 4
        assert [m.content for m in messages] == [v for e in chosen for v in (e["question"], e["label"])]


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_e2e_async_paths_do_not_block_the_event_loop():
    selector = NeuronAwareExampleSelector.from_examples(E2E_EXAMPLES[::2], model="default", task=TREC_TASK, k=3)
    ticks: list[float] = []
    done = asyncio.Event()

    async def heartbeat():
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.002)

    queries = [{"question": q} for q in ("Who invented the telephone?", "What is the capital of Peru?",
                                         "What does NASA stand for?")]
    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.01)
    start, n0 = time.perf_counter(), len(ticks)
    selected = await asyncio.gather(*(selector.aselect_examples(q) for q in queries))
    index = await selector.aadd_example({"question": "What is the boiling point of water?", "label": "number"})
    elapsed, during = time.perf_counter() - start, len(ticks) - n0
    done.set()
    await beat
    assert index == 6 and len(selector.examples) == 7
    assert all(len(chosen) == 3 and all(e in E2E_EXAMPLES[::2] for e in chosen) for chosen in selected)
    # A blocking implementation lets the heartbeat run about once per call (4 calls); a real async path
    # keeps it ticking during the four model calls.
    assert elapsed > 0.05 and during >= 20, (elapsed, during)


@pytest.mark.e2e
def test_e2e_incremental_add_on_the_real_model(probe_spy):
    selector = NeuronAwareExampleSelector.from_examples(E2E_EXAMPLES[1::2], model="default", task=TREC_TASK, k=1,
                                                        mmr=1.0)
    new = {"question": "What is the population of Tokyo?", "label": "number"}
    assert selector.add_example(new) == 6
    assert probe_spy[-1] == [new["question"]]
    (best,) = selector.explain({"question": new["question"]})
    assert best.index == 6 and best.example == new and best.similarity == pytest.approx(1.0)


@pytest.mark.e2e
def test_e2e_local_chain_reuses_the_selector_model(real_selector):
    llm = neuroshot_pipeline(real_selector, max_new_tokens=4)
    assert llm.pipeline.model is real_selector.model.model  # one copy in memory
    assert llm.pipeline.model is resolve_model("default").model  # model="default" is loaded once per process
    query = {"question": "Who discovered penicillin?"}
    before = real_selector.explain(query)
    chain = few_shot_prompt(TREC_TASK, real_selector, text_key="question") | llm | LabelOutputParser.from_task(
        TREC_TASK)
    assert chain.invoke(query) == "human"
    queries = [{"question": "Where is Mount Fuji?"}, {"question": "How many days are in a leap year?"}]
    batch = chain.batch(queries)  # the batched path answers as one call per query does
    assert batch == [chain.invoke(q) for q in queries] and set(batch) <= set(TREC_TASK.labels)
    real_selector._queries.clear()  # re-probe the query after the chain ran: same neurons, same picks
    after = real_selector.explain(query)
    assert [(e.index, e.neurons) for e in after] == [(e.index, e.neurons) for e in before]
    assert isinstance(real_selector, BaseExampleSelector)
