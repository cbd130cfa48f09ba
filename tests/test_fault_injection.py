"""Interrupted and concurrent jobs, on the tiny random LLaMA saved to a folder (the mechanics only).

A short seeded run of ``benchmarks/fault_injection.py`` (jobs SIGKILLed at random points, resumed,
compared with an uninterrupted run), and two real interpreters probing one pool into one store at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fault_injection as fi  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks and SIGKILLs processes")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return fi.make_inputs(tmp_path_factory.mktemp("fault") / "inputs", pool_size=120)


def test_jobs_killed_at_seeded_points_resume_to_the_uninterrupted_outputs(tmp_path):
    """A probe into a store and an annotation session, each killed with SIGKILL at random points
    (up to 2 kills in a row), resumed: the same store bit for bit / the same label lines, nothing
    saved before a kill done again."""
    results = fi.run({"probe": 3, "annotate": 3}, seed=1, chain=2, pool_size=120, workdir=tmp_path, log=lambda line: None)
    for name in ("probe", "annotate"):
        job = results["jobs"][name]
        assert job["kill_points"] >= 3 and job["identical"] == job["trials"], job
        assert job["redone_beyond_unsaved"] == 0, job
    assert all(t["kills"] == len(t["delays"]) for t in results["trials"])


def test_same_detects_a_changed_output():
    """The comparison the harness relies on can fail: one flipped value, one changed line."""
    import numpy as np

    a = {"store": {"k": (np.array([1, 2], dtype=np.int32), np.array([0.5], dtype=np.float32))}}
    b = {"store": {"k": (np.array([1, 2], dtype=np.int32), np.array([0.5000001], dtype=np.float32))}}
    assert fi.same(a, a) and not fi.same(a, b)
    assert not fi.same({"lines": [("p1", "A")]}, {"lines": [("p1", "B")]})
    assert not fi.same({"store": {"k": a["store"]["k"]}}, {"store": {}})


def test_two_processes_probing_one_store_at_once_make_the_single_process_store(inputs, tmp_path, single_thread):
    """Two interpreters probe the same pool into the same store at the same time: both finish, every
    item is stored once (the writer lock: the second waits, then reads), and the store is array-equal
    to the one a single process makes."""
    shared = tmp_path / "shared"
    shared.mkdir()
    procs = [subprocess.Popen([sys.executable, fi.__file__, "--child", "probe", str(inputs), str(shared)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    alone = tmp_path / "alone"
    fi._probe_run(inputs, alone)  # meanwhile, the reference in this process
    errors = [proc.communicate(timeout=300)[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    keys = fi.chunk_keys(shared / "store")
    assert len(keys) == len(set(keys)) == 120  # no item computed twice, none lost
    assert fi.same(fi.store_items(shared / "store"), fi.store_items(alone / "store"))


def test_plan_names_a_damaged_chunk_and_recomputes_it_on_request(inputs, tmp_path, capsys, single_thread):
    """`neuroshot plan` over a store with a flipped byte: exit 2 with one line naming the chunk; with
    --on-damage recompute the same plan as from the intact store."""
    from neuroshot.cli import main

    argv = ["plan", str(inputs / "pool.jsonl"), "--model", str(inputs / "model"), "--labels", "A,B,C",
            "--budget", "3", "--strategy", "random", "--store", str(tmp_path / "store"), *fi.PROBE_SETTINGS]
    assert main([*argv, "--out", str(tmp_path / "first.jsonl")]) == 0
    chunk = sorted((tmp_path / "store").glob("*/chunk-*.safetensors"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    chunk.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "second.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"signature store chunk {chunk} is damaged" in err and "--on-damage" in err
    assert not (tmp_path / "second.jsonl").exists()
    assert main([*argv, "--out", str(tmp_path / "second.jsonl"), "--on-damage", "recompute"]) == 0
    assert (tmp_path / "second.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
