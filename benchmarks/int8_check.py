"""Is int8 a faster *same* model? Dynamic int8 quantization against float32 on static scoring.

Prints seconds, accuracy, the share of identical labels and the paired bootstrap interval of
int8 minus float32 accuracy per set (writes no file). Run from the repository root::

    .venv/bin/python benchmarks/int8_check.py --sets trec sst2

Method and results: benchmarks/README.md, section "Evaluation speed: eval_speed.py",
"A faster numeric path, tried and not adopted".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_speed import load  # noqa: E402  (shared benchmark helpers)
from shared_sets import DEFAULT_DATA  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sets", nargs="+", default=["trec", "sst2"])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--demos", type=int, default=8)
    p.add_argument("--max-text-tokens", type=int, default=128)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from neuroshot import load_model
    from neuroshot.evaluate import predict_proba_static
    from neuroshot.stats import paired_difference
    from neuroshot.task import Demonstration

    lm = load_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        int8 = dataclasses.replace(lm, model=torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(lm.model), {torch.nn.Linear}, dtype=torch.qint8))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, {args.demos} demos")
    for name in args.sets:
        task, test, pool = load(args, name)
        rng = np.random.default_rng(0)
        demos = [Demonstration(pool[i].text, pool[i].label) for i in rng.choice(len(pool), args.demos, replace=False)]
        texts, gold = [r.text for r in test], np.array([task.labels.index(r.label) for r in test])
        models = {"float32": lm, "int8": int8}
        seconds: dict[str, list[float]] = {m: [] for m in models}
        predicted = {}
        for order in (["float32", "int8"], ["int8", "float32"]):
            for m in order:
                t0 = time.perf_counter()
                predicted[m] = predict_proba_static(models[m], task, texts, demos).argmax(1)
                seconds[m].append(time.perf_counter() - t0)
        correct = {m: (predicted[m] == gold).astype(float) for m in models}
        diff = paired_difference(correct["int8"], correct["float32"])
        print(f"{name}: float32 {statistics.median(seconds['float32']):.1f} s, acc {correct['float32'].mean():.3f}; "
              f"int8 {statistics.median(seconds['int8']):.1f} s, acc {correct['int8'].mean():.3f}; "
              f"same label {np.mean(predicted['int8'] == predicted['float32']):.1%}; int8 minus float32 "
              f"{100 * diff.mean:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] points")


if __name__ == "__main__":
    main()
