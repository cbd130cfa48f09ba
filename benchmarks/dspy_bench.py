"""DSPy: accuracy of one program compiled by NeuronAwareFewShot vs DSPy's LabeledFewShot and KNNFewShot.

One ``dspy.Predict`` classification program runs on the default model through
``dspy_neuroshot.LocalEngine`` and is compiled by each method with the same labeled trainset and
``k`` demos per prompt; ``dspy.Evaluate`` accuracy on one fixed test sample, paired over items and
seeds. ``--retrieval-only`` only records which demos each prompt shows (no generation);
``--speed`` times ``LocalEngine`` against plain forward passes of its prompts. Run from the
repository root::

    .venv/bin/python benchmarks/dspy_bench.py --write-readme
    .venv/bin/python benchmarks/dspy_bench.py --retrieval-only --write-readme
    .venv/bin/python benchmarks/dspy_bench.py --speed --test 100 --methods KNNFewShot --write-readme

Finished (method, seed) rows are appended to ``benchmarks/results/dspy.jsonl`` (a rerun skips
them), the summary goes to ``benchmarks/results/dspy.json`` (``--speed``: ``dspy_speed.json``) and,
with ``--write-readme``, to the DSPy sections of ``benchmarks/README.md``.
Method and results: benchmarks/README.md, section "DSPy: dspy_bench.py".
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, cell_key, provenance, read_results, update_section, write_json  # noqa: E402
from shared_sets import DEFAULT_DATA, DEFAULT_README, REPO, read_set  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "dspy.json"
DEFAULT_ROWS = REPO / "benchmarks" / "results" / "dspy.jsonl"
SPEED_GOALS = {"prediction_over_forward": 1.5, "throughput_ratio": 0.8}
METHODS = ("zero-shot", "LabeledFewShot", "KNNFewShot", "NeuronAwareFewShot", "NeuronAwareFewShot(per_query)",
           "NeuronAwareFewShot(per_query, neuron)")
REFERENCE = "KNNFewShot"  # every other method is compared with it
TEST_SEED = 0  # the one test sample, whatever the seeds
KEY = ("set", "mode", "method", "seed", "train", "test", "k", "max_text_tokens")
INSTRUCTIONS = {"trec": "Classify the question by the type of its answer.",
                "sst2": "Classify the sentiment of the movie review.",
                "cuad_clause_types_top10": "Classify the contract clause by its type."}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/dspy_bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                   help="shared data folder")
    p.add_argument("--set", default="trec", help="data set folder name")
    p.add_argument("--train", type=int, default=50, help="labeled budget: trainset items sampled from the pool")
    p.add_argument("--test", type=int, default=300, help="test items: one fixed sample of test.jsonl")
    p.add_argument("--k", type=int, default=4, help="demonstrations per prompt")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the trainset sample and planner")
    p.add_argument("--model", default="default", help="model spec for neuroshot.load_model")
    p.add_argument("--max-text-tokens", type=int, default=96, help="truncate texts for probing")
    p.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                   default=["KNNFewShot", "NeuronAwareFewShot(per_query)", "NeuronAwareFewShot(per_query, neuron)",
                            "LabeledFewShot", "NeuronAwareFewShot"], help=f"of: {', '.join(METHODS)}")
    p.add_argument("--retrieval-only", action="store_true",
                   help="no generation: the share of each prompt's demos with the query's gold label")
    p.add_argument("--speed", action="store_true",
                   help="time LocalEngine against plain forward passes of the same prompts (first method, first seed)")
    p.add_argument("--threads", type=int, default=16,
                   help="--speed: dspy.Evaluate threads (and LocalEngine batch_size) of the batched run")
    p.add_argument("--rows", type=Path, default=DEFAULT_ROWS, help="finished (method, seed) rows, appended")
    p.add_argument("--summarize", action="store_true", help="only rebuild the summary from --rows")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--readme", type=Path, default=DEFAULT_README)
    p.add_argument("--write-readme", action="store_true", help="rewrite the DSPy section of benchmarks/README.md")
    args = p.parse_args(argv)
    if args.data is None or not (args.data / args.set / "pool.jsonl").is_file():
        p.error(f"no {args.set}/pool.jsonl under --data {args.data}")
    args.mode = "retrieval" if args.retrieval_only else "generate"
    if args.speed and (args.retrieval_only or args.summarize):
        p.error("--speed runs alone (no --retrieval-only, no --summarize)")
    if args.speed and args.methods[0] == "zero-shot":
        p.error("--speed needs a program with demos (e.g. --methods KNNFewShot)")
    return args


def load_split(args, split: str, n: int, seed: int):
    import dspy

    records = read_set(args.set, args.data, (split,))[1][split]
    return [dspy.Example(id=r.id, text=r.text, label=r.label).with_inputs("text")
            for r in random.Random(seed).sample(records, min(n, len(records)))]


def make_signature(args, labels: list[str]):
    import dspy

    instructions = INSTRUCTIONS.get(args.set, "Classify the text into one of the labels.")
    return dspy.make_signature({"text": (str, dspy.InputField()),
                                "label": (Literal[tuple(labels)], dspy.OutputField())}, instructions)


def knn_embedder():
    import dspy

    from neuroshot.embeddings import load_embedder

    _, minilm = load_embedder()
    return dspy.Embedder(lambda texts: minilm.encode(texts, normalize_embeddings=True), caching=False)


def compile_one(name: str, args, signature, trainset, lm_model, seed: int):
    """The program ``name`` compiles from ``dspy.Predict(signature)`` and the trainset."""
    import dspy
    from dspy.teleprompt import KNNFewShot, LabeledFewShot

    from dspy_neuroshot import NeuronAwareFewShot

    student = dspy.Predict(signature)
    if name == "zero-shot":
        return student
    if name == "LabeledFewShot":
        return LabeledFewShot(k=args.k).compile(student, trainset=trainset)
    if name == "KNNFewShot":
        return KNNFewShot(args.k, trainset, vectorizer=knn_embedder(), max_bootstrapped_demos=0,
                          max_labeled_demos=args.k).compile(student)
    per_query = name.startswith("NeuronAwareFewShot(per_query")
    retriever = "neuron" if name.endswith(", neuron)") else None
    return NeuronAwareFewShot(k=args.k, model=lm_model, per_query=per_query, retriever=retriever, seed=seed,
                              max_text_tokens=args.max_text_tokens, progress=False).compile(student, trainset=trainset)


def exact_label(example, prediction, trace=None) -> bool:
    return str(getattr(prediction, "label", "")).strip() == example.label


def demos_for(name: str, program, example, knn) -> list:
    """The demos the compiled program shows for ``example`` (KNNFewShot: DSPy's own KNN, in its order)."""
    if name == "KNNFewShot":
        return list(knn(**example.inputs()))
    if hasattr(program, "retrieve"):
        return [ex for ex, _ in program.retrieve(**example.inputs())]
    return list(program.predictors()[0].demos)


def run_cell(name: str, seed: int, args, signature, testset, lm_model, labels: list[str]) -> dict:
    """Compile ``name`` on seed ``seed``'s trainset and score the test sample (or its demos' labels)."""
    import dspy

    trainset = load_split(args, "pool", args.train, seed)
    t0 = time.perf_counter()
    program = compile_one(name, args, signature, trainset, lm_model, seed)
    row = {"compile_seconds": time.perf_counter() - t0, "train_ids": [ex.id for ex in trainset]}
    t0 = time.perf_counter()
    if args.mode == "retrieval":
        knn = dspy.KNN(args.k, trainset, knn_embedder()) if name == "KNNFewShot" else None
        shares = []
        for ex in testset:
            demos = demos_for(name, program, ex, knn)
            shares.append(sum(d.label == ex.label for d in demos) / max(len(demos), 1))
        row.update(scores=[round(s, 4) for s in shares], score=float(np.mean(shares)))
    else:
        evaluate = dspy.Evaluate(devset=testset, metric=exact_label, num_threads=1, display_progress=True,
                                 provide_traceback=True)
        result = evaluate(program)
        answers = [str(getattr(p, "label", "")) for _, p, _ in result.results]
        correct = [float(bool(score)) for _, _, score in result.results]
        row.update(scores=correct, score=float(np.mean(correct)), answers=answers,
                   predicted_labels={lab: answers.count(lab) for lab in labels})
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def run(args) -> None:
    import dspy
    import torch

    from dspy_neuroshot import local_lm
    from neuroshot.models import resolve_model

    testset = load_split(args, "test", args.test, TEST_SEED)
    labels = list(read_set(args.set, args.data, ())[0].labels)
    signature = make_signature(args, labels)
    model = resolve_model(args.model)
    done = {cell_key(KEY, r) for r in read_results(args.rows)}
    with dspy.context(lm=local_lm(model)):
        for seed in args.seeds:
            for name in args.methods:
                if name == "zero-shot" and args.mode == "retrieval":
                    continue  # no demos to look at
                key = dict(set=args.set, mode=args.mode, method=name, seed=seed, train=args.train, test=args.test,
                           k=args.k, max_text_tokens=args.max_text_tokens)
                if cell_key(KEY, key) in done:
                    continue
                row = run_cell(name, seed, args, signature, testset, model, labels)
                append_result(args.rows, {**key, **row, "test_ids": [ex.id for ex in testset], "model": model.name,
                                          "load_average": list(os.getloadavg()), "torch": torch.__version__,
                                          "dspy": dspy.__version__, **provenance("benchmarks/dspy_bench.py")})
                what = "demo label agreement" if args.mode == "retrieval" else "accuracy"
                print(f"seed {seed} {name:<40} {what} {row['score']:.3f} ({row['eval_seconds']:.0f} s)",
                      file=sys.stderr, flush=True)


def summarize(args) -> dict:
    """Per mode and method: mean score over seeds, and the paired difference from KNNFewShot."""
    from neuroshot.stats import paired_difference

    rows = [r for r in read_results(args.rows) if r["set"] == args.set and r["train"] == args.train
            and r["test"] == args.test and r["k"] == args.k]
    out = {"set": args.set, "train": args.train, "test": args.test, "k": args.k, "modes": {}}
    for mode in ("generate", "retrieval"):
        by_method: dict[str, dict[int, dict]] = {}
        for r in rows:
            if r["mode"] == mode:
                by_method.setdefault(r["method"], {})[r["seed"]] = r
        if not by_method:
            continue
        reference = by_method.get(REFERENCE, {})
        methods = {}
        for name, seeds in by_method.items():
            entry = {"mean": float(np.mean([s["score"] for s in seeds.values()])),
                     "per_seed": {str(seed): s["score"] for seed, s in sorted(seeds.items())},
                     "eval_seconds": float(np.median([s["eval_seconds"] for s in seeds.values()])),
                     "compile_seconds": float(np.median([s["compile_seconds"] for s in seeds.values()]))}
            shared = sorted(set(seeds) & set(reference))
            if name != REFERENCE and shared:
                d = paired_difference([seeds[s]["scores"] for s in shared], [reference[s]["scores"] for s in shared])
                entry["minus_reference"] = {"mean": d.mean, "low": d.low, "high": d.high, "verdict": d.verdict,
                                            "seeds": shared}
            if "predicted_labels" in next(iter(seeds.values())):
                entry["predicted_labels"] = {lab: sum(s["predicted_labels"][lab] for s in seeds.values())
                                             for lab in next(iter(seeds.values()))["predicted_labels"]}
            methods[name] = entry
        out["modes"][mode] = {"methods": methods, "commands": sorted({r["command"] for r in rows if r["mode"] == mode}),
                              "model": rows[0]["model"], "dspy": rows[0]["dspy"], "torch": rows[0]["torch"]}
    return out


def markdown_table(summary: dict, mode: str) -> str:
    what = "accuracy" if mode == "generate" else "demos with the query's label"
    lines = [f"| program compiled with | {what} (mean over seeds) | per seed | minus `{REFERENCE}` (points, 95% interval) "
             f"| evaluate s (median) |", "|---|---:|---|---:|---:|"]
    for name, m in summary["modes"][mode]["methods"].items():
        diff = m.get("minus_reference")
        cell = f"{100 * diff['mean']:+.1f} [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}] {diff['verdict']}" \
            if diff else "-"
        per_seed = " / ".join(f"{v:.3f}" for v in m["per_seed"].values())
        lines.append(f"| `{name}` | {m['mean']:.3f} | {per_seed} | {cell} | {m['eval_seconds']:.0f} |")
    return "\n".join(lines)


def readme_section(summary: dict) -> str:
    parts = []
    for mode, title in (("generate", "Accuracy"), ("retrieval", "Which demos each prompt shows (`--retrieval-only`)")):
        if mode not in summary["modes"]:
            continue
        m = summary["modes"][mode]
        parts += [f"**{title}.** Set `{summary['set']}`, {m['model']} through `LocalEngine` (constrained label "
                  f"answer), dspy {m['dspy']}; {summary['train']} labeled train items sampled from the pool per seed, "
                  f"one fixed sample of {summary['test']} test items, k = {summary['k']}.", "",
                  markdown_table(summary, mode), "", "Commands:", "", "```", *m["commands"], "```", ""]
    return "\n".join(parts).rstrip("\n")


def timed_engine(model):
    """A ``LocalEngine`` that keeps each call's seconds and rendered prompt (one thread; for ``--speed``)."""
    from dspy_neuroshot import LocalEngine

    class TimedEngine(LocalEngine):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.calls: list[dict] = []

        def complete(self, request):
            t0 = time.perf_counter()
            response = super().complete(request)
            self.calls[-1]["seconds"] = time.perf_counter() - t0
            return response

        def _render(self, system, messages):
            prompt = super()._render(system, messages)
            self.calls.append({"prompt": prompt})
            return prompt

    return TimedEngine(model)


def plain_forward_seconds(model, prompts: list[list[int]], batch_size: int) -> float:
    """Seconds of a plain batched forward pass over ``prompts`` (length-bucketed, last position's logits only)."""
    from eval_speed import forward_limit

    t0 = time.perf_counter()
    forward_limit(model, [], prompts, batch_size)
    return time.perf_counter() - t0


def run_speed(args) -> dict:
    """``--speed``: LocalEngine's predictions against plain forward passes of the same prompts."""
    import dspy

    from dspy_neuroshot import LocalEngine
    from neuroshot.models import resolve_model

    name, seed = args.methods[0], args.seeds[0]
    testset = load_split(args, "test", args.test, TEST_SEED)
    labels = list(read_set(args.set, args.data, ())[0].labels)
    model = resolve_model(args.model)
    engine = timed_engine(model)
    trainset = load_split(args, "pool", args.train, seed)
    with dspy.context(lm=dspy.LM("local/smollm2-135m", engine=engine, cache=False)):
        program = compile_one(name, args, make_signature(args, labels), trainset, model, seed)
        engine.calls.clear()
        t0 = time.perf_counter()
        dspy.Evaluate(devset=testset, metric=exact_label, num_threads=1, display_progress=True)(program)
        evaluate_s = time.perf_counter() - t0
    batched_engine = LocalEngine(model, batch_size=args.threads)
    with dspy.context(lm=dspy.LM("local/smollm2-135m", engine=batched_engine, cache=False)):
        t0 = time.perf_counter()
        dspy.Evaluate(devset=testset, metric=exact_label, num_threads=args.threads, display_progress=True)(program)
        threaded_s = time.perf_counter() - t0
    calls = [c for c in engine.calls if "seconds" in c]
    prompts = [model.tokenizer(c["prompt"], add_special_tokens=False)["input_ids"] for c in calls]
    plain_forward_seconds(model, prompts[:4], 1)  # warm-up
    alone = [plain_forward_seconds(model, [p], 1) for p in prompts]
    batched = plain_forward_seconds(model, prompts, 16)
    ratios = [c["seconds"] / a for c, a in zip(calls, alone)]
    return {"set": args.set, "method": name, "seed": seed, "test": len(testset), "calls": len(calls),
            "threads": args.threads, "model": model.name, "dspy": dspy.__version__,
            "mean_prompt_tokens": float(np.mean(list(map(len, prompts)))),
            "prediction_seconds_median": float(np.median([c["seconds"] for c in calls])),
            "forward_seconds_median": float(np.median(alone)),
            "prediction_over_forward": float(np.median(ratios)), "evaluate_seconds": evaluate_s,
            "threaded_evaluate_seconds": threaded_s, "batched_forward_seconds": batched,
            "throughput_ratio_one_thread": batched / evaluate_s, "throughput_ratio": batched / threaded_s,
            "load_average": list(os.getloadavg()), **provenance("benchmarks/dspy_bench.py")}


def speed_section(r: dict) -> str:
    def verdict(key: str, better_low: bool) -> str:
        met = r[key] <= SPEED_GOALS[key] if better_low else r[key] >= SPEED_GOALS[key]
        return "**met**" if met else "**not met**"

    return "\n".join([
        f"**Speed of `LocalEngine`.** Set `{r['set']}`, `{r['method']}` (seed {r['seed']}), {r['model']}, dspy "
        f"{r['dspy']}; {r['calls']} engine calls from `dspy.Evaluate` over {r['test']} test items (one thread), "
        f"prompts of {r['mean_prompt_tokens']:.0f} tokens on average; 1-min load average "
        f"{r['load_average'][0]:.1f} at the end.", "",
        "| measure | value | goal |", "|---|---:|---:|",
        f"| one prediction (median) | {r['prediction_seconds_median']:.3f} s | - |",
        f"| plain forward pass of the same prompt, batch 1 (median) | {r['forward_seconds_median']:.3f} s | - |",
        f"| prediction / forward pass of its prompt (median of per-call ratios) | {r['prediction_over_forward']:.2f} | "
        f"<= {SPEED_GOALS['prediction_over_forward']:g}: {verdict('prediction_over_forward', True)} |",
        f"| `dspy.Evaluate` over all items, one thread | {r['evaluate_seconds']:.1f} s | - |",
        f"| `dspy.Evaluate`, {r['threads']} threads, `LocalEngine(batch_size={r['threads']})` | "
        f"{r['threaded_evaluate_seconds']:.1f} s | - |",
        f"| plain batched forward pass over the same prompts (batch 16) | {r['batched_forward_seconds']:.1f} s | - |",
        f"| throughput: batched forward / `dspy.Evaluate`, one thread | {r['throughput_ratio_one_thread']:.2f} | - |",
        f"| throughput: batched forward / `dspy.Evaluate`, {r['threads']} threads | {r['throughput_ratio']:.2f} | "
        f">= {SPEED_GOALS['throughput_ratio']:g}: {verdict('throughput_ratio', False)} |", "",
        "Command:", "", "```", r["command"], "```"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.speed:
        result = run_speed(args)
        write_json(args.out.with_name("dspy_speed.json"), result)
        print(speed_section(result))
        if args.write_readme:
            update_section(args.readme, "dspy_speed", speed_section(result))
        return
    if not args.summarize:
        run(args)
    summary = summarize(args)
    write_json(args.out, summary)
    for mode in summary["modes"]:
        print(f"\n{mode}:\n{markdown_table(summary, mode)}")
    print(f"\nwrote {args.out}")
    if args.write_readme:
        update_section(args.readme, "dspy", readme_section(summary))
        print(f"rewrote the DSPy section of {args.readme}")


if __name__ == "__main__":
    main()
