"""Devices, silent cases and security: a wrong device, an empty text or a k beyond the annotated set
says so; nothing read from a file is unpickled or executed; ids never become paths outside their
folder; environment values never reach output."""

from __future__ import annotations

import ast
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Literal

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))  # never ~/.dspy_cache

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import TINY_TEXTS  # noqa: E402
from neuroshot import NeuroshotError, Task, load_model, probe  # noqa: E402
from neuroshot.models import available_devices, check_device, default_dtype  # noqa: E402
from neuroshot.retrieval import RETRIEVERS, get_retriever  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _kind():
    """A two-label DSPy signature (built on first use: importing DSPy takes seconds)."""
    import dspy

    class Kind(dspy.Signature):
        """Say what the question asks for."""

        question: str = dspy.InputField()
        label: Literal["person", "place"] = dspy.OutputField()

    return Kind
SETTINGS = dict(top_k=8, critical_fraction=0.2, progress=False)


# --------------------------------------------------------------------------- devices

@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error path needs a torch without a GPU")
@pytest.mark.parametrize("device, why", [
    ("cuda", "is not available: "), ("cuda:7", "is not available: "), ("gpu", "not a device name torch knows"),
    ("tpu", "not a device name torch knows"), ("mps", "is not available: "), ("meta", "runs models on cpu, cuda"),
    ("", "not a device name"),
])
def test_a_device_this_machine_lacks_is_one_clear_error_naming_the_available_ones(device, why):
    with pytest.raises(NeuroshotError) as info:
        load_model("default", device=device)  # fails before anything is loaded
    message = str(info.value)
    assert why in message and message.endswith("available: " + ", ".join(available_devices()))
    assert "cpu" in message and "\n" not in message
    if device == "cuda" and torch.version.cuda is None:
        assert f"this torch has no CUDA (torch {torch.__version__})" in message
    if device == "gpu":
        assert "'cuda'" in message  # says what to write instead


def test_check_device_accepts_the_cpu():
    assert check_device("cpu") == torch.device("cpu") and check_device(torch.device("cpu")).type == "cpu"
    assert available_devices()[0] == "cpu"


@pytest.mark.parametrize("device_type, bf16, expected", [
    ("cpu", False, torch.float32), ("cpu", True, torch.float32), ("cuda", True, torch.bfloat16),
    ("cuda", False, torch.float16), ("mps", False, torch.float16), ("xpu", False, torch.float32),
])
def test_default_dtype_is_sensible_per_device(device_type, bf16, expected):
    assert default_dtype(device_type, bf16_supported=bf16) == expected


def test_load_model_defaults_to_float32_on_cpu_and_keeps_an_explicit_dtype(tiny_model_dir):
    plain = load_model(str(tiny_model_dir))
    half = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    assert plain.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert half.fingerprint != plain.fingerprint  # signatures of another precision are cached apart
    assert load_model(str(tiny_model_dir), dtype=torch.float32).fingerprint == plain.fingerprint


# --------------------------------------------------------------------------- silent cases

def test_probing_an_empty_text_names_the_items(tiny_lm, tiny_task):
    texts = ["fine", "", "also fine", " \n\t", "ok"]
    with pytest.raises(NeuroshotError, match=r"item\(s\) 1, 3 .*meaningless signature"):
        probe(tiny_lm, tiny_task, texts, **SETTINGS)
    from neuroshot.probing import probe_texts

    with pytest.raises(NeuroshotError, match=r"item\(s\) 0"):  # what a Ray actor runs
        probe_texts(tiny_lm, tiny_task, ["  "], ["key"])


@pytest.fixture(scope="module")
def probed(tiny_lm):
    task = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
    result = probe(tiny_lm, task, TINY_TEXTS, **SETTINGS)
    result.embeddings = np.random.default_rng(0).normal(size=(len(result), 16))  # no MiniLM needed
    return result


def _one_warning(record) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    return messages[0]


