"""Validation sweep: does the order of a static prompt matter, and does the entropy criterion find a good one?

For each (set, pipeline, pool seed, budget), scores the validation slice held out of the pool
(never the test split) with the annotated plan as one static prompt in 8 orders (the plan's and 7
seeded permutations), and reads each order's entropy of predicted labels on 64 unlabeled pool
texts (the criterion of neuroshot.order_demonstrations).

    .venv/bin/python benchmarks/static_order.py --sets trec --pipelines recommended votek --seeds 0 1 2 --budgets 5 10

One JSON line per cell is printed and appended to benchmarks/results/static_order.jsonl.
Method and results: benchmarks/README.md, section "The order of a static prompt on validation".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result, provenance  # noqa: E402
from shared_sets import DEFAULT_DATA, REPO, SETS, STORE, load_shared_set  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "static_order.jsonl"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sets", nargs="+", default=["trec"], choices=SETS)
    p.add_argument("--pipelines", nargs="+", default=["recommended", "votek"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3], help="pool seeds (each its own pool and slice)")
    p.add_argument("--budgets", nargs="+", type=int, default=[5, 10])
    p.add_argument("--validation", type=int, default=150)
    p.add_argument("--orders", type=int, default=8, help="orders per cell: the plan's and orders - 1 permutations")
    p.add_argument("--unlabeled", type=int, default=64, help="unlabeled pool texts the entropy is read on")
    args = p.parse_args(argv)

    from neuroshot import load_model
    from neuroshot.annotation import SimulatedAnnotator
    from neuroshot.evaluate import content_free_static, predict_proba_static
    from neuroshot.experiment import Experiment
    from neuroshot.ordering import prediction_entropy
    from neuroshot.pipelines import get_pipeline
    from neuroshot.scoring import calibrate
    from neuroshot.task import Demonstration

    lm = load_model("default")
    for name in args.sets:
        for seed in args.seeds:
            data = load_shared_set(name, args.data, validation=args.validation, pool_size=600, seed=seed)
            exp = Experiment(lm, data.task, data.pool, data.test, regime="static", probe_kwargs={"store": STORE},
                             progress=False)
            gold = np.array([data.task.labels.index(r.label) for r in data.test])
            val_texts = [r.text for r in data.test]
            for pipeline in args.pipelines:
                for budget in args.budgets:
                    chosen, labels = exp.plan(get_pipeline(pipeline), budget, seed, SimulatedAnnotator.from_records(data.pool))
                    demos = [Demonstration(data.pool[i].text, labels[data.pool[i].id]) for i in chosen]
                    rng = np.random.default_rng(1000 + seed)
                    rest = [i for i in range(len(data.pool)) if i not in set(chosen)]
                    unlabeled = [data.pool[i].text for i in rng.choice(rest, args.unlabeled, replace=False)]
                    orders = [list(range(budget))] + [list(rng.permutation(budget)) for _ in range(args.orders - 1)]
                    t = time.time()
                    res = []
                    for order in orders:
                        prompt = [demos[j] for j in order]
                        entropy = prediction_entropy(predict_proba_static(lm, data.task, unlabeled, prompt))
                        probs = predict_proba_static(lm, data.task, val_texts, prompt)
                        bias = content_free_static(lm, data.task, prompt)
                        res.append((entropy, (probs.argmax(1) == gold).mean(), (calibrate(probs, bias).argmax(1) == gold).mean()))
                    res = np.array(res)
                    g = int(res[:, 0].argmax())
                    row = dict(set=name, pipe=pipeline, seed=seed, B=budget, plan=res[0, 1:].round(3).tolist(),
                               perm_mean=res[1:, 1:].mean(0).round(3).tolist(), perm_min=round(float(res[1:, 1].min()), 3),
                               perm_max=round(float(res[1:, 1].max()), 3), globalE=res[g, 1:].round(3).tolist(),
                               corr=round(float(np.corrcoef(res[:, 0], res[:, 1])[0, 1]), 2), s=round(time.time() - t),
                               validation=args.validation,
                               command=provenance("benchmarks/static_order.py", argv)["command"])
                    print(json.dumps(row), flush=True)
                    append_result(OUT, row)


if __name__ == "__main__":
    main()
