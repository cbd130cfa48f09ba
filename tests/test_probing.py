"""Probing mechanics on a tiny random-weight LLaMA: hooks, attribution methods, label scoring,
answer spans, sparse signatures, the resumable store, and the architectures around them.

Every expected value is computed independently of the code under test (own hooks, captum,
naive full-sequence scoring), so a wrong hook point, a cut gradient path, a padding bug or a
dropped answer position fails here.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from safetensors import safe_open

from neuroshot import probing, scoring, store
from neuroshot.attribution import ActivationRecorder, attribute
from neuroshot.errors import NeuroshotError, UnsupportedModelError
from neuroshot.models import find_ffn_layers, from_pretrained_objects
from neuroshot.signatures import Signatures
from neuroshot.task import Task

from conftest import TINY_LLAMA, build_char_tokenizer, build_tiny_llama

D_FF = TINY_LLAMA["intermediate_size"]
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls: threads only add overhead


# --------------------------------------------------------------------------- helpers (independent of neuroshot)

def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _run(model, seq, modules=()):
    """Logits of one unpadded sequence and the input of each module in ``modules`` (own hooks)."""
    seen, handles = [], [m.register_forward_pre_hook(lambda m, a, i=i: seen.append((i, a[0].detach())))
                         for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(seq)])).logits[0]
    finally:
        for h in handles:
            h.remove()
    return logits, [a[0] for _, a in sorted(seen, key=lambda x: x[0])]


def _down_projs(lm):
    return [layer.module for layer in lm.layers]


def _encode(lm, task, texts, demos=()):
    return scoring.encode(lm, task, texts, demos)


# --------------------------------------------------------------------------- 1. hooks

def test_recorder_records_down_proj_input_equal_to_gated_product(tiny_lm, tiny_task, tiny_texts):
    enc = _encode(tiny_lm, tiny_task, tiny_texts[:3])
    ids, mask = scoring.pad_left(enc.prompts, tiny_lm.tokenizer.pad_token_id, tiny_lm.device)
    mlps = [layer.mlp for layer in tiny_lm.model.model.layers]
    gate, up, handles = {}, {}, []
    for l, mlp in enumerate(mlps):
        handles.append(mlp.gate_proj.register_forward_hook(lambda m, a, out, l=l: gate.__setitem__(l, out)))
        handles.append(mlp.up_proj.register_forward_hook(lambda m, a, out, l=l: up.__setitem__(l, out)))
    try:
        with torch.no_grad(), ActivationRecorder(tiny_lm) as rec:
            scoring.forward(tiny_lm, ids, mask)
    finally:
        for h in handles:
            h.remove()
    assert len(rec.acts) == 3
    for l, mlp in enumerate(mlps):
        assert rec.acts[l].shape == (3, ids.shape[1], D_FF)
        torch.testing.assert_close(rec.acts[l], mlp.act_fn(gate[l]) * up[l], atol=1e-6, rtol=1e-5)
        assert rec.acts[l].abs().sum() > 0
    # the hooks are gone after the context, also when the block raises
    assert all(not m._forward_pre_hooks for m in _down_projs(tiny_lm))
    with pytest.raises(RuntimeError), ActivationRecorder(tiny_lm):
        assert all(len(m._forward_pre_hooks) == 1 for m in _down_projs(tiny_lm))
        raise RuntimeError
    assert all(not m._forward_pre_hooks for m in _down_projs(tiny_lm))


def test_recorder_leaf_mode_keeps_later_layers_on_the_graph(tiny_lm, tiny_task, tiny_texts):
    enc = _encode(tiny_lm, tiny_task, tiny_texts[:1])
    ids, mask = scoring.pad_left(enc.prompts, tiny_lm.tokenizer.pad_token_id, tiny_lm.device)
    with torch.enable_grad(), ActivationRecorder(tiny_lm, leaf=True) as rec:
        scoring.forward(tiny_lm, ids, mask)
    assert rec.acts[0].is_leaf and rec.acts[0].requires_grad
    assert all(a.requires_grad and not a.is_leaf for a in rec.acts[1:])  # not detached: paths through later MLPs


# --------------------------------------------------------------------------- 2. grad x act == captum

def test_grad_x_act_matches_captum(tiny_lm, tiny_task, tiny_texts):
    from captum.attr import LayerGradientXActivation

    enc = _encode(tiny_lm, tiny_task, tiny_texts[:4])  # different lengths: left padding is exercised
    att = attribute(tiny_lm, enc.prompts, enc.labels, method="grad_x_act")
    ids, mask = scoring.pad_left(enc.prompts, tiny_lm.tokenizer.pad_token_id, tiny_lm.device)
    target = torch.tensor([enc.labels[p][0] for p in att.predicted.tolist()])

    def objective(input_ids, attention_mask):
        logits = tiny_lm.model(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=_positions(attention_mask)).logits[:, -1]
        return torch.log_softmax(logits.float(), -1)[torch.arange(len(target)), target]

    with torch.no_grad():  # the explained label is the argmax over labels
        first = torch.tensor([lab[0] for lab in enc.labels])
        logits = tiny_lm.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits[:, -1]
        assert att.predicted.tolist() == logits[:, first].argmax(-1).tolist()
    reference = LayerGradientXActivation(objective, _down_projs(tiny_lm)).attribute(
        ids, additional_forward_args=(mask,), attribute_to_layer_input=True)
    assert len(reference) == tiny_lm.n_layers
    for l, ref in enumerate(reference):
        ref = ref[0] if isinstance(ref, tuple) else ref
        assert att.values[:, l, -1].abs().max() > 1e-3
        torch.testing.assert_close(att.values[:, l, -1], ref[:, -1].float(), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- 3. direct logit by hand

def test_direct_logit_matches_manual(tiny_lm, tiny_task, tiny_texts):
    enc = _encode(tiny_lm, tiny_task, tiny_texts[4:7])
    att = attribute(tiny_lm, enc.prompts, enc.labels, method="direct_logit")  # padded batch
    unemb = tiny_lm.model.lm_head.weight
    for b, prompt in enumerate(enc.prompts):
        logits, acts = _run(tiny_lm.model, prompt, _down_projs(tiny_lm))  # alone, unpadded
        y = enc.labels[int(logits[-1, [lab[0] for lab in enc.labels]].argmax())][0]
        assert enc.labels[int(att.predicted[b])][0] == y
        for l, module in enumerate(_down_projs(tiny_lm)):
            expected = acts[l][-1] * (module.weight.T @ unemb[y])  # a[l,i] * (W_down[:, i] . U[y])
            torch.testing.assert_close(att.values[b, l, -1], expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- 4. integrated gradients completeness

def _objective(lm, enc, predicted, zero_layer=None):
    """log p(predicted label) at the last position, optionally with one layer's activation there zeroed."""
    ids, mask = scoring.pad_left(enc.prompts, lm.tokenizer.pad_token_id, lm.device)
    target = torch.tensor([enc.labels[p][0] for p in predicted.tolist()])
    edit = None if zero_layer is None else (zero_layer, lambda h: torch.cat([h[:, :-1], 0 * h[:, -1:]], 1))
    with torch.no_grad(), ActivationRecorder(lm, edit=edit):
        logits = scoring.forward(lm, ids, mask).logits[:, -1]
    return torch.log_softmax(logits.float(), -1)[torch.arange(len(target)), target]


