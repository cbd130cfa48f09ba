"""Evaluation speed: static in-context evaluation with prefix-KV reuse vs naive full prompts, side by side.

Static evaluation puts the same instruction + demonstrations before every test item. Two ways
to score N test items with B demonstrations, on the same model, items and batch size:

- ``naive``: every prompt run in full (``neuroshot.scoring.predict_proba``);
- ``reuse``: the shared prefix run once, its KV cache reused for every batch of queries
  (``neuroshot.evaluate.predict_proba_static``).

Both give the same probabilities (the largest difference is reported). Timing: one untimed
warm-up call per method, then ``--repeats`` rounds with the two methods interleaved (order
alternating); medians of wall-clock and of process CPU time are reported with their ratio.
Demonstrations: B pool items drawn with ``--seed`` (gold labels as the annotator would give).

Run from the repository root::

    .venv/bin/python benchmarks/eval_speed.py --write-readme

It prints a Markdown table, writes ``benchmarks/results/eval_speed.json`` and, with
``--write-readme``, rewrites the eval_speed section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost import DEFAULT_DATA, environment, make_task, write_readme  # noqa: E402  (shared benchmark helpers)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "eval_speed.json"
DEFAULT_README = REPO / "benchmarks" / "README.md"
START, END = "<!-- eval_speed:start -->", "<!-- eval_speed:end -->"
METHODS = ("naive", "reuse")
GOAL = 3.0  # naive / reuse
FULL_DEFAULTS = {"n": 200, "repeats": 3}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_data = DEFAULT_DATA if DEFAULT_DATA.is_dir() else None
    p = argparse.ArgumentParser(
        prog="benchmarks/eval_speed.py",
        description="Seconds to score N test items with B static demonstrations: prefix-KV reuse vs naive full "
                    "prompts, on the same items, model and batch size. Writes benchmarks/results/eval_speed.json.",
        epilog="examples (from the repository root):\n"
               "  full run, results into benchmarks/README.md:\n"
               "    .venv/bin/python benchmarks/eval_speed.py --write-readme\n"
               "  quick smoke run:\n"
               "    .venv/bin/python benchmarks/eval_speed.py --n 32 --demos 8 --repeats 1",
        formatter_class=_HelpFormatter)
    p.add_argument("--model", default="default", help="model spec for neuroshot.models.load_model")
    p.add_argument("--data", type=Path, default=default_data, required=default_data is None,
                   help="folder of data sets with card.json, pool.jsonl, test.jsonl (../shared/data when it exists)")
    p.add_argument("--set", default="trec", help="data set (sub-folder of --data)")
    p.add_argument("--n", type=int, default=FULL_DEFAULTS["n"], help="test items (from the start of test.jsonl)")
    p.add_argument("--demos", type=int, nargs="+", default=[8, 16], metavar="B", help="demonstration counts")
    p.add_argument("--repeats", type=int, default=FULL_DEFAULTS["repeats"], help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=8, help="items in each untimed warm-up call")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of both methods")
    p.add_argument("--max-text-tokens", type=int, default=128, help="texts truncated to this many tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the demonstration sample")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    p.add_argument("--write-readme", action="store_true", help="rewrite the eval_speed section of --readme")
    p.add_argument("--readme", type=Path, default=DEFAULT_README, help="README rewritten by --write-readme")
    args = p.parse_args(argv)
    for name in ("n", "repeats", "warmup", "batch_size", "max_text_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.demos) < 0:
        p.error("--demos must be >= 0")
    return args


def load(args):
    """(task, test texts, gold labels, pool records) of the data set."""
    from neuroshot.data import load_records

    folder = args.data / args.set
    for name in ("card.json", "pool.jsonl", "test.jsonl"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder}: expected {name}")
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    test = load_records(folder / "test.jsonl")[:args.n]
    return make_task(args.set, card, args.max_text_tokens), test, load_records(folder / "pool.jsonl")


def run(method: str, lm, task, texts, demos, args):
    from neuroshot.evaluate import predict_proba_static
    from neuroshot.scoring import predict_proba

    if method == "naive":
        return predict_proba(lm, task, texts, demos, batch_size=args.batch_size)
    return predict_proba_static(lm, task, texts, demos, batch_size=args.batch_size)


def bench(lm, task, test, pool, b: int, args) -> dict:
    import numpy as np

    from neuroshot.evaluate import metrics, shared_prefix
    from neuroshot.scoring import encode
    from neuroshot.task import Demonstration

    rng = np.random.default_rng(args.seed)
    demos = [Demonstration(pool[i].text, pool[i].label) for i in rng.choice(len(pool), size=b, replace=False)]
    texts, gold = [r.text for r in test], [r.label for r in test]
    enc = encode(lm, task, texts, demos)
    prefix, ok = shared_prefix(lm, task, demos, enc.prompts)
    info = {"demos": b, "n": len(texts), "prefix_tokens": len(prefix), "prefix_reused_for": int(ok.sum()),
            "mean_prompt_tokens": sum(map(len, enc.prompts)) / len(texts),
            "label_tokens": [len(ids) for ids in enc.labels]}
    print(f"[B={b}] n={len(texts)}, prefix {len(prefix)} tokens (reused for {ok.sum()}/{len(ok)} items), "
          f"mean prompt {info['mean_prompt_tokens']:.0f} tokens", file=sys.stderr)
    for method in METHODS:  # untimed warm-up
        run(method, lm, task, texts[:args.warmup], demos, args)
    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    probs = {}
    for r in range(args.repeats):
        for method in (METHODS if r % 2 == 0 else METHODS[::-1]):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            probs[method] = run(method, lm, task, texts, demos, args)
            wall[method].append(time.perf_counter() - t0)
            cpu[method].append(time.process_time() - c0)
            print(f"[B={b}] round {r + 1}/{args.repeats} {method:<6} {wall[method][-1]:7.2f} s", file=sys.stderr)
    median = {m: statistics.median(v) for m, v in wall.items()}
    cpu_median = {m: statistics.median(v) for m, v in cpu.items()}
    accuracy = {m: metrics(task, gold, probs[m].argmax(1)).accuracy for m in METHODS}
    return {**info, "seconds": wall, "cpu_seconds": cpu, "median_seconds": median, "median_cpu_seconds": cpu_median,
            "items_per_second": {m: len(texts) / median[m] for m in METHODS},
            "speedup": median["naive"] / median["reuse"], "cpu_speedup": cpu_median["naive"] / cpu_median["reuse"],
            "max_abs_prob_diff": float(np.abs(probs["naive"] - probs["reuse"]).max()), "accuracy": accuracy}


def markdown_table(results: dict) -> str:
    rows = ["| demos | prefix tokens | mean prompt tokens | naive s (median) | reuse s (median) | speedup | "
            "speedup, CPU time | items/s naive | items/s reuse | max prob. diff | accuracy (both) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results["runs"]:
        rows.append(f"| {res['demos']} | {res['prefix_tokens']} | {res['mean_prompt_tokens']:.0f} | "
                    f"{res['median_seconds']['naive']:.1f} | {res['median_seconds']['reuse']:.1f} | "
                    f"**{res['speedup']:.1f}x** | {res['cpu_speedup']:.1f}x | {res['items_per_second']['naive']:.2f} | "
                    f"{res['items_per_second']['reuse']:.2f} | {res['max_abs_prob_diff']:.1e} | "
                    f"{res['accuracy']['reuse']:.3f} |")
    return "\n".join(rows)


def goal_lines(results: dict) -> list[str]:
    return [f"- B={res['demos']}: reuse >= {GOAL:g}x faster than naive: {res['speedup']:.1f}x, "
            f"**{'met' if res['speedup'] >= GOAL else 'not met'}**" for res in results["runs"]]


def readme_section(results: dict) -> str:
    env, a = results["env"], results["args"]
    head = (f"**Smoke run** (n={a['n']} test items, {a['repeats']} repeat(s)): timings are indicative only; the full "
            f"run uses the defaults (n={FULL_DEFAULTS['n']}, repeats={FULL_DEFAULTS['repeats']})."
            if results["smoke"] else f"Full run: n={a['n']} test items, {a['repeats']} repeats, median reported.")
    return "\n".join([
        head, "",
        f"{env['date']}, {env['model']} on {env['device']} ({env['dtype']}), {env['cpu_count']} CPU(s), "
        f"{env['torch_threads']} torch threads (1-min load average {env['load_average_at_start'][0]:.1f} at the start, "
        f"{env['load_average_at_end'][0]:.1f} at the end: the machine was shared with other jobs), torch "
        f"{env['torch']}, transformers {env['transformers']}; set {a['set']}, batch size {a['batch_size']}, texts "
        f"truncated to {a['max_text_tokens']} tokens, demonstrations: a seeded sample (seed {a['seed']}) of the pool.",
        "", markdown_table(results), "",
        "Goal (ratio of median wall-clock times from the same run; the CPU-time ratio is in the table):", "",
        *goal_lines(results), "",
        "Seconds of every round (naive / reuse): " + "; ".join(
            f"B={res['demos']}: " + ", ".join(f"{n:.1f} / {r:.1f}" for n, r in zip(res["seconds"]["naive"],
                                                                             res["seconds"]["reuse"]))
            for res in results["runs"]) + ".", "",
        "Command:", "", "```", env["command"], "```",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from neuroshot.models import load_model

    t_start = time.perf_counter()
    load_avg = list(os.getloadavg())
    lm = load_model(args.model)
    task, test, pool = load(args)
    results = {"smoke": args.n < FULL_DEFAULTS["n"] or args.repeats < FULL_DEFAULTS["repeats"],
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "env": environment(args, lm), "runs": []}
    results["env"]["load_average_at_start"] = load_avg
    for b in args.demos:
        results["runs"].append(bench(lm, task, test, pool, b, args))
    results["env"]["load_average_at_end"] = list(os.getloadavg())
    results["total_seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(results))
    print()
    print("\n".join(goal_lines(results)))
    print(f"\nwrote {args.out} ({results['total_seconds']:.0f} s in all)")
    if args.write_readme:
        write_readme(args.readme, readme_section(results), START, END, "Evaluation speed")
        print(f"rewrote the eval_speed section of {args.readme}")


if __name__ == "__main__":
    main()
