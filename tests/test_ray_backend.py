"""Probing on Ray (``probe(..., backend="ray")``) on a real local Ray cluster started here.

The cluster is a head on 127.0.0.1 with 2 CPUs, so the 2 model actors run in 2 worker processes.
The model is the tiny random LLaMA, saved to a folder so each actor loads its own copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ray  # the ray extra, part of the test extra

from neuroshot import NeuroshotError, load_model
from neuroshot.probing import probe
from neuroshot.task import Task

pytestmark = pytest.mark.ray
TASK = Task(labels=("A", "B", "C"), instruction="Pick {labels}.", answer_prefix="")
TEXTS = [f"text number {i} " + "xyz"[i % 3] * (i % 7) for i in range(160)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from conftest import build_char_tokenizer, build_tiny_llama

    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_llama().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def _chunk_keys(store: Path, exclude: set = frozenset()) -> list[str]:
    """Every key of every chunk in the store but ``exclude`` (a key written twice appears twice)."""
    from safetensors import safe_open

    keys = []
    for chunk in set(store.glob("*/chunk-*.safetensors")) - set(exclude):
        with safe_open(str(chunk), framework="numpy") as fh:
            keys += json.loads(fh.metadata()["keys"])
    return keys


def _same(a, b) -> None:
    assert np.array_equal(a.signatures.neurons, b.signatures.neurons)
    assert np.array_equal(a.signatures.indptr, b.signatures.indptr)
    assert np.allclose(a.signatures.values, b.signatures.values, atol=1e-5)
    assert np.allclose(a.probs, b.probs, atol=1e-5)
    assert np.array_equal(a.critical.ids, b.critical.ids)


def test_ray_probe_equals_the_local_one_though_a_worker_is_killed(cluster, model_folder, tmp_path):
    """Signatures, probabilities, critical neurons and plans equal the local backend's; one actor process
    is killed with SIGKILL mid-run, Ray restarts it, and every item ends up in the store exactly once."""
    from neuroshot.strategies import get_strategy

    lm = load_model(str(model_folder))
    out: dict = {}
    run = threading.Thread(target=lambda: out.update(result=probe(
        lm, TASK, TEXTS, top_k=8, progress=False, backend="ray", actors=2, chunk_size=8, store=tmp_path / "store")))
    run.start()
    deadline = time.time() + 180
    while not list((tmp_path / "store").glob("*/chunk-*")) and time.time() < deadline:
        time.sleep(0.05)
    victims = _actor_pids()
    assert victims, "no probe actor process found while the run was going on"
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive() and "result" in out
    local = probe(lm, TASK, TEXTS, top_k=8, progress=False)
    _same(out["result"], local)
    keys = _chunk_keys(tmp_path / "store")
    assert len(keys) == len(set(keys)) == len(TEXTS)  # each item written exactly once
    for name in ("neuron_coverage", "votek"):
        plans = [get_strategy(name).plan(result, 12, seed=0).indices for result in (local, out["result"])]
        assert plans[0] == plans[1]


def test_a_rerun_after_the_driver_is_killed_recomputes_nothing_stored(cluster, model_folder, tmp_path):
    store = tmp_path / "store"
    driver = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from neuroshot import load_model\nfrom neuroshot.probing import probe\n"
              "from test_ray_backend import TASK, TEXTS\n"
              f"probe(load_model({str(model_folder)!r}), TASK, TEXTS, top_k=8, progress=False, backend='ray', "
              f"actors=2, chunk_size=8, store={str(store)!r}, ray_address={cluster!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: on a loaded 2-core machine the actors start slowly
    while len(list(store.glob("*/chunk-*"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    time.sleep(3)  # let actors that were mid-batch finish or die
    before = set(_chunk_keys(store))
    assert 0 < len(before) < len(TEXTS), "the driver should have been killed mid-run"
    lm = load_model(str(model_folder))
    chunks_before = set(store.glob("*/chunk-*.safetensors"))
    result = probe(lm, TASK, TEXTS, top_k=8, progress=False, backend="ray", actors=2, chunk_size=8, store=store)
    new_keys = _chunk_keys(store, exclude=chunks_before)
    assert not set(new_keys) & before and len(before) + len(new_keys) == len(TEXTS)
    _same(result, probe(lm, TASK, TEXTS, top_k=8, progress=False))


def test_bad_ray_settings(tiny_lm, tmp_path):
    with pytest.raises(NeuroshotError, match="store"):
        probe(tiny_lm, TASK, TEXTS[:4], backend="ray")
    with pytest.raises(NeuroshotError, match="load_model"):
        probe(tiny_lm, TASK, TEXTS[:4], backend="ray", store=tmp_path)
    with pytest.raises(NeuroshotError, match="backend"):
        probe(tiny_lm, TASK, TEXTS[:4], backend="spark")
    with pytest.raises(NeuroshotError, match="actors"):
        probe(tiny_lm, TASK, TEXTS[:4], backend="ray", actors=0, store=tmp_path)
    with pytest.raises(NeuroshotError, match="pool_source"):
        probe(tiny_lm, TASK, TEXTS[:4], pool_source=tmp_path / "pool.jsonl")


def _actor_pids() -> list[int]:
    """Process ids of this machine's probe actors (Ray names an actor's process ``ray::_ProbeActor...``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "_ProbeActor" in cmd or "MapWorker(MapBatches(_ProbeActor))" in cmd:
                pids.append(int(entry.name))
    return pids


def test_neuroshot_plan_with_the_ray_backend_reads_the_pool_with_ray_data(cluster, model_folder, tmp_path, capsys):
    """The ray backend reads the pool file itself (Parquet, then CSV) and plans what the local backend plans;
    a second run on the same store probes nothing (every key once)."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    from neuroshot.cli import main

    rows = [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS[:39] + ["2024"])]  # a text CSV readers call a number
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pool.parquet")
    with open(tmp_path / "pool.csv", "w", newline="") as fh:
        csv.DictWriter(fh, ["id", "text"]).writeheader()
        csv.DictWriter(fh, ["id", "text"]).writerows(rows)
    plans = {}
    for backend, pool in (("ray", "pool.parquet"), ("local", "pool.jsonl"), ("ray", "pool.csv")):
        out = tmp_path / f"{pool}.plan.jsonl"
        argv = ["plan", str(tmp_path / pool), "--labels", "A,B,C", "--budget", "5", "--model", str(model_folder),
                "--top-k", "8", "--store", str(tmp_path / backend), "--out", str(out), "--backend", backend,
                "--ray-address", cluster]
        assert main(argv) == 0
        plans[pool] = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert plans["pool.parquet"] == plans["pool.jsonl"] == plans["pool.csv"] and len(plans["pool.csv"]) == 5
    keys = _chunk_keys(tmp_path / "ray")
    assert len(keys) == len(set(keys)) == 40  # the CSV run found every text stored and probed none
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "pool.jsonl"), "--labels", "A,B", "--budget", "1", "--backend", "ray",
                 "--actors", "0"]) == 2
    assert "--actors" in capsys.readouterr().err


def test_read_pool_errors(cluster, tmp_path):
    from neuroshot.distributed import read_pool

    with pytest.raises(NeuroshotError, match="format"):
        read_pool(tmp_path / "pool.txt")
    (tmp_path / "pool.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(NeuroshotError, match="no 'text' column"):
        read_pool(tmp_path / "pool.jsonl")
