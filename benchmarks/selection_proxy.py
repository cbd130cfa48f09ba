"""A fast, model-free proxy for choosing selection settings on a validation slice (never the test split).

Each strategy plans from the pool with a validation slice held out as queries, each retriever
picks k of the planned (now labeled) items per query, and the proxy is the share of retrieved
demonstrations that carry the query's gold label. No label scoring runs, so a grid takes minutes
once the probes are in the store shared with quality.py.

    .venv/bin/python benchmarks/selection_proxy.py --sets trec banking77_15 --budgets 18 50

Prints a markdown table per set (rows: strategy; columns: retriever x budget); writes no file.
Method and results: benchmarks/README.md, section "Choosing settings on validation: selection_proxy.py".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_sets import DEFAULT_DATA, SETS, STORE, load_shared_set  # noqa: E402

STRATEGIES = ["random", "neuron_coverage", 'neuron_coverage:{"uncertainty_weight": 0.3, "influence_weight": 0.3}',
              'neuron_coverage:{"balance": true}', "neufs", "fast_votek", "kmeans", "ideal"]
RETRIEVERS = ["neuron", 'neuron:{"standardize": false}', "embedding"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sets", nargs="+", default=["trec", "banking77_15", "cuad_clause_types_top10", "medical_abstracts"],
                   choices=SETS, metavar="SET")
    p.add_argument("--strategies", nargs="+", default=STRATEGIES, metavar="NAME[:JSON]",
                   help="strategy names, optionally with parameters as JSON after a colon")
    p.add_argument("--retrievers", nargs="+", default=RETRIEVERS, metavar="NAME[:JSON]")
    p.add_argument("--budgets", nargs="+", type=int, default=[18, 50])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--validation", type=int, default=150, help="pool items held out as the queries")
    p.add_argument("--pool-size", type=int, default=600)
    p.add_argument("--model", default="default")
    p.add_argument("--store", type=Path, default=STORE, help="signature store (default: the quality benchmark's)")
    p.add_argument("--probe", type=json.loads, default={}, metavar="JSON",
                   help="probe settings, e.g. '{\"critical_fraction\": 0.05}' or '{\"method\": \"grad_x_act\"}'")
    return p.parse_args(argv)


def named(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``'name:{"param": value}'`` -> (name, params)."""
    name, _, params = spec.partition(":")
    return name, json.loads(params) if params else {}


def run_set(lm, name: str, args: argparse.Namespace) -> list[str]:
    from neuroshot.embeddings import with_embeddings
    from neuroshot.probing import probe
    from neuroshot.retrieval import get_retriever
    from neuroshot.strategies import get_strategy

    data = load_shared_set(name, args.data, pool_size=args.pool_size, validation=args.validation)
    labels = list(data.task.labels)
    kw = dict(store=args.store, progress=False, **args.probe)
    pool = with_embeddings(probe(lm, data.task, [r.text for r in data.pool], ids=[r.id for r in data.pool], **kw))
    queries = with_embeddings(probe(lm, data.task, [r.text for r in data.test], ids=[r.id for r in data.test], **kw))
    gold = np.array([labels.index(r.label) for r in data.test])
    pool_labels = [r.label for r in data.pool]  # plays the annotator: read only for planned items
    header = " | ".join(f"{r} B={b}" for r in args.retrievers for b in args.budgets)
    touched = float((pool.critical.restrict(pool.signatures) != 0).mean())  # share of the pool per critical neuron
    probed = f"; probe {json.dumps(args.probe)}" if args.probe else ""
    lines = [f"### {name} ({len(labels)} labels; pool {len(pool)}, {len(queries)} validation queries, k={args.k}{probed}, "
             f"seeds {args.seeds}; the average critical neuron is in {touched:.0%} of the pool's signatures)", "",
             f"| strategy | {header} |", "|---|" + "---:|" * (len(args.retrievers) * len(args.budgets))]
    for spec in args.strategies:
        s_name, s_params = named(spec)
        scores: dict[tuple[str, int], list[float]] = {}
        distinct: dict[int, list[int]] = {}
        for budget in args.budgets:
            for seed in args.seeds:
                planned = get_strategy(s_name, **s_params).plan(pool, budget, seed=seed).indices
                planned_labels = [pool_labels[i] for i in planned]
                distinct.setdefault(budget, []).append(len(set(planned_labels)))
                for r_spec in args.retrievers:
                    r_name, r_params = named(r_spec)
                    params = {**r_params, **({"seed": seed} if r_name == "random" else {})}
                    chosen = get_retriever(r_name, **params).fit(pool.subset(planned), planned_labels).retrieve(
                        queries, args.k)
                    # the proxy: the share of the k retrieved demonstrations per query with the query's gold label
                    scores.setdefault((r_spec, budget), []).append(float(np.mean(
                        [[labels.index(r.label) == gold[q] for r in row] for q, row in enumerate(chosen)])))
        cells = [f"{np.mean(scores[r, b]):.3f} ({np.mean(distinct[b]):.0f})" for r in args.retrievers for b in args.budgets]
        lines.append(f"| `{spec}` | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    from neuroshot import load_model

    lm = load_model(args.model)
    t0 = time.perf_counter()
    out = []
    for name in args.sets:
        out += run_set(lm, name, args)
    print("\n".join(out))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