@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_every_retriever_warns_when_k_exceeds_the_annotated_items(probed, name):
    annotated, queries = probed.subset(range(5)), probed.subset(range(5, 9))
    retriever = get_retriever(name).fit(annotated, ["A", "B", "C", "A", "B"])
    with pytest.warns(UserWarning) as record:
        demos = retriever.demonstrations(queries, k=8)
    assert _one_warning(record) == "k=8 but only 5 annotated items: each prompt gets 5"
    assert all(len(d) == 5 for d in demos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever.demonstrations(queries, k=5)  # enough items: no warning


def test_langchain_selector_warns_when_k_exceeds_the_examples(tiny_lm, tiny_task):
    from langchain_neuroshot import NeuronAwareExampleSelector

    examples = [{"text": t, "label": lab} for t, lab in zip(TINY_TEXTS[:4], "ABCA")]
    settings = dict(model=tiny_lm, task=tiny_task, k=6, retriever="neuron", strategy="random", top_k=8,
                    critical_fraction=0.2)
    selector = NeuronAwareExampleSelector.from_examples(examples, mode="per_query", **settings)
    with pytest.warns(UserWarning) as record:
        chosen = selector.select_examples({"text": "where is my parcel"})
    assert _one_warning(record) == "k=6 but only 4 annotated items: each prompt gets 4" and len(chosen) == 4
    with pytest.warns(UserWarning) as record:  # static: planned when the selector is made
        selector = NeuronAwareExampleSelector.from_examples(examples, mode="static", **settings)
        chosen = selector.select_examples({"text": "where is my parcel"})
    assert _one_warning(record) == "k=6 but only 4 annotated items: each prompt gets 4" and len(chosen) == 4


def test_dspy_programs_warn_when_k_exceeds_the_trainset(tiny_lm):
    import dspy
    from dspy_neuroshot import NeuronAwareFewShot

    train = [dspy.Example(question=q, label=y).with_inputs("question")
             for q, y in [("who wrote it", "person"), ("where is rome", "place"), ("who won", "person")]]
    with pytest.warns(UserWarning) as record:
        static = NeuronAwareFewShot(k=5, model=tiny_lm, progress=False).compile(dspy.Predict(_kind()), trainset=train)
    assert _one_warning(record) == "k=5 but only 3 annotated items: each prompt gets 3"
    assert all(len(p.demos) == 3 for _, p in static.named_predictors())
    per_query = NeuronAwareFewShot(k=5, model=tiny_lm, per_query=True, retriever="neuron",
                                   progress=False).compile(dspy.Predict(_kind()), trainset=train)
    with pytest.warns(UserWarning) as record:
        chosen = per_query.retrieve(question="who is she")
    assert _one_warning(record) == "k=5 but only 3 annotated items: each prompt gets 3" and len(chosen) == 3


# --------------------------------------------------------------------------- security: nothing unpickled or run

DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__"}
DANGEROUS_ATTRIBUTES = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                        ("torch", "load"), ("marshal", "loads"), ("dill", "load"), ("dill", "loads"),
                        ("yaml", "load"), ("joblib", "load")}


def _source_files():
    for folder in ("src", "integrations", "cookbook", "benchmarks"):
        yield from (REPO / folder).rglob("*.py")


