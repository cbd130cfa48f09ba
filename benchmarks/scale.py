"""Planning at scale: ``neuron_coverage`` on 10^4-10^6 synthetic signatures, exact vs approximate neighbours.

Each cell times one plan (neighbour graph and greedy separately) and its peak memory in a fresh
process. ``--probe-throughput N`` instead times probing ``N`` trec texts locally and on Ray;
``--agreement SET ...`` compares the recommended plan with exact and approximate neighbours on
real pools. Run from the repository root::

    .venv/bin/python benchmarks/scale.py --sizes 10000 100000 1000000
    .venv/bin/python benchmarks/scale.py --probe-throughput 512
    .venv/bin/python benchmarks/scale.py --probe-throughput 10000 --probe-ways local:2
    .venv/bin/python benchmarks/scale.py --agreement trec sst2 --pool-size 3000

Finished cells are appended to ``benchmarks/results/scale.jsonl``, ``scale_probe.jsonl`` and
``scale_agreement.jsonl`` (a rerun skips them); the summary replaces the scale section of
``benchmarks/README.md``. Method and results: benchmarks/README.md, section "Planning at scale:
scale.py" and its subsection "How scale.py measures".
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, cell_key, provenance, read_results, run_child, update_section  # noqa: E402
from shared_sets import DEFAULT_DATA, DEFAULT_README, REPO, STORE, load_shared_set  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "scale.jsonl"
PROBE_OUT = REPO / "benchmarks" / "results" / "scale_probe.jsonl"
PROBE_KEY = ("n", "backend", "workers", "set")
AGREE_OUT = REPO / "benchmarks" / "results" / "scale_agreement.jsonl"
AGREE_KEY = ("set", "pool_size", "neighbours", "budget", "seed")
KEY = ("n", "neighbours", "n_neighbors", "budget", "critical", "clusters", "seed")
N_LAYERS, D_FF = 30, 1536


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    p.add_argument("--neighbours", nargs="+", default=["auto"], choices=["auto", "exact", "hnsw", "ivf"],
                   help="neighbour search per cell (auto: exact up to 20k items, IVF above)")
    p.add_argument("--compare-up-to", type=int, default=10_000,
                   help="also run exact, hnsw and ivf at sizes up to this, to compare their picks")
    p.add_argument("--n-neighbors", type=int, default=100, help="neighbours per item in the coverage graph")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--critical", type=int, default=460, help="task-critical neurons")
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--readme", type=Path, default=DEFAULT_README)
    p.add_argument("--probe-throughput", type=int, metavar="N",
                   help="instead: probe N trec texts locally (1, 2 threads) and on Ray (1, 2 actors); beyond the "
                        "pool's 3,000 texts the pool is cycled, later rounds marked")
    p.add_argument("--probe-ways", nargs="+", default=["local:1", "local:2", "ray:1", "ray:2"], metavar="BACKEND:N",
                   help="with --probe-throughput: which backends and thread / actor counts to run")
    p.add_argument("--agreement", nargs="+", metavar="SET", default=[],
                   help="on these shared sets' real pools, the recommended plan with approximate neighbours "
                        "against exact ones (share of picks kept)")
    p.add_argument("--pool-size", type=int, default=600, help="--agreement: pool sample per set, as head_to_head.py")
    p.add_argument("--agreement-budgets", nargs="+", type=int, default=[18, 50, 100])
    p.add_argument("--data", type=Path, default=None, help="the shared data folder (default: ../shared/data)")
    p.add_argument("--summarize", action="store_true", help="only rewrite the summary")
    p.add_argument("--child", type=str, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def synthetic_pool(n: int, critical: int, clusters: int, seed: int, chunk: int = 50_000):
    """A :class:`~neuroshot.probing.ProbeResult` of ``n`` items whose signatures live on ``critical`` neurons."""
    from scipy import sparse

    from neuroshot.probing import ProbeResult, critical_neurons, item_scores
    from neuroshot.signatures import Signatures
    from neuroshot.task import Task

    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(N_LAYERS * D_FF, critical, replace=False)).astype(np.int32)
    patterns = rng.random((clusters, critical)) < 0.15  # the neurons each latent group uses
    group = rng.integers(0, clusters, n)
    indptr, neurons, values = [np.zeros(1, dtype=np.int64)], [], []
    for start in range(0, n, chunk):
        g = group[start:start + chunk]
        p = np.where(patterns[g], 0.8, 0.06)
        mask = rng.random(p.shape) < p
        m = sparse.csr_matrix(np.where(mask, rng.gamma(2.0, 1.0, p.shape), 0.0).astype(np.float32))
        indptr.append(m.indptr[1:].astype(np.int64) + indptr[-1][-1])
        neurons.append(ids[m.indices])
        values.append(m.data)
    sig = Signatures(np.concatenate(indptr), np.concatenate(neurons), np.concatenate(values), N_LAYERS, D_FF)
    crit = critical_neurons(sig, fraction=critical / sig.n_neurons)
    task = Task(labels=tuple("ABCDE"), instruction="Pick {labels}.")
    probs = rng.dirichlet(np.ones(5), n).astype(np.float32)
    return ProbeResult([f"item {i}" for i in range(n)], task, probs, sig, crit, item_scores(probs, sig, crit))


def _child(spec: dict) -> dict:
    """One cell, in this (fresh) process: build the pool, then time the plan."""
    from neuroshot.strategies import coverage, get_strategy

    pool = synthetic_pool(spec["n"], spec["critical"], spec["clusters"], spec["seed"])
    timings = {}
    knn = coverage.knn

    def timed_knn(*a, **kw):
        t = time.perf_counter()
        out = knn(*a, **kw)
        timings.setdefault("graph_s", time.perf_counter() - t)  # the plan's call, not the exact-objective one
        return out

    coverage.knn = timed_knn
    logs = logging.handlers.BufferingHandler(capacity=10_000)  # keeps the log (the IVF search's tuned lists)
    logging.getLogger("neuroshot.neighbours").addHandler(logs)
    logging.getLogger("neuroshot.neighbours").setLevel(logging.INFO)
    strategy = get_strategy("neuron_coverage", n_neighbors=spec["n_neighbors"], neighbours=spec["neighbours"])
    t = time.perf_counter()
    plan = strategy.plan(pool, spec["budget"], seed=spec["seed"])
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    coverage_value = None
    if spec["n"] <= spec["exact_objective_up_to"]:  # the plan's objective on the exact graph, to compare plans
        graph = coverage._similarity_graph(coverage._centred_signatures(pool), spec["n_neighbors"], "exact")
        best = np.zeros(spec["n"])
        for c in plan.indices:
            coverage._cover(graph, c, best)
        coverage_value = float(best.mean())
    return {**spec, "seconds": seconds, "neighbour_s": timings.get("graph_s"), "peak_gib": peak,
            "coverage": coverage_value, "picks": plan.indices, "log": [r.getMessage() for r in logs.buffer[:1]]}


def _probe_child(spec: dict) -> dict:
    """One probe-throughput cell, in this (fresh) process."""
    import tempfile

    import torch

    from neuroshot import load_model
    from neuroshot.probing import probe

    data = load_shared_set(spec["set"], Path(spec["data"] or DEFAULT_DATA))
    # the pool cycled past its end; later rounds get a marker, as the store probes each distinct text once (a few
    # tokens longer, so a 10k run over-states the cost slightly)
    size = len(data.pool)
    texts = [data.pool[i % size].text + (f" ({i // size})" if i >= size else "") for i in range(spec["n"])]
    local = spec["backend"] == "local"
    torch.set_num_threads(spec["workers"] if local else 1)
    lm = load_model("default")
    if not local:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    with tempfile.TemporaryDirectory() as store:
        t = time.perf_counter()
        probe(lm, data.task, texts, store=store, progress=False, backend=spec["backend"],
              **({} if local else {"actors": spec["workers"]}))
        seconds = time.perf_counter() - t
        steady = _steady_rate(Path(store), spec["workers"])
    return {**spec, "seconds": seconds, "items_per_s": spec["n"] / seconds, "steady_items_per_s": steady}


def _steady_rate(store: Path, workers: int) -> float | None:
    """Items/s once every worker is going: the items of the chunks written after the first ``workers``
    chunks, over the time from the ``workers``-th chunk to the last (chunk files' modification times)."""
    from safetensors import safe_open

    chunks = []
    for path in store.glob("*/chunk-*.safetensors"):
        with safe_open(str(path), framework="numpy") as fh:
            chunks.append((path.stat().st_mtime, len(json.loads(fh.metadata()["keys"]))))
    chunks.sort()
    if len(chunks) <= workers:
        return None
    span = chunks[-1][0] - chunks[workers - 1][0]
    return sum(n for _, n in chunks[workers:]) / span if span > 0 else None


def run_probe_throughput(args: argparse.Namespace) -> None:
    done = {cell_key(PROBE_KEY, r) for r in read_results(PROBE_OUT)}
    for backend, workers in _probe_ways(args.probe_ways):
        spec = dict(kind="probe", n=args.probe_throughput, backend=backend, workers=workers, set="trec",
                    data=str(args.data) if args.data else None)
        if cell_key(PROBE_KEY, spec) in done:
            continue
        row = _run_cell(spec, PROBE_OUT)
        print(f"probe {row['n']} texts, {backend} x{workers}: {row['seconds']:.1f} s "
              f"({row['items_per_s']:.2f} items/s)", flush=True)


def run_agreement(args: argparse.Namespace) -> None:
    """The recommended pipeline's plan with HNSW and IVF neighbours against its plan with exact ones, on
    real pools (probes from the head-to-head's store); identical picks mean identical accuracy."""
    from dataclasses import replace

    from neuroshot import load_model
    from neuroshot.experiment import Experiment
    from neuroshot.pipelines import get_pipeline

    done = {cell_key(AGREE_KEY, r) for r in read_results(AGREE_OUT)}
    lm, base = load_model("default"), get_pipeline("recommended")
    for name in args.agreement:
        data = load_shared_set(name, args.data or DEFAULT_DATA, pool_size=args.pool_size, test_size=300)
        pool = Experiment(lm, data.task, data.pool, data.test, probe_kwargs={"store": STORE}, progress=False).pool_probe

        def picks(method: str, budget: int, seed: int) -> list[int]:
            params = {**base.strategy_params, "neighbours": method}
            return list(replace(base, strategy_params=params).make_strategy().plan(pool, budget, seed=seed).indices)

        for budget in args.agreement_budgets:
            for seed in (0, 1, 2):
                exact = None
                for method in ("hnsw", "ivf"):
                    row = dict(set=name, pool_size=len(data.pool), neighbours=method, budget=budget, seed=seed)
                    if cell_key(AGREE_KEY, row) in done:
                        continue
                    exact = exact or picks("exact", budget, seed)
                    kept = len(set(exact) & set(picks(method, budget, seed))) / len(exact)
                    append_result(AGREE_OUT, {**row, "kept": kept, **provenance("benchmarks/scale.py")})
                    print(f"{name} pool {len(data.pool)} B={budget} seed {seed} {method}: {kept:.0%} of the exact "
                          "plan's picks kept", flush=True)


def summarize_agreement() -> list[str]:
    """Per set and method: the share of the exact plan's picks the approximate plan keeps (over budgets, seeds)."""
    rows = read_results(AGREE_OUT)
    if not rows:
        return []
    cells = defaultdict(list)
    for r in rows:
        cells[(r["set"], r["pool_size"], r["neighbours"])].append(r)
    lines = ["### Approximate against exact neighbours on real pools (the recommended plan)", "",
             "Share of the exact-neighbour plan's picks that the approximate plan keeps, over budgets "
             f"{sorted({r['budget'] for r in rows})} and seeds 0-2; identical plans mean identical accuracy.", "",
             "| set | pool | neighbours | picks kept (mean) | plans identical |", "|---|---:|---|---:|---:|"]
    for (name, size, method), rs in sorted(cells.items()):
        same = sum(r["kept"] == 1.0 for r in rs)
        lines.append(f"| {name} | {size} | {method} | {np.mean([r['kept'] for r in rs]):.1%} | {same} / {len(rs)} |")
    return [*lines, "", "```", *sorted({r["command"] for r in rows}), "```", ""]


def _probe_ways(ways: list[str]) -> list[tuple[str, int]]:
    """``["local:2", "ray:1"]`` -> ``[("local", 2), ("ray", 1)]``."""
    parsed = []
    for way in ways:
        backend, _, workers = way.partition(":")
        if backend not in ("local", "ray") or not workers.isdigit() or int(workers) < 1:
            raise SystemExit(f"--probe-ways: expected local:N or ray:N, got {way!r}")
        parsed.append((backend, int(workers)))
    return parsed


def _run_cell(spec: dict, path: Path) -> dict:
    """One cell in a fresh process (this script with ``--child``); its row, stamped, is appended to ``path``."""
    row = {**run_child(__file__, ["--child", json.dumps(spec)]), **provenance("benchmarks/scale.py"),
           "cpus": os.cpu_count()}
    append_result(path, row)
    return row


def summarize_probe() -> list[str]:
    """The probe-throughput table: items/s, per core, and the ratios the scale-out issue asks for."""
    rows = {(r["n"], r["backend"], r["workers"]): r for r in read_results(PROBE_OUT)}
    if not rows:
        return []
    lines = ["### Probing throughput (default model, trec texts)", "",
             "Wall: the whole `probe` call (actors started and models loaded included); steady: once every "
             "worker is going (chunks written after each worker's first, by the chunk files' times).", "",
             "| texts | backend | threads / actors | s | items/s (wall) | per core | items/s (steady) | per core |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (n, backend, workers), r in sorted(rows.items()):
        steady = r.get("steady_items_per_s")
        steady_cells = f"{steady:.2f} | {steady / workers:.2f}" if steady else "- | -"
        lines.append(f"| {n} | {backend} | {workers} | {r['seconds']:.1f} | {r['items_per_s']:.2f} | "
                     f"{r['items_per_s'] / workers:.2f} | {steady_cells} |")
    lines.append("")
    for n in sorted({k[0] for k in rows}):
        one, two, base = rows.get((n, "ray", 1)), rows.get((n, "ray", 2)), rows.get((n, "local", 1))
        for what, field in (("wall", "items_per_s"), ("steady", "steady_items_per_s")):
            if one and two and one.get(field) and two.get(field):
                lines.append(f"- {n} texts, {what}: 2 Ray actors / 1 actor = {two[field] / one[field]:.2f}x "
                             f"(goal >= 1.7x)")
            if two and base and two.get(field) and base.get(field):
                lines.append(f"- {n} texts, {what}: per core, Ray with 2 actors / local on 1 thread = "
                             f"{two[field] / 2 / base[field]:.2f} (goal: within 15%, 0.85-1.15)")
    lines += ["", *_capacity(rows)]
    commands = sorted({r["command"] for r in rows.values()})
    return [*lines, "", "```", *commands, "```", ""]


def _capacity(rows: dict) -> list[str]:
    """What probing 10^7 texts would take on a 16-node cluster, by the per-core rate measured with 2 Ray actors."""
    measured = [r for (n, backend, workers), r in sorted(rows.items()) if backend == "ray" and workers == 2]
    if not measured:
        return []
    rate = measured[-1]["items_per_s"] / 2
    lines = [f"Capacity, by the per-core rate of the largest Ray run above ({rate:.2f} short texts/s per core, "
             "model load included; one actor per core, no other cost assumed):", "",
             "| texts | nodes x cores per node | cores | hours |", "|---:|---|---:|---:|"]
    for n, nodes, cores in ((10**6, 1, 2), (10**6, 16, 16), (10**7, 16, 16), (10**7, 16, 64)):
        lines.append(f"| {n:,} | {nodes} x {cores} | {nodes * cores} | {n / (rate * nodes * cores) / 3600:.1f} |")
    lines += ["", "Longer texts cost more per item: the scale-out issue measured about 72 s per 1,000 short "
              "texts and 330 s per 1,000 contract clauses on this machine (not remeasured here), so scale these "
              "hours by the ratio of your texts' length to trec's."]
    return lines


def run(args: argparse.Namespace) -> None:
    done = {cell_key(KEY, r) for r in read_results(args.out)}
    for n in args.sizes:
        methods = ["exact", "hnsw", "ivf"] if n <= args.compare_up_to else args.neighbours
        for method in methods:
            spec = dict(n=n, neighbours=method, n_neighbors=args.n_neighbors, budget=args.budget,
                        critical=args.critical, clusters=args.clusters, seed=args.seed,
                        exact_objective_up_to=args.compare_up_to)
            if cell_key(KEY, spec) in done:
                continue
            row = _run_cell(spec, args.out)
            print(f"n={n:>9,} {method:<6} plan {row['seconds']:7.1f} s (neighbours {_seconds(row['neighbour_s'])} s)"
                  f"  peak {row['peak_gib']:.2f} GiB", flush=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summarize(args: argparse.Namespace) -> str:
    rows = read_results(args.out)
    lines = ["| items | neighbours | k | budget | plan s | of which neighbour graph s | peak GiB (incl. the pool) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["n"], r["neighbours"], r["n_neighbors"])):
        lines.append(f"| {r['n']:,} | {r['neighbours']} | {r['n_neighbors']} | {r['budget']} | {r['seconds']:.1f} | "
                     f"{_seconds(r['neighbour_s'])} | {r['peak_gib']:.2f} |")
    notes = [f"- {r['n']:,} items, {r['neighbours']}: {'; '.join(filter(None, [*r.get('log', []), r.get('note')]))}"
             for r in rows if r.get("note") or r.get("log")]
    same = []
    by_key = {(r["n"], r["n_neighbors"], r["budget"], r["neighbours"]): r for r in rows}
    for (n, k, b, method), r in sorted(by_key.items()):
        for approx in ("hnsw", "ivf"):
            other = by_key.get((n, k, b, approx))
            if method != "exact" or not other:
                continue
            shared = len(set(r["picks"]) & set(other["picks"])) / len(r["picks"])
            value = (f"; coverage objective on the exact graph {r['coverage']:.4f} (exact plan) vs "
                     f"{other['coverage']:.4f} ({approx})") if r.get("coverage") and other.get("coverage") else ""
            same.append(f"- {n:,} items, k = {k}, budget {b}: {shared:.0%} of the exact plan's picks are in the "
                        f"{approx} plan{value}")
    commands = sorted({r["command"] for r in rows})
    return "\n".join(["### Results", "", *lines, "", *notes, *(same or ["- no size run both ways yet"]), "",
                      f"Machine: {rows[0]['cpus'] if rows else '?'} CPUs. Commands:", "", "```", *commands, "```", "",
                      *summarize_agreement(), *summarize_probe()])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_probe_child(spec) if spec.get("kind") == "probe" else _child(spec)))
        return
    if args.agreement and not args.summarize:
        run_agreement(args)
    elif args.probe_throughput and not args.summarize:
        run_probe_throughput(args)
    elif not args.summarize:
        run(args)
    text = summarize(args)
    intro = ("`neuron_coverage` planning on synthetic signatures of 10^4-10^6 items (the shape of what a plan "
             "reads from a probe: 460 critical neurons over 30 layers x 1536), exact neighbours against FAISS HNSW "
             "and IVF ones, each cell in a fresh process (see 'How `scale.py` measures' below). "
             "`--agreement SET ...` compares the recommended pipeline's plans with exact and approximate neighbours "
             "on real pools.")
    update_section(args.readme, "scale", f"## Planning at scale: `scale.py`\n\n{intro}\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
