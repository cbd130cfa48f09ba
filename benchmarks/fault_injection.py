"""Fault injection: each long job killed with SIGKILL at seeded points, resumed, and compared with an
uninterrupted run.

Jobs (each on a tiny random-weight LLaMA saved to a folder, so a run takes a second or two; the
mechanics, not the model, are under test):

- ``probe``: ``probe(..., store=...)`` into a signature store;
- ``plan``: ``neuroshot plan`` (probe + neufs) writing its plan file;
- ``evaluate``: ``neuroshot evaluate`` writing its records after every run;
- ``annotate``: ``neuroshot annotate`` appending to its label log, answers fed on stdin;
- ``ray``: ``probe(..., backend="ray")`` with 2 actors on a local Ray cluster.

A trial starts the job, kills it (SIGKILL) after a seeded random delay drawn from [0, T] (T: the
uninterrupted run's time), resumes it, up to ``--chain`` kills in a row, then runs it to the end and
compares the final outputs with those of the uninterrupted run: stores array-equal (every key,
every array, bit for bit), plan files byte-identical, evaluation records identical but for their
``seconds`` timings, label logs with the same (id, label) lines in the same order. It also counts
the work redone beyond what was unsaved at the kill: stored items probed again, labels asked again.

The jobs but Ray run in processes forked by a multiprocessing fork server that has torch and
neuroshot imported (a fresh interpreter costs ~7 s here) and never runs torch itself; Ray needs a
fresh interpreter, so its driver is a subprocess (killed with its process group).

``--concurrent N`` adds N trials of two processes at once on one store: a probe and a
``neuroshot plan`` of the same pool, started together; the store must equal the single-process
one, the plan file too, and no item may be computed twice.

Usage:
    python benchmarks/fault_injection.py                      # the full run (~15 min on 2 busy cores)
    python benchmarks/fault_injection.py --points probe=2 annotate=2 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

LABELS = ("A", "B", "C")
PROBE_SETTINGS = ["--top-k", "8", "--batch-size", "4"]
DEFAULT_POINTS = {"probe": 85, "plan": 25, "evaluate": 20, "annotate": 70, "ray": 3}


# --------------------------------------------------------------------------- the inputs


def make_inputs(base: Path, pool_size: int = 240) -> Path:
    """The tiny model folder, a pool, a labelled pool, a test set and a plan to annotate, under ``base``."""
    import torch
    from conftest import TINY_LLAMA, build_char_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the tests' tiny LLaMA with room for demonstrations in its context
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "max_position_embeddings": 2048})).save_pretrained(base / "model")
    build_char_tokenizer().save_pretrained(base / "model")
    rng = random.Random(0)
    words = "the a cat dog sat ran on under mat rug fast slow red blue big small today again".split()

    def text(i: int) -> str:
        return f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))

    pool = [{"id": f"p{i}", "text": text(i), "label": LABELS[i % 3]} for i in range(pool_size)]
    _write_jsonl(base / "pool.jsonl", [{"id": r["id"], "text": r["text"]} for r in pool])
    _write_jsonl(base / "labelled.jsonl", pool[:40])
    _write_jsonl(base / "test.jsonl", [{"id": f"t{i}", "text": text(i), "label": LABELS[i % 3]} for i in range(24)])
    _write_jsonl(base / "to_label.jsonl", [{"id": r["id"], "text": r["text"], "rank": n + 1, "why": ""}
                                          for n, r in enumerate(pool[:80])])
    return base


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# --------------------------------------------------------------------------- the jobs


@dataclass
class Job:
    """A long job: ``run(base, work)`` in the child; ``output(work)`` the final outputs to compare."""

    name: str
    run: Callable[[Path, Path], None]
    output: Callable[[Path], dict]
    stdin: Callable[[Path, Path], bytes] | None = None  # what the harness types, given the state so far
    fresh_interpreter: bool = False


def _probe_run(base: Path, work: Path, backend: str = "local") -> None:
    from neuroshot import load_model
    from neuroshot.data import load_records
    from neuroshot.probing import probe
    from neuroshot.task import Task

    texts = [r.text for r in load_records(base / "pool.jsonl", label_field=None)]
    kw = dict(backend="ray", actors=2, batch_size=1) if backend == "ray" else dict(batch_size=4)
    probe(load_model(str(base / "model")), Task(labels=LABELS), texts, top_k=8, chunk_size=8, progress=False,
          store=work / "store", **kw)


def _ray_run(base: Path, work: Path) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    _probe_run(base, work, backend="ray")


def _cli(*argv: str | Path) -> None:
    from neuroshot.cli import main

    code = main([str(a) for a in argv])
    if code:
        raise SystemExit(code)


def _plan_run(base: Path, work: Path) -> None:
    _cli("plan", base / "pool.jsonl", "--model", base / "model", "--labels", ",".join(LABELS), "--budget", 12,
         "--strategy", "neufs", "--out", work / "plan.jsonl", "--store", work / "store", *PROBE_SETTINGS)


def _evaluate_run(base: Path, work: Path) -> None:
    _cli("evaluate", "--pool", base / "labelled.jsonl", "--test", base / "test.jsonl", "--model", base / "model",
         "--strategy", "random", "--strategy", "neufs", "--budget", 4, "--budget", 8, "--seeds", 0, 1,
         "--out", work / "results.jsonl", "--store", work / "store", *PROBE_SETTINGS)


def _annotate_run(base: Path, work: Path) -> None:
    _cli("annotate", base / "to_label.jsonl", "--labels", ",".join(LABELS), "--out", work / "labels.jsonl")


def _answers(base: Path, work: Path) -> bytes:
    """The answers to the items not yet in the log, in rank order (what an annotator would type)."""
    from neuroshot.annotation import AnnotationLog

    done = AnnotationLog(work / "labels.jsonl", LABELS) if (work / "labels.jsonl").exists() else {}
    items = [json.loads(line) for line in (base / "to_label.jsonl").read_text().splitlines()]
    return "".join(f"{1 + int(it['id'][1:]) % 3}\n" for it in items if it["id"] not in done).encode()


def store_items(store: Path) -> dict[str, tuple[np.ndarray, ...]]:
    """Every item of every chunk of the store folder(s) under ``store`` (raises if a key is stored twice
    with different arrays)."""
    from neuroshot.store import _read_chunk

    items: dict[str, tuple[np.ndarray, ...]] = {}
    for chunk in sorted(store.glob("*/chunk-*.safetensors")):
        for key, item in _read_chunk(chunk).items():
            arrays = (item.neurons, item.values, item.label_scores)
            if key in items and not all(np.array_equal(a, b) for a, b in zip(items[key], arrays)):
                raise AssertionError(f"key {key} stored twice with different values")
            items[key] = arrays
    return items


def chunk_keys(store: Path, chunks: set[Path] | None = None) -> list[str]:
    """The keys of the given chunks (default: all), a key stored twice counted twice."""
    from safetensors import safe_open

    keys = []
    for chunk in chunks if chunks is not None else set(store.glob("*/chunk-*.safetensors")):
        with safe_open(str(chunk), framework="numpy") as fh:
            keys += json.loads(fh.metadata()["keys"])
    return keys


def _store_output(work: Path) -> dict:
    return {"store": store_items(work / "store")}


def _records_output(work: Path) -> dict:
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    return {"records": [{k: v for k, v in row.items() if k != "seconds"} for row in rows],
            "store": store_items(work / "store")}


def _labels_output(work: Path) -> dict:
    lines = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    return {"lines": [(e["id"], e["label"]) for e in lines]}


JOBS = {job.name: job for job in [
    Job("probe", _probe_run, _store_output),
    Job("plan", _plan_run, lambda work: {"plan": (work / "plan.jsonl").read_bytes(), **_store_output(work)}),
    Job("evaluate", _evaluate_run, _records_output),
    Job("annotate", _annotate_run, _labels_output, stdin=_answers),
    Job("ray", _ray_run, _store_output, fresh_interpreter=True),
]}


def same(a, b) -> bool:
    """Outputs equal: dicts and lists item by item, arrays bit for bit, the rest by ``==``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype \
            and np.array_equal(a, b)
    return a == b


