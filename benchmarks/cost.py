"""Cost of probing a pool: seconds per 1,000 items and peak memory of neuron attribution vs a plain forward pass.

Times zero-shot label scoring (``forward``, the baseline) against ``probe(method="direct_logit")``
and ``probe(method="grad_x_act")`` on the same items, and measures each one's peak memory (in a
fresh subprocess) and signature size per item. Run from the repository root::

    .venv/bin/python benchmarks/cost.py --write-readme

It prints a Markdown table, writes ``benchmarks/results/cost.json`` and, with ``--write-readme``,
rewrites the cost section of ``benchmarks/README.md``.
Method and results: benchmarks/README.md, section "Cost: cost.py".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import (HelpFormatter, environment, is_smoke, plain_args, report, require_positive,  # noqa: E402
                      run_child, timed_section)
from shared_sets import DEFAULT_README, REPO, add_data_arg, read_set  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "cost.json"
METHODS = ("forward", "direct_logit", "grad_x_act")
GOALS = {"direct_logit": 1.1, "grad_x_act": 2.5}  # max ratio to forward (direct_logit: 1.3, then 1.1)
SIGNATURE_GOAL_BYTES = 50_000  # 50 KB per item (decimal kilobytes)
FULL_DEFAULTS = {"n": 200, "repeats": 3}


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/cost.py",
        description="Seconds per 1,000 pool items and peak memory of zero-shot label scoring (forward) vs "
                    "neuron probing with direct_logit and grad_x_act, plus signature size per item. "
                    "Prints a Markdown table and writes benchmarks/results/cost.json.",
        epilog="examples (from the repository root):\n"
               "  full run, results into benchmarks/README.md:\n"
               "    .venv/bin/python benchmarks/cost.py --write-readme\n"
               "  quick smoke run:\n"
               "    .venv/bin/python benchmarks/cost.py --n 32 --repeats 1",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", default="default", help="model spec for neuroshot.models.load_model")
    add_data_arg(p, "folder of data sets, each with card.json and pool.jsonl (../shared/data relative to the "
                    "repository root when it exists, else required)")
    p.add_argument("--sets", nargs="+", default=["trec", "cuad_clause_types_top10"], metavar="SET",
                   help="data sets (sub-folders of --data) to benchmark")
    p.add_argument("--n", type=int, default=FULL_DEFAULTS["n"], help="items taken from the start of each pool")
    p.add_argument("--repeats", type=int, default=FULL_DEFAULTS["repeats"],
                   help="timed rounds; the median per method is reported")
    p.add_argument("--warmup", type=int, default=16, help="items in the untimed warm-up call of each method")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of every method")
    p.add_argument("--max-text-tokens", type=int, default=128,
                   help="texts are truncated to this many tokens (Task.max_text_tokens)")
    p.add_argument("--top-k", type=int, default=64, help="signature neurons kept per layer (probe's top_k)")
    p.add_argument("--store-items", type=int, default=64,
                   help="items (from the start of the pool, at most --n) probed once into a store to measure its "
                        "on-disk size per item")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite the section between the cost markers of --readme with these results")
    p.add_argument("--readme", type=Path, default=DEFAULT_README, help="README rewritten by --write-readme")
    p.add_argument("--_child", choices=METHODS, help=argparse.SUPPRESS)  # internal: one peak-memory measurement
    args = p.parse_args(argv)
    require_positive(p, args, ("n", "repeats", "warmup", "batch_size", "max_text_tokens", "top_k", "store_items"))
    return args


def load_set(data: Path, name: str, n: int, max_text_tokens: int):
    """(task, first n pool texts) of one data set. Reads pool.jsonl only, never test.jsonl."""
    task, records = read_set(name, data, ("pool",), max_text_tokens)
    if len(records["pool"]) < n:
        print(f"warning: {name} pool has only {len(records['pool'])} items (asked for {n})", file=sys.stderr)
    return task, [r.text for r in records["pool"][:n]]


def run_method(lm, task, texts, method: str, args, store: str | None = None):
    from neuroshot.probing import probe
    from neuroshot.scoring import predict_proba

    if method == "forward":
        return predict_proba(lm, task, texts, batch_size=args.batch_size)
    return probe(lm, task, texts, method=method, top_k=args.top_k, batch_size=args.batch_size,
                 store=store, progress=False)


# --------------------------------------------------------------------------- memory (child process)


def _rss_kib(field: str = "VmRSS") -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def child_main(args: argparse.Namespace) -> None:
    """Load the model, run one method once on the items, print peak-memory figures as one JSON line."""
    from neuroshot.models import load_model

    lm = load_model(args.model)
    task, texts = load_set(args.data, args.sets[0], args.n, args.max_text_tokens)
    gc.collect()
    rss_after_load = _rss_kib()
    maxrss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # reset the kernel's high-water mark so the run's own peak is seen even below the loading peak
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    t0 = time.perf_counter()
    run_method(lm, task, texts, args._child, args)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    run_hwm = _rss_kib("VmHWM") if hwm_reset else None
    run_peak = run_hwm if run_hwm is not None else peak
    base = rss_after_load or maxrss_after_load
    result = {
        "method": args._child, "set": args.sets[0], "n": len(texts), "seconds": seconds,
        "ru_maxrss_mib": peak / 1024,  # whole process, loading included
        "ru_maxrss_after_load_mib": maxrss_after_load / 1024,
        "rss_after_load_mib": base / 1024,
        "run_peak_rss_mib": run_peak / 1024,  # high-water mark of the run alone where it could be reset
        "run_peak_source": "VmHWM reset after loading" if run_hwm is not None else "ru_maxrss",
        "increment_mib": (run_peak - base) / 1024,
    }
    print(json.dumps(result), flush=True)


def measure_memory(args: argparse.Namespace, name: str, method: str) -> dict:
    """Peak memory of one method on one set, measured in a fresh process by :func:`child_main`."""
    return run_child(__file__, ["--_child", method, "--model", args.model, "--data", str(args.data), "--sets", name,
                                "--n", str(args.n), "--batch-size", str(args.batch_size),
                                "--max-text-tokens", str(args.max_text_tokens), "--top-k", str(args.top_k)])


# --------------------------------------------------------------------------- main benchmark


def bench_set(lm, args, name: str) -> dict:
    from neuroshot.scoring import encode

    task, texts = load_set(args.data, name, args.n, args.max_text_tokens)
    n = len(texts)
    enc = encode(lm, task, texts)
    info = {
        "n": n, "labels": list(task.labels), "task": {k: getattr(task, k) for k in
                                                       ("instruction", "input_template", "max_text_tokens")},
        "mean_prompt_tokens": sum(map(len, enc.prompts)) / n, "max_prompt_tokens": max(map(len, enc.prompts)),
        "linear_gflop": 2 * linear_parameters(lm) * sum(map(len, enc.prompts)) / 1e9,
        "truncated_texts": enc.truncated, "label_tokens": [len(ids) for ids in enc.labels],
    }
    print(f"[{name}] n={n}, mean prompt {info['mean_prompt_tokens']:.0f} tokens, {enc.truncated} text(s) truncated "
          f"to {args.max_text_tokens} tokens, label lengths {info['label_tokens']} tokens", file=sys.stderr)

    t0 = time.perf_counter()
    for method in METHODS:  # untimed: first-call allocations, output-weight cache, kernel selection
        run_method(lm, task, texts[:args.warmup], method, args)
    info["warmup_seconds"] = time.perf_counter() - t0

    def progress(r: int, method: str, sec: float) -> None:
        print(f"[{name}] round {r + 1}/{args.repeats} {method:<12} {sec:7.2f} s "
              f"({1000 * sec / n:7.1f} s / 1k items)", file=sys.stderr)

    times, last, order_log = timed_rounds(METHODS, args.repeats,
                                          lambda method: run_method(lm, task, texts, method, args), progress)
    median, cpu_median = times["median_seconds"], times["median_cpu_seconds"]
    per_1k = {m: 1000 * median[m] / n for m in METHODS}
    ratio = {m: median[m] / median["forward"] for m in METHODS}
    cpu_ratio = {m: cpu_median[m] / cpu_median["forward"] for m in METHODS}

    signatures, store = {}, {}
    stored = texts[:args.store_items]
    for method in METHODS[1:]:
        signatures[method] = {"bytes_per_item": float(last[method].signatures.bytes_per_item()),
                              "mean_neurons_per_item": float(last[method].signatures.sizes().mean())}
        with tempfile.TemporaryDirectory(prefix="neuroshot-cost-") as tmp:
            t0 = time.perf_counter()
            run_method(lm, task, stored, method, args, store=tmp)
            sec = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        store[method] = {"items": len(stored), "bytes": size, "bytes_per_item": size / len(stored),
                         "seconds_per_1k_with_store": 1000 * sec / len(stored)}

    info["gflops"] = {m: info["linear_gflop"] / median[m] for m in METHODS}  # prompt tokens through the linear layers
    return {**info, "order": order_log, "seconds": times["seconds"], "median_seconds": median, "seconds_per_1k": per_1k,
            "ratio_to_forward": ratio, "cpu_seconds": times["cpu_seconds"], "median_cpu_seconds": cpu_median,
            "cpu_ratio_to_forward": cpu_ratio, "signatures": signatures, "store": store}


def timed_rounds(methods: tuple[str, ...], repeats: int, call, progress) -> tuple[dict, dict, list]:
    """``repeats`` rounds of ``call(method)`` for every method, interleaved, the order rotated each round (the
    garbage collected before each call; ``progress(round, method, seconds)`` after it). Returns the wall-clock
    and the process CPU seconds (all threads: less hit by other jobs) per method and their medians (keys
    ``seconds``, ``cpu_seconds``, ``median_seconds``, ``median_cpu_seconds``), each method's last output and the
    order of each round."""
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    last, orders = {}, []
    for r in range(repeats):
        orders.append(list(methods[r % len(methods):] + methods[:r % len(methods)]))
        for method in orders[-1]:
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            last[method] = call(method)
            wall[method].append(time.perf_counter() - t0)
            cpu[method].append(time.process_time() - c0)
            progress(r, method, wall[method][-1])
    return {"seconds": wall, "cpu_seconds": cpu, "median_seconds": {m: statistics.median(v) for m, v in wall.items()},
            "median_cpu_seconds": {m: statistics.median(v) for m, v in cpu.items()}}, last, orders


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul speed (median of ``repeats`` products of two size x size matrices)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def linear_parameters(lm) -> int:
    """Parameters every token goes through in a forward pass without the output head: all but embeddings."""
    embedding = lm.model.get_input_embeddings().weight
    return sum(p.numel() for p in lm.model.parameters() if p is not embedding)


def markdown_table(results: dict) -> str:
    rows = ["| set | method | s / 1k items (median) | x forward | x forward, CPU time | peak RSS of the run MiB "
            "| + over loaded model MiB | signature bytes / item | store bytes / item | GFLOP/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results["sets"].items():
        for m in METHODS:
            mem = res.get("memory", {}).get(m)
            sig = res["signatures"].get(m, {}).get("bytes_per_item")
            store = res["store"].get(m, {}).get("bytes_per_item")
            rows.append(" | ".join([
                f"| {name}", f"`{m}`", f"{res['seconds_per_1k'][m]:.1f}", f"{res['ratio_to_forward'][m]:.2f}",
                f"{res['cpu_ratio_to_forward'][m]:.2f}",
                f"{mem['run_peak_rss_mib']:.0f}" if mem else "-", f"{mem['increment_mib']:.0f}" if mem else "-",
                f"{sig:,.0f}" if sig is not None else "-", f"{store:,.0f}" if store is not None else "-",
                f"{res['gflops'][m]:.0f}"]) + " |")
    return "\n".join(rows)


def goal_lines(results: dict) -> list[str]:
    lines = []
    for name, res in results["sets"].items():
        for m, limit in GOALS.items():
            r = res["ratio_to_forward"][m]
            lines.append(f"- {name}, `{m}` <= {limit}x forward: {r:.2f}x, **{'met' if r <= limit else 'not met'}**")
        worst = max(max(res["signatures"][m]["bytes_per_item"], res["store"][m]["bytes_per_item"]) for m in GOALS)
        lines.append(f"- {name}, signatures <= 50 KB/item: at most {worst / 1000:.1f} KB/item (in memory or on disk), "
                     f"**{'met' if worst <= SIGNATURE_GOAL_BYTES else 'not met'}**")
    return lines


def readme_section(results: dict) -> str:
    sets = ", ".join(f"{name} (mean prompt {res['mean_prompt_tokens']:.0f} tokens, label answers of "
                     f"{min(res['label_tokens'])}-{max(res['label_tokens'])} tokens)"
                     for name, res in results["sets"].items())
    body = [markdown_table(results), "",
            "Goals (ratios are of median wall-clock times from the same run; the CPU-time ratio, less affected by "
            "other jobs on the machine, is in the table):", "",
            *goal_lines(results), "",
            roofline_line(results), ""]
    return timed_section(results, "items per set", FULL_DEFAULTS, f"top-k {results['args']['top_k']}. Sets: {sets}.",
                         body)


def roofline_line(results: dict) -> str:
    """The probing methods' linear-layer GFLOP/s (prompt tokens only) against the matmul peak of the same run."""
    peak = results["matmul_peak_gflops"]
    parts = "; ".join(f"{name}: " + ", ".join(f"`{m}` {res['gflops'][m]:.0f} ({res['gflops'][m] / peak:.0%})"
                                              for m in METHODS) for name, res in results["sets"].items())
    return (f"Roofline: float32 matmul peak measured at the end of the run (2048 x 2048 products, median of 5): "
            f"**{peak:.0f} GFLOP/s**. GFLOP/s of each method, counting 2 x non-embedding parameters per prompt token "
            f"(label continuations and the backward pass not counted), and its share of the peak: {parts}.")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._child:
        child_main(args)
        return
    from neuroshot.models import load_model

    t_start = time.perf_counter()
    memory, phases = {}, {}
    if not args.skip_memory:
        # First, while this process is small: a child's ru_maxrss starts from its parent's RSS at fork, and the
        # subprocesses never overlap a timed call.
        for name in args.sets:
            t0 = time.perf_counter()
            memory[name] = {m: measure_memory(args, name, m) for m in METHODS}
            phases[f"{name}/memory"] = time.perf_counter() - t0
            for m, mem in memory[name].items():
                print(f"[{name}] memory {m:<12} run peak {mem['run_peak_rss_mib']:.0f} MiB, "
                      f"+{mem['increment_mib']:.0f} MiB over the loaded model ({mem['seconds']:.1f} s)",
                      file=sys.stderr)
    t0 = time.perf_counter()
    lm = load_model(args.model)
    load_seconds = time.perf_counter() - t0
    results = {"smoke": is_smoke(args, FULL_DEFAULTS), "args": plain_args(args),
               "env": environment(lm), "load_seconds": load_seconds, "sets": {}}
    for name in args.sets:
        t0 = time.perf_counter()
        results["sets"][name] = bench_set(lm, args, name)
        if name in memory:
            results["sets"][name]["memory"] = memory[name]
        phases[f"{name}/timing"] = time.perf_counter() - t0
    results["phase_seconds"] = phases
    results["matmul_peak_gflops"] = matmul_peak_gflops()
    results["env"]["load_average_at_end"] = list(os.getloadavg())
    printed = markdown_table(results) + "\n\n" + "\n".join(goal_lines(results))
    report(args, results, t_start, printed, "cost", "cost", readme_section)


if __name__ == "__main__":
    main()