def test_integrated_gradients_completeness(tiny_lm, tiny_task, tiny_texts):
    enc = _encode(tiny_lm, tiny_task, tiny_texts[:2])
    errors = {}
    for steps in (2, 32):
        att = attribute(tiny_lm, enc.prompts, enc.labels, method="integrated_gradients", ig_steps=steps)
        for layer in range(tiny_lm.n_layers):
            delta = _objective(tiny_lm, enc, att.predicted) - _objective(tiny_lm, enc, att.predicted, layer)
            assert delta.abs().min() > 1e-2  # zeroing the layer matters, so the check is not vacuous
            errors[steps, layer] = (att.values[:, layer, -1].sum(-1) - delta).abs() / delta.abs().clamp(min=1)
    for layer in range(tiny_lm.n_layers):
        assert (errors[32, layer] < 2e-3).all(), errors
    assert max(errors[32, l].max() for l in range(3)) < max(errors[2, l].max() for l in range(3)) / 10


# --------------------------------------------------------------------------- 5. label scoring

def _naive_scores(model, prompts, labels):
    out = torch.zeros(len(prompts), len(labels))
    for r, p in enumerate(prompts):
        for c, lab in enumerate(labels):
            logits, _ = _run(model, list(p) + list(lab))
            lp = torch.log_softmax(logits[len(p) - 1:len(p) - 1 + len(lab)].float(), -1)
            out[r, c] = lp[torch.arange(len(lab)), torch.tensor(lab)].mean()
    return out