# --------------------------------------------------------------------------- running and killing


@dataclass
class Child:
    """A running job: a process of the fork server, or a subprocess leading its own process group (Ray)."""

    process: multiprocessing.Process | subprocess.Popen
    log: Path

    def poll(self) -> int | None:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll()
        return self.process.exitcode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the job did not finish in {timeout:.0f} s (log: {self.log})")
            time.sleep(0.01)
        return code

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        if isinstance(self.process, subprocess.Popen):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        else:
            self.process.kill()
            self.process.join()


_PRELOAD = ["neuroshot.annotation", "neuroshot.cli", "neuroshot.data", "neuroshot.experiment", "neuroshot.pipelines",
            "neuroshot.probing", "neuroshot.strategies", "transformers.models.llama.modeling_llama"]
_SERVER: list = []


def _fork_server():
    """A multiprocessing fork server with what the jobs run imported: each job starts in a fresh fork of a
    process that never ran torch (forking one that has can hang the child), without a new interpreter's
    ~7 s start-up."""
    if not _SERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        _SERVER.append(context)
    return _SERVER[0]


def _warm_up() -> None:
    """Start the fork server (and its imports) now, so that no job's timing includes them."""
    process = _fork_server().Process(target=_noop)
    process.start()
    process.join()


def _noop() -> None:
    pass


