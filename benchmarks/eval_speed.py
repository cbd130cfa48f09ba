"""Evaluation speed: neuroshot's scorers against naive full prompts and against the forward-pass limit.

Per data set and regime (static, per-query), times ``naive`` full prompts, ``reuse`` (what
``neuroshot evaluate`` runs: the shared prefix's KV cache reused) and ``limit`` (one plain batched
forward pass over the same distinct tokens), interleaved, and reports their ratios against the
issue's goals. Run from the repository root::

    .venv/bin/python benchmarks/eval_speed.py --sets trec sst2 cuad_clause_types_top10 --write-readme

It prints a Markdown table, writes ``benchmarks/results/eval_speed.json`` and, with
``--write-readme``, rewrites the eval_speed section of ``benchmarks/README.md``.
Method and results: benchmarks/README.md, section "Evaluation speed: eval_speed.py".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (HelpFormatter, environment, is_smoke, plain_args, report, require_positive,  # noqa: E402
                      timed_section)
from cost import linear_parameters, matmul_peak_gflops, timed_rounds  # noqa: E402
from shared_sets import DEFAULT_README, REPO, add_data_arg, read_set  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "eval_speed.json"
METHODS = {"static": ("naive", "reuse", "limit"), "per-query": ("reuse", "limit")}
GOAL = 3.0  # static: naive / reuse
LIMIT_GOAL = 0.8  # limit / reuse: the scorer at >= 0.8x the forward pass's tokens/s
FULL_DEFAULTS = {"n": 200, "repeats": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/eval_speed.py",
        description="Seconds to score N test items: neuroshot's static and per-query scorers against naive full "
                    "prompts and against a plain forward pass over the same distinct tokens. Writes "
                    "benchmarks/results/eval_speed.json.",
        epilog="examples (from the repository root):\n"
               "  full run, results into benchmarks/README.md:\n"
               "    .venv/bin/python benchmarks/eval_speed.py --sets trec sst2 cuad_clause_types_top10 --write-readme\n"
               "  quick smoke run:\n"
               "    .venv/bin/python benchmarks/eval_speed.py --n 32 --demos 8 --repeats 1",
        formatter_class=HelpFormatter)
    p.add_argument("--model", default="default", help="model spec for neuroshot.models.load_model")
    add_data_arg(p, "folder of data sets with card.json, pool.jsonl, test.jsonl (../shared/data when it exists)")
    p.add_argument("--sets", nargs="+", default=["trec"], help="data sets (sub-folders of --data)")
    p.add_argument("--regimes", nargs="+", choices=tuple(METHODS), default=list(METHODS), help="evaluation regimes")
    p.add_argument("--n", type=int, default=FULL_DEFAULTS["n"], help="test items (from the start of test.jsonl)")
    p.add_argument("--demos", type=int, nargs="+", default=[8, 16], metavar="B", help="static: demonstration counts")
    p.add_argument("--k", type=int, default=4, help="per-query: demonstrations per query")
    p.add_argument("--repeats", type=int, default=FULL_DEFAULTS["repeats"], help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=8, help="items in each untimed warm-up call")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of every method")
    p.add_argument("--max-text-tokens", type=int, default=128, help="texts truncated to this many tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the demonstration samples")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    p.add_argument("--write-readme", action="store_true", help="rewrite the eval_speed section of --readme")
    p.add_argument("--readme", type=Path, default=DEFAULT_README, help="README rewritten by --write-readme")
    args = p.parse_args(argv)
    require_positive(p, args, ("n", "repeats", "warmup", "batch_size", "max_text_tokens", "k"))
    if min(args.demos) < 0:
        p.error("--demos must be >= 0")
    return args


def load(args, name: str):
    """(task, test records, pool records) of one data set."""
    task, records = read_set(name, args.data, max_text_tokens=args.max_text_tokens)
    return task, records["test"][:args.n], records["pool"]


def distinct_tokens(lm, task, texts, demos_per_query, regime: str) -> tuple[list[int], list[list[int]]]:
    """(shared prefix, each prompt's own tokens): what the scorer must run at least once."""
    from neuroshot.evaluate import _common_prefix_length, _demo_groups, _encode_groups, shared_prefix

    if regime == "static":
        prompts = _encode_groups(lm, task, texts, [(tuple(demos_per_query[0]), list(range(len(texts))))], len(texts))[0]
        prefix, ok = shared_prefix(lm, task, demos_per_query[0], prompts)
        return prefix, [p[len(prefix):] if good else p for p, good in zip(prompts, ok)]
    prompts = _encode_groups(lm, task, texts, _demo_groups(demos_per_query).items(), len(texts))[0]
    shared = _common_prefix_length(prompts)
    return prompts[0][:shared], [p[shared:] for p in prompts]


def forward_limit(lm, prefix, suffixes, batch_size: int, max_batch_tokens: int = 8192) -> None:
    """A plain batched forward pass over ``prefix`` once and each suffix alone (the speed limit of scoring)."""
    import torch

    from neuroshot.scoring import batches, forward, pad_left

    with torch.no_grad():
        if prefix:
            ids = torch.tensor([list(prefix)], device=lm.device)
            forward(lm, ids, torch.ones_like(ids))
        for batch in batches([len(s) for s in suffixes], batch_size, max_batch_tokens):
            ids, mask = pad_left([suffixes[i] for i in batch], lm.tokenizer.pad_token_id, lm.device)
            forward(lm, ids, mask)


def run(method: str, regime: str, lm, task, texts, demos_per_query, tokens, args):
    from neuroshot.evaluate import predict_proba_per_query, predict_proba_static
    from neuroshot.scoring import predict_proba

    n = len(texts)
    if method == "limit":
        prefix, suffixes = tokens
        return forward_limit(lm, prefix, suffixes[:n], args.batch_size)
    if regime == "per-query":
        return predict_proba_per_query(lm, task, texts, demos_per_query[:n], batch_size=args.batch_size)
    if method == "naive":
        return predict_proba(lm, task, texts, demos_per_query[0], batch_size=args.batch_size)
    return predict_proba_static(lm, task, texts, demos_per_query[0], batch_size=args.batch_size)


def bench(lm, task, test, pool, regime: str, b: int, args, set_name: str) -> dict:
    import numpy as np

    from neuroshot.evaluate import metrics
    from neuroshot.task import Demonstration

    rng = np.random.default_rng(args.seed)
    texts, gold = [r.text for r in test], [r.label for r in test]

    def draw(size):
        return [Demonstration(pool[i].text, pool[i].label) for i in rng.choice(len(pool), size=size, replace=False)]

    demos_per_query = [draw(b)] * len(texts) if regime == "static" else [draw(b) for _ in texts]
    tokens = distinct_tokens(lm, task, texts, demos_per_query, regime)
    n_distinct = len(tokens[0]) + sum(map(len, tokens[1]))
    tag = f"[{set_name} {regime} {'B' if regime == 'static' else 'k'}={b}]"
    info = {"set": set_name, "regime": regime, "demos": b, "n": len(texts), "prefix_tokens": len(tokens[0]),
            "distinct_tokens": n_distinct, "mean_own_tokens": sum(map(len, tokens[1])) / len(texts)}
    print(f"{tag} n={len(texts)}, shared prefix {len(tokens[0])} tokens, {info['mean_own_tokens']:.0f} own tokens "
          f"per prompt", file=sys.stderr)
    methods = METHODS[regime]
    for method in methods:  # untimed warm-up
        run(method, regime, lm, task, texts[:args.warmup], demos_per_query, tokens, args)
    times, probs, _ = timed_rounds(
        methods, args.repeats, lambda method: run(method, regime, lm, task, texts, demos_per_query, tokens, args),
        lambda r, method, sec: print(f"{tag} round {r + 1}/{args.repeats} {method:<6} {sec:7.2f} s", file=sys.stderr))
    median, cpu_median = times["median_seconds"], times["median_cpu_seconds"]
    result = {**info, **times, "items_per_second": {m: len(texts) / median[m] for m in methods},
              "limit_ratio": median["limit"] / median["reuse"],
              "cpu_limit_ratio": cpu_median["limit"] / cpu_median["reuse"],
              "limit_gflops": 2 * linear_parameters(lm) * n_distinct / median["limit"] / 1e9,
              "accuracy": metrics(task, gold, probs["reuse"].argmax(1)).accuracy}
    if "naive" in methods:
        result.update(speedup=median["naive"] / median["reuse"], cpu_speedup=cpu_median["naive"] / cpu_median["reuse"],
                      max_abs_prob_diff=float(np.abs(probs["naive"] - probs["reuse"]).max()))
    return result


def markdown_table(results: dict) -> str:
    rows = ["| set | regime | demos | shared prefix tokens | own tokens / item | naive s | reuse s | limit s | "
            "naive / reuse | limit / reuse | limit / reuse, CPU time | items/s reuse | limit GFLOP/s | accuracy |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results["runs"]:
        med = res["median_seconds"]
        naive = f"{med['naive']:.1f}" if "naive" in med else "-"
        speedup = f"{res['speedup']:.1f}x" if "speedup" in res else "-"
        demos = f"{res['demos']}" + (" per query" if res["regime"] == "per-query" else "")
        rows.append(f"| {res['set']} | {res['regime']} | {demos} | {res['prefix_tokens']} | "
                    f"{res['mean_own_tokens']:.0f} | {naive} | {med['reuse']:.1f} | {med['limit']:.1f} | {speedup} | "
                    f"**{res['limit_ratio']:.2f}** | {res['cpu_limit_ratio']:.2f} | "
                    f"{res['items_per_second']['reuse']:.2f} | {res['limit_gflops']:.0f} | {res['accuracy']:.3f} |")
    return "\n".join(rows)


def goal_lines(results: dict) -> list[str]:
    lines = []
    for res in results["runs"]:
        cell = f"{res['set']} {res['regime']} {'B' if res['regime'] == 'static' else 'k'}={res['demos']}"
        if "speedup" in res:
            lines.append(f"- {cell}: reuse >= {GOAL:g}x faster than naive: {res['speedup']:.1f}x, "
                         f"**{'met' if res['speedup'] >= GOAL else 'not met'}**")
        lines.append(f"- {cell}: reuse at >= {LIMIT_GOAL:g}x the forward pass's speed over the same distinct tokens: "
                     f"{res['limit_ratio']:.2f}x, **{'met' if res['limit_ratio'] >= LIMIT_GOAL else 'not met'}**")
    return lines


def roofline_line(results: dict) -> str:
    peak = results["matmul_peak_gflops"]
    best = max(res["limit_gflops"] for res in results["runs"])
    return (f"Roofline: float32 matmul peak of this machine, measured in the same run (2048 x 2048 products, "
            f"median of 5): **{peak:.0f} GFLOP/s**; the plain forward pass reaches at most {best:.0f} GFLOP/s in the "
            f"linear layers ({best / peak:.0%} of the peak).")


def readme_section(results: dict) -> str:
    body = [markdown_table(results), "",
            roofline_line(results), "",
            "Goals (ratios of median wall-clock times from the same run; the CPU-time ratio is in the table):", "",
            *goal_lines(results), ""]
    return timed_section(results, "test items", FULL_DEFAULTS,
                         f"demonstrations: seeded samples (seed {results['args']['seed']}) of the pool.", body)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from neuroshot.models import load_model

    t_start = time.perf_counter()
    load_avg = list(os.getloadavg())
    lm = load_model(args.model)
    results = {"smoke": is_smoke(args, FULL_DEFAULTS), "args": plain_args(args),
               "env": environment(lm), "runs": [], "matmul_peak_gflops": matmul_peak_gflops()}
    results["env"]["load_average_at_start"] = load_avg
    for name in args.sets:
        task, test, pool = load(args, name)
        for regime in args.regimes:
            for b in (args.demos if regime == "static" else [args.k]):
                results["runs"].append(bench(lm, task, test, pool, regime, b, args, name))
    results["env"]["load_average_at_end"] = list(os.getloadavg())
    printed = "\n".join([markdown_table(results), "", roofline_line(results), *goal_lines(results)])
    report(args, results, t_start, printed, "eval_speed", "eval_speed", readme_section)


if __name__ == "__main__":
    main()