@pytest.mark.parametrize("multi", [True, False])
def test_label_scores_match_naive_and_ignore_padding(tiny_lm, tiny_task, tiny_task_multi, tiny_texts, multi):
    task = tiny_task_multi if multi else tiny_task
    enc = _encode(tiny_lm, task, tiny_texts[6:10])
    assert (enc.single_token, sorted(map(len, enc.labels))) == ((False, [3, 4, 6]) if multi else (True, [1, 1, 1]))
    scores = scoring.label_scores(tiny_lm, enc.prompts, enc.labels)
    torch.testing.assert_close(scores, _naive_scores(tiny_lm.model, enc.prompts, enc.labels), atol=1e-5, rtol=1e-5)
    short = min(range(len(enc.prompts)), key=lambda i: len(enc.prompts[i]))
    longer = _encode(tiny_lm, task, [tiny_texts[9] * 3, tiny_texts[5] * 2]).prompts
    alone = scoring.label_scores(tiny_lm, [enc.prompts[short]], enc.labels)
    mixed = scoring.label_scores(tiny_lm, [longer[0], enc.prompts[short], longer[1]], enc.labels)
    assert len(longer[0]) > len(enc.prompts[short]) + 20
    torch.testing.assert_close(alone[0], mixed[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], scores[short], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- 6. multi-token answer span

def test_multi_token_span_keeps_every_answer_position(tiny_lm, tiny_task_multi, tiny_texts):
    enc = _encode(tiny_lm, tiny_task_multi, tiny_texts[:3])
    predicted = [0, 2, 1]  # answers of 4, 6 and 3 tokens
    att = attribute(tiny_lm, enc.prompts, enc.labels, predicted=predicted, method="direct_logit")
    lengths = [len(enc.labels[p]) for p in predicted]
    assert att.values.shape == (3, 3, max(lengths), D_FF)
    assert att.span_mask.sum(-1).tolist() == lengths
    unemb = tiny_lm.model.lm_head.weight
    for b, (prompt, p) in enumerate(zip(enc.prompts, predicted)):
        answer, width = enc.labels[p], att.values.shape[2]
        assert att.span_mask[b].tolist() == [False] * (width - len(answer)) + [True] * len(answer)  # right-aligned
        assert (att.values[b][:, ~att.span_mask[b]] == 0).all()
        nonzero = att.values[b].abs().sum((0, 2))[att.span_mask[b]]
        assert (nonzero > 0).all()  # every span position contributes, the last one included
        # position j of the span is prompt token -1 + j, predicting answer[j] (teacher forcing)
        _, acts = _run(tiny_lm.model, list(prompt) + answer[:-1], _down_projs(tiny_lm))
        for j, token in enumerate(answer):
            pos = len(prompt) - 1 + j
            for l, module in enumerate(_down_projs(tiny_lm)):
                expected = acts[l][pos] * (module.weight.T @ unemb[token]) / len(answer)
                torch.testing.assert_close(att.values[b, l, width - len(answer) + j], expected, atol=1e-5, rtol=1e-4)
    grad = attribute(tiny_lm, enc.prompts, enc.labels, predicted=predicted, method="grad_x_act")
    assert grad.span_mask.sum(-1).tolist() == lengths
    for b in range(3):
        assert (grad.values[b].abs().sum((0, 2))[grad.span_mask[b]] > 0).all()


@pytest.mark.parametrize("method", ["grad_x_act", "integrated_gradients"])
def test_multi_token_gradient_attribution_needs_predicted(tiny_lm, tiny_task_multi, tiny_texts, method):
    enc = _encode(tiny_lm, tiny_task_multi, tiny_texts[:1])
    with pytest.raises(ValueError, match="predicted"):
        attribute(tiny_lm, enc.prompts, enc.labels, method=method)


# --------------------------------------------------------------------------- 7. top-k sparsity and signatures

def test_probe_top_k_and_signature_round_trips(tiny_lm, tiny_task, tiny_texts):
    k = 5
    result = probing.probe(tiny_lm, tiny_task, tiny_texts, top_k=k, critical_fraction=0.05, batch_size=4,
                           progress=False)
    sig, enc = result.signatures, _encode(tiny_lm, tiny_task, tiny_texts)
    assert len(sig) == len(tiny_texts) and (sig.n_layers, sig.d_ff) == (3, D_FF)
    np.testing.assert_allclose(result.probs.sum(1), 1, atol=1e-5)
    for i in (0, 5, 11):  # the kept neurons are exactly the top-k by |attribution| of each layer
        att = attribute(tiny_lm, [enc.prompts[i]], enc.labels)
        neurons, values = sig.item(i)
        assert result.predicted[i] == int(att.predicted[0])
        layer, index = sig.split(neurons)
        for l in range(3):
            top = att.values[0, l, -1].abs().topk(k).indices.sort().values.numpy()
            np.testing.assert_array_equal(index[layer == l], top)
            np.testing.assert_allclose(values[layer == l], att.values[0, l, -1, top].numpy(), atol=1e-6, rtol=1e-5)
    for i in range(len(sig)):
        counts = np.bincount(sig.item(i)[0] // D_FF, minlength=3)
        assert (counts <= k).all() and (counts == k).all()  # exactly k: random weights give no zero attributions
    csr = sig.to_csr()
    assert csr.shape == (len(sig), 3 * D_FF)
    np.testing.assert_array_equal(np.diff(csr.indptr), sig.sizes())
    for i in range(len(sig)):
        neurons, values = sig.item(i)
        np.testing.assert_allclose(csr[i].toarray()[0, neurons], values)
    assert sig.to_csr(binary=True).sum() == sig.sizes().sum()
    sub = sig.subset([7, 0, 7])
    for j, i in enumerate([7, 0, 7]):
        for got, want in zip(sub.item(j), sig.item(i)):
            np.testing.assert_array_equal(got, want)
    again = Signatures.concat([sig.subset(range(5)), sig.subset(range(5, len(sig)))])
    np.testing.assert_array_equal(again.indptr, sig.indptr)
    np.testing.assert_array_equal(again.neurons, sig.neurons)
    crit = result.critical
    assert len(crit) == round(0.05 * 3 * D_FF) and crit.per_layer_counts().sum() == len(crit)
    assert crit.per_layer_counts().shape == (3,)
    assert crit.restrict(sig).shape == (len(sig), len(crit))
    np.testing.assert_array_equal(result.scores.consensus, sig.sizes())


def test_multi_token_top_k_is_over_span_positions_and_neurons(tiny_lm, tiny_task_multi, tiny_texts):
    """NeuFS convention: per layer, top-k over (position, neuron) pairs; a neuron keeps its strongest value."""
    k = 12
    result = probing.probe(tiny_lm, tiny_task_multi, tiny_texts[:4], top_k=k, progress=False)
    enc = _encode(tiny_lm, tiny_task_multi, tiny_texts[:4])
    scores = scoring.label_scores(tiny_lm, enc.prompts, enc.labels)
    np.testing.assert_allclose(result.probs, torch.softmax(scores, -1).numpy(), atol=1e-5)
    shared = 0
    for i in range(4):
        pred = int(result.predicted[i])
        span = len(enc.labels[pred])
        att = attribute(tiny_lm, [enc.prompts[i]], enc.labels, predicted=[pred])
        neurons, values = result.signatures.item(i)
        for l in range(3):
            pairs = att.values[0, l].flatten()
            top = pairs.abs().topk(k).indices
            best = {}
            for flat in top.tolist():  # strongest value per neuron among the top-k pairs
                n = flat % D_FF
                if n not in best or abs(pairs[flat]) > abs(best[n]):
                    best[n] = float(pairs[flat])
            in_layer = neurons // D_FF == l
            assert -(-k // span) <= in_layer.sum() <= k
            np.testing.assert_array_equal(neurons[in_layer] % D_FF, sorted(best))
            np.testing.assert_allclose(values[in_layer], [best[n] for n in sorted(best)], atol=1e-6, rtol=1e-5)
            shared += k - len(best)
    assert shared > 0  # some neuron was among the top pairs at several positions: the merge was exercised


# --------------------------------------------------------------------------- 8. the resumable store

@pytest.fixture
def spy(monkeypatch):
    """Counts the items ``_probe_batch`` computes; ``spy.fail_at`` raises KeyboardInterrupt at that call."""
    original = probing._probe_batch

    class Spy:
        items, calls, fail_at = 0, 0, None

    def wrapper(lm, enc, prompts, *args):
        Spy.calls += 1
        if Spy.fail_at is not None and Spy.calls == Spy.fail_at:
            raise KeyboardInterrupt
        Spy.items += len(prompts)
        return original(lm, enc, prompts, *args)

    monkeypatch.setattr(probing, "_probe_batch", wrapper)
    return Spy


def _same_result(a, b, exact=False):
    if exact:
        np.testing.assert_array_equal(a.signatures.indptr, b.signatures.indptr)
        np.testing.assert_array_equal(a.signatures.neurons, b.signatures.neurons)
        np.testing.assert_array_equal(a.signatures.values, b.signatures.values)
        np.testing.assert_array_equal(a.probs, b.probs)
    else:
        for i in range(len(a)):
            np.testing.assert_array_equal(a.signatures.item(i)[0], b.signatures.item(i)[0])
            np.testing.assert_allclose(a.signatures.item(i)[1], b.signatures.item(i)[1], atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_store_reuses_everything_on_rerun(tiny_lm, tiny_task, tiny_texts, tmp_path, spy):
    kw = dict(top_k=4, batch_size=3, chunk_size=4, progress=False, store=tmp_path)
    first = probing.probe(tiny_lm, tiny_task, tiny_texts, **kw)
    assert spy.items == len(tiny_texts)
    second = probing.probe(tiny_lm, tiny_task, tiny_texts + [tiny_texts[0]], **kw)  # a duplicate costs nothing
    assert spy.items == len(tiny_texts)
    _same_result(first, probing.probe(tiny_lm, tiny_task, tiny_texts, **kw), exact=True)
    np.testing.assert_array_equal(second.signatures.item(len(tiny_texts))[0], first.signatures.item(0)[0])
    no_store = probing.probe(tiny_lm, tiny_task, tiny_texts, top_k=4, progress=False)
    _same_result(first, no_store)
    # only safetensors chunks and the settings file: no pickle anywhere
    (folder,) = [p for p in tmp_path.iterdir()]
    names = sorted(p.name for p in folder.iterdir() if p.name != ".writer.lock")
    assert names[-1] == "settings.json"
    assert all(n.startswith("chunk-") and n.endswith(".safetensors") for n in names[:-1])
    assert len(names) - 1 == 2  # batches of 3, a chunk once 4 are pending: 6 + 6
    for chunk in folder.glob("chunk-*.safetensors"):
        raw = chunk.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        assert set(header) == {"__metadata__", "counts", "neurons", "values", "label_scores"}
        assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["model"] == tiny_lm.fingerprint and settings["top_k"] == 4


def test_store_keeps_finished_batches_after_ctrl_c(tiny_lm, tiny_task, tiny_texts, tmp_path, spy):
    kw = dict(top_k=4, batch_size=2, chunk_size=100, progress=False, store=tmp_path)
    spy.fail_at = 3
    with pytest.raises(KeyboardInterrupt):
        probing.probe(tiny_lm, tiny_task, tiny_texts, **kw)
    assert spy.items == 4  # two batches of two finished before the interrupt
    spy.fail_at, spy.items = None, 0
    resumed = probing.probe(tiny_lm, tiny_task, tiny_texts, **kw)
    assert spy.items == len(tiny_texts) - 4
    _same_result(resumed, probing.probe(tiny_lm, tiny_task, tiny_texts, top_k=4, progress=False))


@pytest.mark.skipif(sys.platform != "linux", reason="forks a process that holds a torch model")
def test_store_survives_kill_9(tiny_lm, tiny_task, tiny_texts, tmp_path, spy):
    """A probing process SIGKILLed while writing its second chunk leaves one valid chunk; a rerun completes."""
    root, kw = tmp_path / "store", dict(top_k=4, batch_size=2, chunk_size=2, progress=False)
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a multi-threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()  # the child shares the loaded model: no second interpreter and torch start-up
    if pid == 0:
        try:
            puts, real_put, real_fsync = [], store.SignatureStore.put, os.fsync

            def put(self, items):
                puts.append(len(items))
                real_put(self, items)

            def fsync(fd):
                if len(puts) == 2:  # the second chunk sits complete in its temporary file, not yet renamed
                    os.kill(os.getpid(), signal.SIGKILL)
                real_fsync(fd)

            store.SignatureStore.put, os.fsync = put, fsync
            probing.probe(tiny_lm, tiny_task, tiny_texts, store=root, **kw)
        finally:
            os._exit(3)  # never return into pytest from the child
    deadline = time.monotonic() + 120
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the probing child hung")
        time.sleep(0.05)
    assert os.WIFSIGNALED(status[1]) and os.WTERMSIG(status[1]) == signal.SIGKILL, status
    (folder,) = list(root.iterdir())
    assert len(list(folder.glob("chunk-*.safetensors"))) == 1  # the half-written one never got a chunk name
    assert list(folder.glob(".chunk-*.tmp"))  # it was killed mid-write
    resumed = probing.probe(tiny_lm, tiny_task, tiny_texts, store=root, **kw)
    assert spy.items == len(tiny_texts) - 2 and len(list(root.iterdir())) == 1
    _same_result(resumed, probing.probe(tiny_lm, tiny_task, tiny_texts, top_k=4, progress=False))


def test_store_key_follows_settings(tiny_lm, tiny_task, tiny_texts, tmp_path, spy):
    texts = tiny_texts[:2]
    other_task = Task(labels=("A", "B", "C"), instruction="Choose {labels}.", answer_prefix="")
    for method, top_k, task in [("direct_logit", 3, tiny_task), ("grad_x_act", 3, tiny_task),
                                ("direct_logit", 4, tiny_task), ("direct_logit", 3, other_task),
                                ("direct_logit", 3, tiny_task)]:
        probing.probe(tiny_lm, task, texts, method=method, top_k=top_k, progress=False, store=tmp_path)
    assert len(list(tmp_path.iterdir())) == 4  # the repeated setting reused its folder
    assert spy.items == 4 * len(texts)
    stored = [json.loads((p / "settings.json").read_text()) for p in tmp_path.iterdir()]
    assert {(s["method"], s["top_k"], s["task"]) for s in stored} == {
        ("direct_logit", 3, tiny_task.fingerprint()), ("grad_x_act", 3, tiny_task.fingerprint()),
        ("direct_logit", 4, tiny_task.fingerprint()), ("direct_logit", 3, other_task.fingerprint())}


# --------------------------------------------------------------------------- 9. architectures

def test_unsupported_architecture_names_what_is_supported():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=128, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                             num_attention_heads=2, max_position_embeddings=64))
    with pytest.raises(UnsupportedModelError) as info:
        from_pretrained_objects(model, build_char_tokenizer())
    message = str(info.value)
    assert "gpt_neox" in message and "down_proj" in message and "c_proj" in message
    assert isinstance(info.value, NeuroshotError)
    with pytest.raises(UnsupportedModelError):
        find_ffn_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_gpt2_conv1d_direct_logit_matches_manual(tiny_task, tiny_task_multi, tiny_texts):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=256,
                                       initializer_range=0.2))
    lm = from_pretrained_objects(model, build_char_tokenizer(), "tiny-gpt2")
    assert [layer.name for layer in lm.layers] == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    assert lm.d_ff == 48
    for layer, w in zip(lm.layers, lm.output_weights()):  # Conv1D stores [in, out]
        torch.testing.assert_close(w, layer.module.weight.T, atol=1e-6, rtol=1e-5)
    enc = _encode(lm, tiny_task, tiny_texts[:2])
    att = attribute(lm, enc.prompts, enc.labels, method="direct_logit")
    unemb = model.transformer.wte.weight  # tied
    for b, prompt in enumerate(enc.prompts):
        mlps = [block.mlp for block in model.transformer.h]
        fc = []
        handles = [m.c_fc.register_forward_hook(lambda mod, a, out: fc.append(out[0].detach())) for m in mlps]
        try:
            logits, _ = _run(model, prompt)
        finally:
            for h in handles:
                h.remove()
        y = enc.labels[int(logits[-1, [lab[0] for lab in enc.labels]].argmax())][0]
        for l, mlp in enumerate(mlps):
            a = mlp.act(fc[l][-1])  # the neurons: act(c_fc(x)), the input of c_proj
            expected = a * (mlp.c_proj.weight @ unemb[y])
            assert expected.abs().max() > 1e-3
            torch.testing.assert_close(att.values[b, l, -1], expected, atol=1e-5, rtol=1e-4)
    # absolute position embeddings: left padding and the KV-cache continuation must get positions right
    enc = _encode(lm, tiny_task_multi, [tiny_texts[3], tiny_texts[9], tiny_texts[7]])
    scores = scoring.label_scores(lm, enc.prompts, enc.labels)
    torch.testing.assert_close(scores, _naive_scores(model, enc.prompts, enc.labels), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- 10. PEFT LoRA

def test_lora_wrapped_model_is_probed_with_the_delta(tiny_task, tiny_texts):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_llama()
    base_weights = [layer.mlp.down_proj.weight.detach().clone() for layer in base.model.layers]
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(target_modules=["down_proj"], init_lora_weights=False, r=4, lora_alpha=8))
    lm = from_pretrained_objects(model, build_char_tokenizer(), "tiny-lora")
    assert [layer.name for layer in lm.layers] == [f"base_model.model.model.layers.{i}.mlp.down_proj" for i in range(3)]
    for layer, w, w0 in zip(lm.layers, lm.output_weights(), base_weights):
        mod = layer.module
        delta = (mod.lora_B["default"].weight @ mod.lora_A["default"].weight) * mod.scaling["default"]
        assert delta.abs().max() > 1e-3
        torch.testing.assert_close(w, w0 + delta, atol=1e-5, rtol=1e-4)
    enc = _encode(lm, tiny_task, tiny_texts[:2])
    ids, mask = scoring.pad_left(enc.prompts, lm.tokenizer.pad_token_id, lm.device)
    with torch.no_grad(), ActivationRecorder(lm) as rec:
        scoring.forward(lm, ids, mask)
    assert all(a.shape == (2, ids.shape[1], D_FF) for a in rec.acts)
    att = attribute(lm, enc.prompts, enc.labels, method="grad_x_act")
    assert torch.isfinite(att.values).all() and (att.values.abs().sum((1, 2, 3)) > 0).all()
    # direct logit uses the adapted weights: a * ((W0 + delta)^T U[y])
    direct = attribute(lm, enc.prompts[:1], enc.labels, method="direct_logit")
    y = enc.labels[int(direct.predicted[0])][0]
    _, acts = _run(lm.model, enc.prompts[0], _down_projs(lm))
    unemb = lm.unembedding()
    for l, w in enumerate(lm.output_weights()):
        torch.testing.assert_close(direct.values[0, l, -1], acts[l][-1] * (w.T @ unemb[y]), atol=1e-5, rtol=1e-4)
    scores = scoring.label_scores(lm, enc.prompts, [[40, 41], [42, 43]])  # KV-cache path through the PEFT wrapper
    torch.testing.assert_close(scores, _naive_scores(lm.model, enc.prompts, [[40, 41], [42, 43]]), atol=1e-5, rtol=1e-5)