def test_no_code_unpickles_or_executes_what_it_reads():
    found = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            pair = ((func.value.id, func.attr) if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else None)
            risky_kw = [k.arg for k in node.keywords
                        if k.arg in ("allow_pickle", "trust_remote_code", "save_program", "weights_only")
                        and not (isinstance(k.value, ast.Constant) and k.value.value is (k.arg == "weights_only"))]
            if name in DANGEROUS_CALLS or pair in DANGEROUS_ATTRIBUTES or risky_kw:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert not found, "\n".join(found)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any unpickling during the test fails it."""
    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (cloudpickle, "load"),
                         (cloudpickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)


def test_a_saved_dspy_program_is_plain_json_and_loads_without_unpickling(tiny_lm, tmp_path, no_unpickling):
    import dspy
    from dspy_neuroshot import NeuronAwareFewShot, NeuronFewShotProgram

    train = [dspy.Example(question=q, label=y).with_inputs("question")
             for q, y in [("who wrote it", "person"), ("where is rome", "place"), ("who won", "person"),
                          ("where to go", "place")]]
    program = NeuronAwareFewShot(k=2, model=tiny_lm, per_query=True, retriever="neuron",
                                 progress=False).compile(dspy.Predict(_kind()), trainset=train)
    path = tmp_path / "program.json"
    program.save(str(path))  # the documented way: JSON state (save_program=False)
    raw = path.read_bytes()
    state = json.loads(raw)  # plain JSON, nothing pickled inside
    assert "annotated" in state and state["annotated"]["settings"]["k"] == 2
    loaded = NeuronFewShotProgram(dspy.Predict(_kind()), model=tiny_lm)
    loaded.load(str(path))
    assert [ex.question for ex in loaded.annotated.examples] == [ex.question for ex in train]
    assert [e.question for e, _ in loaded.retrieve(question="who is she")] == \
        [e.question for e, _ in program.retrieve(question="who is she")]
    pkl = tmp_path / "program.pkl"
    pkl.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="arbitrary code"):  # DSPy refuses pickles unless allow_pickle=True
        loaded.load(str(pkl))


def test_stores_and_data_files_are_read_without_unpickling(tiny_lm, tiny_task, tmp_path, no_unpickling):
    from neuroshot import load_records
    from neuroshot.annotation import AnnotationLog, read_annotations

    texts = TINY_TEXTS[:6]
    first = probe(tiny_lm, tiny_task, texts, store=tmp_path / "store", **SETTINGS)
    again = probe(tiny_lm, tiny_task, texts, store=tmp_path / "store", **SETTINGS)  # read back from the store
    assert np.array_equal(first.probs, again.probs)
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    assert len(load_records(tmp_path / "pool.jsonl")) == 6
    AnnotationLog(tmp_path / "labels.jsonl", ["A", "B", "C"]).add("0", "A")
    assert read_annotations(tmp_path / "labels.jsonl", ["A", "B", "C"]) == {"0": "A"}


# --------------------------------------------------------------------------- security: ids never become paths

HOSTILE_IDS = ["../../escaped", "/tmp/absolute", "..", "a/../../b", "nul\x00byte", "C:\\windows", "~/home"]


@pytest.mark.parametrize("name", HOSTILE_IDS + ["", "a/b", ".hidden"])
def test_a_store_chunk_name_cannot_leave_the_store(tmp_path, name):
    from neuroshot.store import SignatureStore

    store = SignatureStore(tmp_path / "store", {"model": "x"})
    with pytest.raises(NeuroshotError, match="cannot be a file name"):
        store.chunk_path(name)
    assert store.chunk_path("ray-0123abcd").parent == store.path


def test_hostile_ids_stay_data_through_plan_export_annotation_and_log(tmp_path, tiny_model_dir, capsys):
    from neuroshot.annotation import AnnotationLog, read_annotation_items, read_annotations
    from neuroshot.cli import main

    work = tmp_path / "work"
    work.mkdir()
    pool = work / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "text": f"text number {n}"}) + "\n"
                            for n, i in enumerate(HOSTILE_IDS)), encoding="utf-8")
    outputs = {fmt: work / f"plan.{fmt}" for fmt in ("jsonl", "csv", "json")}
    for out in outputs.values():
        assert main(["plan", str(pool), "--labels", "A,B", "--budget", str(len(HOSTILE_IDS)), "--strategy", "random",
                     "--model", str(tiny_model_dir), "--store", str(work / "store"), "--out", str(out)]) == 0
        assert sorted(it.id for it in read_annotation_items(out)) == sorted(i.strip() for i in HOSTILE_IDS)
    log = AnnotationLog(work / "labels.jsonl", ["A", "B"])
    for i in HOSTILE_IDS:
        log.add(i, "A")
    assert read_annotations(work / "labels.jsonl", ["A", "B"]) == {i: "A" for i in HOSTILE_IDS}
    capsys.readouterr()
    assert [p.name for p in tmp_path.iterdir()] == ["work"]  # nothing written beside or above the work folder
    assert not Path("/tmp/absolute").exists() and not (Path.home() / "home").exists()
    written = {p.relative_to(work).parts[0] for p in work.rglob("*")}
    assert written == {"pool.jsonl", "plan.jsonl", "plan.csv", "plan.json", "plan.labelstudio.xml", "store",
                       "labels.jsonl"}


# --------------------------------------------------------------------------- security: secrets

def test_environment_values_never_reach_output_or_logs(tmp_path, tiny_model_dir, capsys, caplog, monkeypatch):
    """neuroshot reads only NEUROSHOT_CACHE (a folder) and HF_HUB_OFFLINE; a secret in the environment
    shows up in no printed line, log record, or file written."""
    from neuroshot.cli import main

    secret = "sk-neuroshot-test-5b1f0c"
    for name in ("HF_TOKEN", "OPENAI_API_KEY", "LABEL_STUDIO_API_KEY", "NEUROSHOT_SECRET"):
        monkeypatch.setenv(name, secret)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in TINY_TEXTS[:5]), encoding="utf-8")
    caplog.set_level("DEBUG")
    assert main(["plan", str(pool), "--labels", "A,B", "--budget", "2", "--strategy", "random", "--model",
                 str(tiny_model_dir), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "plan.csv")]) == 0
    assert main(["plan", str(tmp_path / "missing.jsonl"), "--labels", "A,B", "--budget", "2"]) == 2
    out = capsys.readouterr()
    assert secret not in out.out + out.err and secret not in caplog.text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret.encode() in p.read_bytes()]
