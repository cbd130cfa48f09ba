"""DSPy integration: NeuronAwareFewShot (static, per-query, active), NeuronFewShotProgram, LocalEngine.

Mechanics run on DSPy's DummyLM with a tiny random-weight LLaMA for probing; the ``e2e`` tests
run a real DSPy program on the real default model (SmolLM2-135M) through LocalEngine.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))  # never ~/.dspy_cache
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy  # noqa: E402
import pytest  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

from dspy_neuroshot import (AnnotationPending, LocalEngine, NeuronAwareFewShot, NeuronFewShotProgram,  # noqa: E402
                            local_lm, output_fields)
from neuroshot import NeuroshotError, SimulatedAnnotator, get_pipeline, order_planned  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Kind(dspy.Signature):
    """Say what the question asks for."""

    question: str = dspy.InputField()
    label: Literal["person", "place", "number"] = dspy.OutputField()


QUESTIONS = [
    ("who wrote hamlet", "person"), ("where is rome", "place"), ("how many legs", "number"),
    ("who is the king", "person"), ("where do owls live", "place"), ("how old is it", "number"),
    ("who sang that", "person"), ("where is the moon", "place"), ("how far is it", "number"),
    ("who won", "person"), ("where to go", "place"), ("how much is it", "number"),
]


def trainset(labeled: bool = True) -> list[dspy.Example]:
    return [dspy.Example(id=f"q{i}", question=q, **({"label": y} if labeled else {})).with_inputs("question")
            for i, (q, y) in enumerate(QUESTIONS)]


def dummy(n: int = 20, label: str = "place") -> DummyLM:
    return DummyLM([{"label": label}] * n)


def prompt_text(lm) -> str:
    return "\n".join(m["content"] for m in lm.history[-1]["messages"])


def demo_turns(lm) -> list[str]:
    """The demo questions as they appear in the last prompt (user turns before the final one)."""
    turns = [m["content"] for m in lm.history[-1]["messages"] if m["role"] == "user"][:-1]
    return [t.split("[[ ## question ## ]]\n", 1)[1].strip() for t in turns]


# ---------------------------------------------------------------------------- static, labeled


def test_static_compile_puts_the_planned_demos_in_every_predictor_and_in_the_prompt(tiny_lm, single_thread):
    student = dspy.Predict(Kind)
    tp = NeuronAwareFewShot(k=3, model=tiny_lm, progress=False)
    compiled = tp.compile(student, trainset=trainset())
    assert compiled is not student and student.demos == []
    assert compiled._compiled
    assert sorted(tp.demo_rows_) == sorted(tp.plan_.indices) and tp.demo_rows_ != tp.plan_.indices
    labels = [trainset()[i].label for i in tp.plan_.indices]  # the recommended order, from the core:
    assert tp.demo_rows_ == order_planned(tiny_lm, tp.spec_.task, [q for q, _ in QUESTIONS], tp.plan_.indices, labels)
    planned = [QUESTIONS[i][0] for i in tp.demo_rows_]
    assert [d.question for d in compiled.demos] == planned and len(planned) == 3
    # the core planner on the same probe gives the same plan (no copy of its logic)
    assert get_pipeline("recommended").make_strategy().plan(tp.probe_, 3, seed=0).indices == tp.plan_.indices
    assert "score" in tp.explain()
    lm = dummy()
    with dspy.context(lm=lm):
        out = compiled(question="where is paris")
    assert out.label == "place"
    assert demo_turns(lm) == planned  # the demos reach the prompt (DSPy #466)
    for d in compiled.demos:
        assert f"[[ ## label ## ]]\n{d.label}" in prompt_text(lm)


def test_the_planner_never_reads_the_trainset_labels(tiny_lm, single_thread):
    base = NeuronAwareFewShot(k=4, model=tiny_lm, progress=False)
    base.compile(dspy.Predict(Kind), trainset=trainset())
    shuffled = [ex.copy(label=["number", "person", "place"][i % 3]) for i, ex in enumerate(trainset())]
    other = NeuronAwareFewShot(k=4, model=tiny_lm, progress=False)
    compiled = other.compile(dspy.Predict(Kind), trainset=shuffled)
    assert other.plan_.indices == base.plan_.indices
    assert [d.label for d in compiled.demos] == [shuffled[i].label for i in other.demo_rows_]


def test_every_predictor_of_a_multi_stage_program_gets_the_demos(tiny_lm, single_thread):
    class Two(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = dspy.Predict(Kind)
            self.second = dspy.Predict(Kind)

        def forward(self, question):
            return self.second(question=self.first(question=question).label)

    compiled = NeuronAwareFewShot(k=2, model=tiny_lm, strategy="random", progress=False).compile(
        Two(), trainset=trainset())
    demos = [[d.question for d in p.demos] for _, p in compiled.named_predictors()]
    assert len(demos) == 2 and demos[0] == demos[1] and len(demos[0]) == 2


def test_static_program_saves_and_loads_its_demos_with_dspy(tiny_lm, single_thread, tmp_path):
    compiled = NeuronAwareFewShot(k=3, model=tiny_lm, progress=False).compile(dspy.Predict(Kind), trainset=trainset())
    path = tmp_path / "program.json"
    compiled.save(str(path))
    fresh = dspy.Predict(Kind)
    fresh.load(str(path))
    # DSPy loads demos back as dicts; the adapter formats them the same way
    assert [(d["question"], d["label"]) for d in fresh.demos] == [(d.question, d.label) for d in compiled.demos]
    lm = dummy()
    with dspy.context(lm=lm):
        fresh(question="who are you")
    assert demo_turns(lm) == [d.question for d in compiled.demos]


def test_strategy_and_seed_choose_the_demos(tiny_lm, single_thread):
    a = NeuronAwareFewShot(k=3, model=tiny_lm, strategy="random", seed=1, progress=False)
    b = NeuronAwareFewShot(k=3, model=tiny_lm, strategy="random", seed=1, progress=False)
    c = NeuronAwareFewShot(k=3, model=tiny_lm, strategy="random", seed=2, progress=False)
    for tp in (a, b, c):
        tp.compile(dspy.Predict(Kind), trainset=trainset())
    assert a.plan_.indices == b.plan_.indices != c.plan_.indices


# ---------------------------------------------------------------------------- per query


def test_per_query_program_passes_each_call_its_own_retrieved_demos(tiny_lm, single_thread):
    tp = NeuronAwareFewShot(k=2, model=tiny_lm, per_query=True, progress=False)
    program = tp.compile(dspy.Predict(Kind), trainset=trainset())
    assert isinstance(program, NeuronFewShotProgram) and len(program.annotated) == len(QUESTIONS)
    lm = dummy()
    seen = set()
    for q in ("who painted it", "how many cats", "where is the sea"):
        chosen = program.retrieve(question=q)
        assert len(chosen) == 2 and all(r.why() for _, r in chosen)
        with dspy.context(lm=lm):
            program(question=q)
        assert demo_turns(lm) == [ex.question for ex, _ in chosen]
        seen.add(tuple(demo_turns(lm)))
    # the per-query program's predictor keeps no static demos
    assert all(not p.demos for _, p in program.named_predictors())


def test_per_query_program_saves_and_loads_with_dspy(tiny_lm, single_thread, tmp_path):
    program = NeuronAwareFewShot(k=3, model=tiny_lm, per_query=True, mmr=0.5, progress=False).compile(
        dspy.Predict(Kind), trainset=trainset())
    before = [[ex.question for ex, _ in program.retrieve(question=q)] for q in ("who is she", "where am i")]
    path = tmp_path / "per_query.json"
    program.save(str(path))
    state = json.loads(path.read_text())
    assert len(state["annotated"]["examples"]) == len(QUESTIONS) and state["annotated"]["settings"]["k"] == 3

    loaded = NeuronFewShotProgram(dspy.Predict(Kind), model=tiny_lm)
    loaded.load(str(path))
    assert loaded.k == 3 and [ex.label for ex in loaded.annotated.examples] == [y for _, y in QUESTIONS]
    assert loaded.annotated.critical.ids.tolist() == program.annotated.critical.ids.tolist()
    after = [[ex.question for ex, _ in loaded.retrieve(question=q)] for q in ("who is she", "where am i")]
    assert after == before
    lm = dummy()
    with dspy.context(lm=lm):
        loaded(question="where am i")
    assert demo_turns(lm) == before[1]


def test_per_query_works_for_chain_of_thought_and_custom_modules(tiny_lm, single_thread):
    class Wrapped(dspy.Module):
        def __init__(self):
            super().__init__()
            self.inner = dspy.Predict(Kind)

        def forward(self, question):
            return self.inner(question=question)

    for student in (dspy.ChainOfThought(Kind), Wrapped()):
        program = NeuronAwareFewShot(k=2, model=tiny_lm, per_query=True, progress=False).compile(
            student, trainset=trainset())
        lm = DummyLM([{"reasoning": "r", "label": "number"}] * 3)
        with dspy.context(lm=lm):
            out = program(question="how tall is it")
        assert out.label == "number"
        assert demo_turns(lm) == [ex.question for ex, _ in program.retrieve(question="how tall is it")]
        assert all(not p.demos for _, p in program.named_predictors())  # per-call copies, the program untouched


# ---------------------------------------------------------------------------- active


def test_active_mode_asks_only_for_the_planned_items(tiny_lm, single_thread):
    gold = {f"q{i}": y for i, (_, y) in enumerate(QUESTIONS)}
    annotator = SimulatedAnnotator(gold)
    # the examples carry a wrong label: active mode must use the annotator's answers only
    unlabeled = [ex.copy(label="number") for ex in trainset()]
    tp = NeuronAwareFewShot(k=3, model=tiny_lm, annotator=annotator, progress=False)
    compiled = tp.compile(dspy.Predict(Kind), trainset=unlabeled)
    asked = {f"q{i}" for i in tp.plan_.indices}
    assert annotator.revealed == asked and len(asked) == 3
    assert sorted(tp.demo_rows_) == sorted(tp.plan_.indices)  # the planned items, in the recommended order
    assert [(d.question, d.label) for d in compiled.demos] == [QUESTIONS[i] for i in tp.demo_rows_]


def test_active_mode_with_a_callable_annotator_and_a_budget(tiny_lm, single_thread):
    shown = []

    def annotator(example):
        shown.append(example)
        return None if len(shown) == 1 else dict(QUESTIONS)[example.question].upper()

    tp = NeuronAwareFewShot(k=2, model=tiny_lm, per_query=True, budget=5, annotator=annotator, progress=False)
    program = tp.compile(dspy.Predict(Kind), trainset=trainset(labeled=False))
    assert len(shown) == 5 and all(set(ex.keys()) == {"question"} for ex in shown)
    assert len(program.annotated) == 4  # one skipped
    assert [ex.label for ex in program.annotated.examples] == [dict(QUESTIONS)[ex.question] for ex in shown[1:]]


def test_active_mode_through_an_annotation_file(tiny_lm, single_thread, tmp_path):
    path = tmp_path / "to_label.jsonl"
    tp = NeuronAwareFewShot(k=3, model=tiny_lm, export_path=path, progress=False)
    with pytest.raises(AnnotationPending, match="to_label.jsonl"):
        tp.compile(dspy.Predict(Kind), trainset=trainset(labeled=False))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 and all(r["label"] is None for r in rows)
    for r in rows:
        r["label"] = dict(QUESTIONS)[r["text"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    compiled = tp.compile(dspy.Predict(Kind), trainset=trainset(labeled=False))
    demos = [(d.question, d.label) for d in compiled.demos]
    assert sorted(demos) == sorted((r["text"], r["label"]) for r in rows)
    assert demos == [QUESTIONS[i] for i in tp.demo_rows_]  # in the recommended order


# ---------------------------------------------------------------------------- errors


def test_clear_errors(tiny_lm):
    with pytest.raises(NeuroshotError, match="empty"):
        NeuronAwareFewShot(model=tiny_lm).compile(dspy.Predict(Kind), trainset=[])
    with pytest.raises(NeuroshotError, match="annotator"):
        NeuronAwareFewShot(model=tiny_lm, progress=False).compile(dspy.Predict(Kind), trainset=trainset(labeled=False))
    bad = trainset()[:3] + [dspy.Example(question="why", label="reason").with_inputs("question")]
    with pytest.raises(NeuroshotError, match="unknown label 'reason'"):
        NeuronAwareFewShot(k=2, model=tiny_lm, progress=False).compile(dspy.Predict(Kind), trainset=bad)
    with pytest.raises(NeuroshotError, match="budget="):
        NeuronAwareFewShot(model=tiny_lm, per_query=True, annotator=lambda ex: "person", progress=False).compile(
            dspy.Predict(Kind), trainset=trainset(labeled=False))
    with pytest.raises(NeuroshotError, match="labels"):
        NeuronAwareFewShot(model=tiny_lm, annotator=lambda ex: "x", progress=False).compile(
            dspy.Predict("question -> answer"), trainset=trainset(labeled=False))
    with pytest.raises(NeuroshotError, match="unknown strategy"):
        NeuronAwareFewShot(strategy="nope")
    with pytest.raises(NeuroshotError, match="no annotated examples"):
        NeuronFewShotProgram(dspy.Predict(Kind), model=tiny_lm)(question="who")


# ---------------------------------------------------------------------------- engine mechanics


def test_output_fields_are_read_from_the_chat_adapter_system_message():
    class Two(dspy.Signature):
        text: str = dspy.InputField()
        reasoning: str = dspy.OutputField(desc="think (step by step)")
        label: Literal["yes", "no's", "maybe"] = dspy.OutputField()

    messages = dspy.ChatAdapter().format(Two, demos=[], inputs={"text": "hi"})
    fields = output_fields(messages[0]["content"])
    assert [(f.name, f.choices) for f in fields] == [("reasoning", None), ("label", ("yes", "no's", "maybe"))]
    assert output_fields("no fields here") == []


def test_engine_is_a_valid_dspy_engine_and_refuses_an_overlong_prompt(tiny_lm):
    lm = dspy.LM("local/tiny", engine=LocalEngine(tiny_lm, max_new_tokens=4), cache=False)
    with dspy.context(lm=lm), pytest.raises(Exception, match="context"):
        dspy.Predict(Kind)(question="who " * 200)
    state = LocalEngine("default", max_new_tokens=7, constrain=False).dump_state()
    assert LocalEngine.load_state(state).max_new_tokens == 7 and state["model"] == "default"
    with pytest.raises(NeuroshotError, match="cannot be saved"):
        LocalEngine(tiny_lm).dump_state()
    with pytest.raises(NeuroshotError, match="max_new_tokens"):
        LocalEngine(tiny_lm, max_new_tokens=0)


# ---------------------------------------------------------------------------- real model, real data


TREC = Literal["abbreviation", "description", "entity", "human", "location", "number"]


class QuestionType(dspy.Signature):
    """Classify the question by the type of its answer."""

    question: str = dspy.InputField()
    label: TREC = dspy.OutputField()


def trec(split: str, n: int) -> list[dspy.Example]:
    if not (DATA / "trec").is_dir():
        pytest.fail(f"shared data missing: {DATA / 'trec'}")
    rows = [json.loads(line) for line in (DATA / "trec" / f"{split}.jsonl").read_text().splitlines()[:n]]
    return [dspy.Example(id=r["id"], question=r["text"], label=r["label"]).with_inputs("question") for r in rows]


@pytest.fixture(scope="module")
def real():
    from neuroshot.models import resolve_model

    model = resolve_model("default")
    return model, local_lm(model, max_new_tokens=16)


@pytest.mark.e2e
def test_real_program_compiled_static_answers_with_the_demos_in_the_prompt(real):
    model, lm = real
    tp = NeuronAwareFewShot(k=3, model=model, progress=False)
    compiled = tp.compile(dspy.Predict(QuestionType), trainset=trec("pool", 12))
    with dspy.context(lm=lm):
        preds = [compiled(question=ex.question) for ex in trec("test", 1)]
    assert all(p.label in TREC.__args__ for p in preds)
    raw = lm.history[-1]["outputs"][0]
    assert raw.startswith("[[ ## label ## ]]\n") and raw.endswith("[[ ## completed ## ]]")
    user_turns = [m["content"] for m in lm.history[-1]["messages"] if m["role"] == "user"]
    assert [t.split("\n", 1)[1].strip() for t in user_turns[:-1]] == [d.question for d in compiled.demos]


@pytest.mark.e2e
def test_real_per_query_program_retrieves_per_call_and_survives_save_load(real, tmp_path):
    model, lm = real
    program = NeuronAwareFewShot(k=2, model=model, per_query=True, progress=False).compile(
        dspy.Predict(QuestionType), trainset=trec("pool", 12))
    query = trec("test", 1)[0].question
    chosen = [ex.question for ex, _ in program.retrieve(question=query)]
    with dspy.context(lm=lm):
        out = program(question=query)
    assert out.label in TREC.__args__
    user_turns = [m["content"] for m in lm.history[-1]["messages"] if m["role"] == "user"]
    assert [t.split("\n", 1)[1].strip() for t in user_turns[:-1]] == chosen
    program.save(str(tmp_path / "p.json"))
    loaded = NeuronFewShotProgram(dspy.Predict(QuestionType), model=model)
    loaded.load(str(tmp_path / "p.json"))
    assert [ex.question for ex, _ in loaded.retrieve(question=query)] == chosen  # re-probed after load


@pytest.mark.e2e
def test_real_engine_free_generation_parses_and_streams(real):
    model, _ = real
    engine = LocalEngine(model, max_new_tokens=6, constrain=False)
    lm = dspy.LM("local/smollm2", engine=engine, cache=False)
    with dspy.context(lm=lm):
        out = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert isinstance(out.answer, str) and out.answer.strip()
    from dspy.lm15 import Message, Request

    request = Request(model="local/smollm2", messages=(Message.user("Say hello."),))
    events = list(engine.stream(request))
    assert [e.type for e in (events[0], events[-1])] == ["start", "end"]
    streamed = "".join(e.delta.text for e in events if e.type == "delta")
    assert streamed and streamed == engine.complete(request).text


def test_engine_reuses_the_shared_prompt_prefix_without_changing_the_scores(tiny_lm, single_thread):
    from neuroshot.scoring import label_scores

    engine = LocalEngine(tiny_lm)
    answers = [engine._encode(c) for c in ("yes", "no", "maybe")]
    prefix = "Answer the question. " * 5
    for question in ("is it raining?", "is the sky green?", "can owls swim?"):
        ids = engine._encode(prefix + question + "\nAnswer:\n")
        reused = engine._scores_reusing_prefix(ids, answers)
        assert reused.shape == (1, 3)
        assert (reused - label_scores(tiny_lm, [ids], answers)).abs().max() < 1e-4


def test_concurrent_calls_are_scored_in_batches_with_the_scores_of_single_calls(tiny_lm, single_thread):
    from concurrent.futures import ThreadPoolExecutor

    from neuroshot import predict_proba_prompts

    engine = LocalEngine(tiny_lm, batch_size=4, batch_wait=1.0)
    sizes = []
    run = engine._batcher.run
    engine._batcher.run = lambda items: (sizes.append(len(items)), run(items))[1]
    answers = [engine._encode(c) for c in ("yes", "no", "maybe")]
    prompts = [engine._encode(f"Answer the question. Is it {w}?\nAnswer:\n") for w in
               ("wet", "dry", "hot", "cold", "big", "small", "red", "blue")]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda ids: engine._batcher.submit((ids, answers)), prompts))
    alone = [predict_proba_prompts(tiny_lm, [ids], answers)[0] for ids in prompts]
    assert max(abs(a - b).max() for a, b in zip(got, alone)) < 1e-4
    assert sum(sizes) == len(prompts) and max(sizes) > 1  # several calls shared a pass


def test_batcher_hands_a_failed_batch_error_to_every_caller(tiny_lm):
    from concurrent.futures import ThreadPoolExecutor

    engine = LocalEngine(tiny_lm, batch_size=3, batch_wait=0.5)

    def fail(items):
        raise RuntimeError(f"batch of {len(items)} failed")

    engine._batcher.run = fail
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(engine._batcher.submit, i) for i in range(3)]
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, RuntimeError) and "failed" in str(e) for e in errors)
    with pytest.raises(NeuroshotError, match="batch_size"):
        LocalEngine(tiny_lm, batch_size=0)


@pytest.mark.e2e
def test_real_threaded_evaluate_with_a_batched_engine_answers_as_the_single_engine(real):
    model, _ = real
    devset = trec("test", 6)
    answers = {}
    for batch_size, threads in ((1, 1), (3, 3)):
        lm = dspy.LM("local/smollm2", engine=LocalEngine(model, batch_size=batch_size, batch_wait=0.5), cache=False)
        with dspy.context(lm=lm):
            result = dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: pred.label == ex.label,
                                   num_threads=threads, display_progress=False)(dspy.Predict(QuestionType))
        answers[batch_size] = {ex.id: pred.label for ex, pred, _ in result.results}
    assert len(answers[3]) == len(devset) and answers[3] == answers[1]