def test_store_damaged_chunk_is_named_or_recomputed(tiny_lm, tiny_task, tmp_path, caplog, spy):
    """A flipped byte in a chunk's data (e.g. a disk error) or a truncated chunk: by default one error naming
    the chunk; with on_damage='recompute' a warning, the chunk set aside and its items probed again."""
    from neuroshot.probing import probe

    texts = ["alpha one", "beta two", "gamma three"]
    kw = dict(store=tmp_path, progress=False, top_k=4, chunk_size=1, batch_size=1)
    first = probe(tiny_lm, tiny_task, texts, **kw)
    chunks = sorted(tmp_path.glob("*/chunk-*.safetensors"))
    assert len(chunks) == 3
    raw = bytearray(chunks[0].read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor's data: still a valid safetensors file
    chunks[0].write_bytes(bytes(raw))
    chunks[1].write_bytes(chunks[1].read_bytes()[:-5])  # truncated
    with pytest.raises(NeuroshotError, match=r"signature store chunk .*chunk-.* is damaged \(.*\).*"
                                             r"on_damage='recompute'"):
        probe(tiny_lm, tiny_task, texts, **kw)
    spy.items = 0
    again = probe(tiny_lm, tiny_task, texts, on_damage="recompute", **kw)
    assert spy.items == 2 and caplog.text.count("is damaged") == 2
    assert "checksum mismatch" in caplog.text
    assert len(list(tmp_path.glob("*/chunk-*.safetensors.damaged"))) == 2
    np.testing.assert_array_equal(again.probs, first.probs)
    probe(tiny_lm, tiny_task, texts, **kw)  # the store is whole again
    assert spy.items == 2


def test_store_reads_chunks_without_a_checksum(tiny_lm, tiny_task, tmp_path, spy):
    """Chunks written before checksums existed stay readable."""
    from safetensors.numpy import load, save

    from neuroshot.probing import probe

    texts = ["alpha one", "beta two"]
    first = probe(tiny_lm, tiny_task, texts, store=tmp_path, progress=False, top_k=4)
    (chunk,) = tmp_path.glob("*/chunk-*.safetensors")
    with safe_open(str(chunk), framework="numpy") as fh:
        keys = fh.metadata()["keys"]
    chunk.write_bytes(save(load(chunk.read_bytes()), metadata={"keys": keys}))
    spy.items = 0
    again = probe(tiny_lm, tiny_task, texts, store=tmp_path, progress=False, top_k=4)
    assert spy.items == 0
    np.testing.assert_array_equal(again.probs, first.probs)


# --------------------------------------------------------------------------- 11. truncation to the context

def test_long_text_is_truncated_to_fit_the_context(tiny_lm, tiny_task_multi, caplog):
    import logging

    limit = tiny_lm.max_length
    long_text = ("lorem ipsum dolor sit amet " * 40)[:3 * limit]
    with caplog.at_level(logging.WARNING, logger="neuroshot.scoring"):
        enc = _encode(tiny_lm, tiny_task_multi, ["short one", long_text])
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "truncated" in r.getMessage()]
    assert len(warned) == 1 and "1 text(s)" in warned[0].getMessage()
    assert enc.truncated == 1
    longest_answer = max(map(len, enc.labels))
    assert len(enc.prompts[1]) + longest_answer <= limit  # the prompt and every answer fit the positions
    assert len(enc.prompts[1]) > limit // 2  # truncated, not dropped
    prompt = tiny_lm.tokenizer.decode(enc.prompts[1], skip_special_tokens=True)
    kept = prompt.split("Text: ", 1)[1].rsplit("\nLabel:", 1)[0]
    assert kept and long_text.startswith(kept) and len(kept) < len(long_text)  # the text's head, the template intact
    assert enc.prompts[0] == _encode(tiny_lm, tiny_task_multi, ["short one"]).prompts[0]
    scores = scoring.label_scores(tiny_lm, enc.prompts, enc.labels)
    assert torch.isfinite(scores).all()
    # a task's own max_text_tokens truncates silently (it is not a context overflow)
    caplog.clear()
    capped = Task(labels=tiny_task_multi.labels, instruction=tiny_task_multi.instruction, max_text_tokens=5)
    with caplog.at_level(logging.WARNING, logger="neuroshot.scoring"):
        enc = _encode(tiny_lm, capped, ["abcdefghij"])
    assert enc.truncated == 1 and not caplog.records
    assert "Text: abcde\nLabel:" in tiny_lm.tokenizer.decode(enc.prompts[0], skip_special_tokens=True)