def _child_main(name: str, base: str, work: str) -> None:
    """In the fork: stdin from ``work/.stdin``, stdout and stderr to ``work/job.log``, then the job."""
    code = 1
    try:
        stdin = Path(work) / ".stdin"
        os.dup2(os.open(stdin if stdin.exists() else os.devnull, os.O_RDONLY), 0)
        out = os.open(Path(work) / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        import torch

        torch.set_num_threads(1)  # tiny model: threads only contend
        JOBS[name].run(Path(base), Path(work))
        code = 0
    except BaseException:  # noqa: BLE001 - reported in the log, the exit code says it failed
        traceback.print_exc()
    finally:
        os._exit(code)


def start(job: Job, base: Path, work: Path) -> Child:
    """Start ``job`` in a child process writing into ``work``; its output goes to ``work/job.log``."""
    log = work / "job.log"
    if job.fresh_interpreter:
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, __file__, "--child", job.name, str(base), str(work)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        return Child(proc, log)
    (work / ".stdin").write_bytes(job.stdin(base, work) if job.stdin else b"")
    process = _fork_server().Process(target=_child_main, args=(job.name, str(base), str(work)), daemon=True)
    process.start()
    return Child(process, log)


def run_to_end(job: Job, base: Path, work: Path, timeout: float = 600) -> float:
    """Run ``job`` uninterrupted; its wall time in seconds."""
    t0 = time.perf_counter()
    child = start(job, base, work)
    code = child.wait(timeout)
    if code != 0:
        raise RuntimeError(f"{job.name} failed with exit code {code}:\n{child.log.read_text()[-3000:]}")
    return time.perf_counter() - t0


@dataclass
class Trial:
    """One trial: the kills it took, whether the final output equals the uninterrupted run's, the work redone."""

    job: str
    delays: list[float] = field(default_factory=list)
    kills: int = 0
    identical: bool = False
    redone: int = 0
    cells_redone: int = 0  # evaluate: runs finished before a kill and run again by the resumed command
    note: str = ""


def redone_work(job: Job, work: Path, before: dict) -> int:
    """Work done again after a kill that was already saved before it: stored items probed again
    (keys of new chunks already in old ones), or labels asked again (a log line repeated)."""
    if (work / "store").exists():
        new = set((work / "store").glob("*/chunk-*.safetensors")) - before["chunks"]
        return len(set(chunk_keys(work / "store", new)) & before["keys"])
    if job.name == "annotate":
        ids = [i for i, _ in _labels_output(work)["lines"]] if (work / "labels.jsonl").exists() else []
        return len(ids) - len(set(ids))
    return 0


def _state(work: Path) -> dict:
    chunks = set((work / "store").glob("*/chunk-*.safetensors"))
    return {"chunks": chunks, "keys": set(chunk_keys(work / "store", chunks)) if chunks else set()}


def trial(job: Job, base: Path, work: Path, reference: dict, duration: float, rng: random.Random,
          chain: int) -> Trial:
    """Kill ``job`` up to ``chain`` times at random delays in [0, duration], finish it, compare."""
    result = Trial(job.name)
    for _ in range(rng.randint(1, chain)):
        delay = rng.uniform(0, duration)
        before = _state(work)
        child = start(job, base, work)
        time.sleep(delay)
        if child.poll() is not None:  # it finished first: no kill point
            break
        child.kill()
        result.kills += 1
        result.delays.append(round(delay, 3))
        if job.fresh_interpreter:
            time.sleep(2)  # Ray's own processes notice their driver is gone
        result.redone += redone_work(job, work, before)
        if (work / "results.jsonl").exists():
            result.cells_redone += len((work / "results.jsonl").read_text().splitlines())
    before = _state(work)
    run_to_end(job, base, work)
    result.redone += redone_work(job, work, before)
    try:
        result.identical = same(job.output(work), reference)
    except Exception as exc:  # noqa: BLE001 - a damaged output is a failed trial, reported
        result.note = f"{type(exc).__name__}: {exc}"
    return result


def concurrent_trial(base: Path, work: Path, reference: dict, rng: random.Random) -> Trial:
    """A probe and a ``neuroshot plan`` of the same pool into one store, started together."""
    result = Trial("concurrent probe + plan")
    children = [start(JOBS["probe"], base, work)]
    time.sleep(rng.uniform(0, 0.5))
    children.append(start(JOBS["plan"], base, work))
    codes = [child.wait(600) for child in children]
    keys = chunk_keys(work / "store")
    result.redone = len(keys) - len(set(keys))
    result.identical = codes == [0, 0] and same(JOBS["plan"].output(work), reference)
    return result


# --------------------------------------------------------------------------- the benchmark


def _reference(job: Job, base: Path, work: Path, runs: int = 2) -> tuple[float, dict]:
    """The uninterrupted run's outputs and time T (the fastest of ``runs``: on a busy machine one run
    can take several times another, and kills drawn beyond the job's end are lost)."""
    times = []
    for n in range(runs):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        times.append(run_to_end(job, base, work))
    return min(times), job.output(work)


def run(points: dict[str, int], seed: int = 0, chain: int = 3, concurrent: int = 0, pool_size: int = 240,
        workdir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Run ``points[job]`` kill points per job (at least; a trial may add a few), and ``concurrent``
    concurrent-writer trials; returns the summary and every trial."""
    rng = random.Random(seed)
    _warm_up()
    with tempfile.TemporaryDirectory(prefix="fault-", dir=workdir) as tmp:
        base = make_inputs(Path(tmp) / "inputs", pool_size)
        summary, trials = {}, []
        for name, wanted in points.items():
            job = JOBS[name]
            duration, reference = _reference(job, base, Path(tmp) / f"{name}-reference")
            kills, n = 0, 0
            t0 = time.perf_counter()
            while kills < wanted:
                work = Path(tmp) / f"{name}-{n}"
                work.mkdir()
                # one kill per Ray trial: each of its runs starts a cluster and actors (most of a minute)
                t = trial(job, base, work, reference, duration, rng, 1 if name == "ray" else chain)
                trials.append(t)
                kills += t.kills
                n += 1
                if not t.identical:
                    log(f"  {name} trial {n}: output DIFFERS ({t.note}); kept in {work}")
                    shutil.copytree(work, Path(tempfile.mkdtemp(prefix=f"fault-{name}-")), dirs_exist_ok=True)
                else:
                    shutil.rmtree(work)
            mine = [t for t in trials if t.job == name]
            summary[name] = {"kill_points": kills, "trials": len(mine),
                             "identical": sum(t.identical for t in mine), "redone_beyond_unsaved": sum(t.redone for t in mine),
                             **({"cells_redone": sum(t.cells_redone for t in mine)} if name == "evaluate" else {}),
                             "uninterrupted_s": round(duration, 2), "seconds": round(time.perf_counter() - t0, 1)}
            log(f"{name}: {summary[name]}")
        if concurrent:
            reference = _reference(JOBS["plan"], base, Path(tmp) / "concurrent-reference", runs=1)[1]
            mine = []
            for n in range(concurrent):
                work = Path(tmp) / f"concurrent-{n}"
                work.mkdir()
                mine.append(concurrent_trial(base, work, reference, rng))
            trials += mine
            summary["concurrent probe + plan"] = {"trials": len(mine), "identical": sum(t.identical for t in mine),
                                                  "items_computed_twice": sum(t.redone for t in mine)}
            log(f"concurrent: {summary['concurrent probe + plan']}")
    total = {"kill_points": sum(s.get("kill_points", 0) for s in summary.values()),
             "trials": sum(s["trials"] for s in summary.values()),
             "identical": sum(s["identical"] for s in summary.values())}
    return {"total": total, "jobs": summary, "trials": [t.__dict__ for t in trials]}


def _points(values: list[str]) -> dict[str, int]:
    points = {}
    for value in values:
        name, _, n = value.partition("=")
        if name not in JOBS or not n.isdigit():
            raise SystemExit(f"--points expects JOB=N with JOB one of {', '.join(JOBS)}, got {value!r}")
        points[name] = int(n)
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", metavar="JOB=N",
                        default=[f"{k}={v}" for k, v in DEFAULT_POINTS.items()], help="kill points per job")
    parser.add_argument("--concurrent", type=int, default=6, help="concurrent-writer trials")
    parser.add_argument("--chain", type=int, default=3, help="at most this many kills in a row per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fault_injection.json")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", nargs=3, metavar=("JOB", "BASE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # a job in a fresh interpreter (Ray; the tests' concurrent writers)
        import torch

        torch.set_num_threads(1)  # tiny model: threads only contend
        name, base, work = args.child
        JOBS[name].run(Path(base), Path(work))
        return 0
    from _results import provenance, write_json

    t0 = time.perf_counter()
    results = run(_points(args.points), seed=args.seed, chain=args.chain, concurrent=args.concurrent)
    results = {**provenance("benchmarks/fault_injection.py", argv), "seconds": round(time.perf_counter() - t0),
               "seed": args.seed, **results}
    print(json.dumps({k: v for k, v in results.items() if k != "trials"}, indent=1))
    if not args.no_write:
        write_json(args.out, results)
        print(f"wrote {args.out}")
    return 0 if results["total"]["identical"] == results["total"]["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