def test_max_text_tokens_cuts_demonstrations_as_it_cuts_queries(tiny_lm, tiny_task_multi):
    from neuroshot.task import Demonstration

    demos = [Demonstration("abcdefghij", "yes"), Demonstration("xyz", "no")]
    capped = Task(labels=tiny_task_multi.labels, instruction=tiny_task_multi.instruction, max_text_tokens=5)
    prompt = tiny_lm.tokenizer.decode(_encode(tiny_lm, capped, ["klmnopqrst"], demos).prompts[0],
                                      skip_special_tokens=True)
    for part in ("Text: abcde\nLabel: yes", "Text: xyz\nLabel: no", "Text: klmno\nLabel:"):
        assert part in prompt
    assert "abcdef" not in prompt and "klmnop" not in prompt
    whole = tiny_lm.tokenizer.decode(_encode(tiny_lm, tiny_task_multi, ["klmnopqrst"], demos).prompts[0],
                                     skip_special_tokens=True)
    assert "Text: abcdefghij\nLabel: yes" in whole and "Text: klmnopqrst\nLabel:" in whole

def test_multi_token_direct_logit_reusing_the_prompt_cache_matches_teacher_forcing(
        tiny_lm, tiny_task_multi, tiny_texts, single_thread):
    """The one-prompt-pass path (KV cache reused for the answer) equals the full teacher-forced pass."""
    import torch

    from neuroshot.attribution import attribute
    from neuroshot.scoring import encode, label_scores

    enc = encode(tiny_lm, tiny_task_multi, tiny_texts[:6])
    fast = attribute(tiny_lm, enc.prompts, enc.labels, method="direct_logit")
    scores = label_scores(tiny_lm, enc.prompts, enc.labels)
    slow = attribute(tiny_lm, enc.prompts, enc.labels, predicted=scores.argmax(-1).tolist(), method="direct_logit")
    torch.testing.assert_close(fast.label_scores, scores)
    assert torch.equal(fast.predicted, slow.predicted) and torch.equal(fast.span_mask, slow.span_mask)
    assert len(set(fast.span_mask.sum(-1).tolist())) > 1  # rows with answers of different lengths
    torch.testing.assert_close(fast.values, slow.values, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- threads sharing one model

def test_a_forward_pass_waits_while_probing_hooks_are_on(tiny_lm, tiny_task, tiny_texts):
    """Another thread's scoring must not run (and be recorded) while a recorder's hooks are on."""
    import threading

    done = threading.Event()
    other = threading.Thread(target=lambda: (scoring.predict_proba(tiny_lm, tiny_task, tiny_texts[:2]), done.set()))
    with ActivationRecorder(tiny_lm) as rec:
        other.start()
        assert not done.wait(0.5), "a forward pass ran while probing hooks were on"
        assert all(a is None for a in rec.acts)
    other.join(10)
    assert done.is_set()


def test_threads_sharing_a_model_get_the_results_of_running_alone(tiny_lm, tiny_task, tiny_texts):
    import concurrent.futures

    halves = [tiny_texts[::2], tiny_texts[1::2]]
    alone = [probing.probe(tiny_lm, tiny_task, t, batch_size=2, progress=False) for t in halves]
    scores = scoring.predict_proba(tiny_lm, tiny_task, tiny_texts, batch_size=2)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        probes = [pool.submit(probing.probe, tiny_lm, tiny_task, t, batch_size=2, progress=False) for t in halves * 2]
        scored = [pool.submit(scoring.predict_proba, tiny_lm, tiny_task, tiny_texts, batch_size=2) for _ in range(4)]
        for future, expected in zip(probes, alone * 2):
            result = future.result()
            np.testing.assert_allclose(result.probs, expected.probs, atol=1e-6)
            np.testing.assert_array_equal(result.signatures.to_csr().toarray(), expected.signatures.to_csr().toarray())
        for future in scored:
            np.testing.assert_allclose(future.result(), scores, atol=1e-6)
