"""Served LLMs: demonstrations chosen with a small local model's neurons, answered by another model.

An app whose LLM is served (Ollama, vLLM, an API) cannot read that LLM's neurons: neuroshot probes a
small local model instead, and the served LLM only answers. This measures whether that holds. Per
cell, the pipeline (default: recommended) plans and retrieves on ``--neuron-model``'s probes
(default: SmolLM2-135M) and ``--model`` (default: Gemma-3-270M) answers the prompts; the cell is paired
with ``--model``'s own cells of head_to_head.py (the same test items and seeds): the pipeline on
``--model``'s own neurons, and ``random+knn`` (which reads no neurons).

    .venv/bin/python benchmarks/proxy_model.py                 # trec and sst2, B = 18 / 50 / 100, seeds 0-2
    .venv/bin/python benchmarks/proxy_model.py --summarize

Cells go to results/proxy_model/results.jsonl (a stopped run resumes with the same command); the
summary replaces the section "proxy-model" of benchmarks/RESULTS.md.
Method and results: benchmarks/README.md, section "Served LLMs: proxy_model.py".
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import head_to_head  # noqa: E402
from _results import main_loop, read_results, update_section  # noqa: E402
from shared_sets import REPO, add_grid_args  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "proxy_model"
KEY = (*head_to_head.KEY, "neuron_model", "test_items")
OWN_FIELDS = ("model", "set", "regime", "k", "pool_size", "test_size", "validation")  # what pairs a proxy cell
SCRIPT = "benchmarks/proxy_model.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_args(p, test_size=300, out=DEFAULT_OUT, markdown=head_to_head.DEFAULT_MD)
    p.set_defaults(model="gemma-3-270m", sets=["trec", "sst2"], regimes=["per-query"])
    p.add_argument("--neuron-model", default="default",
                   help="the local model whose neurons plan and retrieve (default: %(default)s, SmolLM2-135M)")
    p.add_argument("--pipelines", nargs="+", default=["recommended"], metavar="NAME",
                   help="pipelines run on the neuron model's probes (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="per-query seeds (default: 0 1 2)")
    p.add_argument("--static-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="static seeds (default: 0-4)")
    p.add_argument("--test-items", type=int, default=None, metavar="N",
                   help="score only the first N items of the test sample (paired with the same N of the own cells)")
    p.add_argument("--own", type=Path, default=head_to_head.DEFAULT_OUT / "results.jsonl",
                   help="head_to_head.py's results: the answering model's own cells (default: %(default)s)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    head_to_head.run(args, neuron_model=args.neuron_model, test_items=args.test_items, key=KEY, script=SCRIPT)


def proxy_name(row: dict) -> str:
    """How a proxy cell's pipeline is shown: ``recommended[default]`` = recommended on default's neurons."""
    return f"{row['pipeline']}[{row['neuron_model']}]"


def paired_rows(proxy: list[dict], own: list[dict]) -> list[dict]:
    """The proxy rows (pipelines renamed by :func:`proxy_name`) and the answering model's own rows with the
    same set, regime, k, pool and test sample (cut to the proxy's ``test_items``, where it scored only the first
    items): what :func:`head_to_head.comparisons` pairs."""
    items = {tuple(r.get(f) for f in OWN_FIELDS): r.get("test_items") for r in proxy}
    return [dict(r, pipeline=proxy_name(r)) for r in proxy] + [
        dict(r, correct=r["correct"][:items[setting]]) for r in own
        if (setting := tuple(r.get(f) for f in OWN_FIELDS)) in items and not r.get("neuron_model")]


def summarize(args: argparse.Namespace) -> str:
    """The proxy-model section of RESULTS.md, from this script's results and head_to_head.py's."""
    from neuroshot.stats import mean_difference

    proxy = [r for r in read_results(args.out / "results.jsonl") if (r.get("validation") or 0) == args.validation]
    if not proxy:
        raise SystemExit(f"no results in {args.out / 'results.jsonl'} yet")
    own = read_results(args.own)
    rows = paired_rows(proxy, own)
    own_pipelines = {r["pipeline"] for r in rows if not r.get("neuron_model")}  # never one proxy against another
    lines = ["# Served LLMs: demonstrations chosen with another model's neurons", "",
             "Produced by `benchmarks/proxy_model.py` (method: benchmarks/README.md, \"Served LLMs\"). The pipeline "
             "plans and retrieves on the neuron model's probes; the answering model scores every prompt. Each "
             "difference: accuracy points of the proxy minus the answering model's own cell (same test items, same "
             "seeds, same labels read by the simulated annotator), 95% bootstrap interval over items and seeds; "
             "**bold** = significant win, _italic_ = significant loss.", ""]
    for name in dict.fromkeys(proxy_name(r) for r in proxy):
        neuron_model = next(r["neuron_model"] for r in proxy if proxy_name(r) == name)
        pipeline = name.partition("[")[0]
        comps = [c for c in head_to_head.comparisons(rows, name, args.validation)
                 if c["metric"] == "accuracy" and c["baseline"] in own_pipelines]
        groups = defaultdict(list)
        for c in comps:
            groups[(c["model"], c["regime"])].append(c)
        for (model, regime), cs in sorted(groups.items()):
            baselines = sorted({c["baseline"] for c in cs}, key=lambda b: (b != pipeline, b != "random+knn", b))
            cols = " | ".join(f"− `{b}`" for b in baselines)
            own_acc = {(c["set"], c["budget"], c["baseline"]): c["baseline_acc"] for c in cs}
            same_plans, checked, self_acc = _own_plans(proxy, own, name, neuron_model, model, regime)
            seeds = sorted({s for c in cs for s in c["seeds"]})
            lines += [f"## `{pipeline}` on `{neuron_model}`'s neurons, answered by `{model}` ({regime})", "",
                      f"Seeds {seeds}; test items per set: " + ", ".join(
                          f"{c['set']} {c['diff'].n_items}" for c in {c["set"]: c for c in cs}.values())
                      + f". Accuracy of the proxy, of "
                      f"`{model}`'s own `{pipeline}` and of `random+knn`, and of `{neuron_model}` answering its own "
                      f"demonstrations (head_to_head.py), then the proxy minus each of `{model}`'s own pipelines:", "",
                      f"| set | budget | proxy | `{model}` own `{pipeline}` | `random+knn` | "
                      f"`{neuron_model}` answering | {cols} |",
                      "|---|---:|---:|---:|---:|---:|" + "---:|" * len(baselines)]
            by_cell = defaultdict(dict)
            for c in cs:
                by_cell[(c["set"], c["budget"])][c["baseline"]] = c
            for (set_name, budget), per in sorted(by_cell.items()):
                accs = [own_acc.get((set_name, budget, b)) for b in (pipeline, "random+knn")]
                mine = self_acc.get((set_name, budget))
                lines.append(f"| {set_name} | {budget} | {next(iter(per.values()))['reference_acc']:.3f} | "
                             + " | ".join("-" if a is None else f"{a:.3f}" for a in (*accs, mine)) + " | "
                             + " | ".join(head_to_head._fmt(per[b]["diff"]) if b in per else "-" for b in baselines)
                             + " |")
            lines += ["", "Per set (mean over budgets) and over all cells:", "", f"| set | {cols} |",
                      "|---|" + "---:|" * len(baselines)]
            for set_name in [*dict.fromkeys(c["set"] for c in cs), "all cells"]:
                cells = []
                for b in baselines:
                    diffs = [c["diff"] for c in cs if c["baseline"] == b and set_name in (c["set"], "all cells")]
                    cells.append(head_to_head._fmt(mean_difference(diffs)) if diffs else "-")
                lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
            lines += ["", f"The proxy's annotated items equal `{neuron_model}`'s own `{pipeline}` plan in "
                      f"head_to_head.py in {same_plans} of {checked} cells (the plan reads only `{neuron_model}`'s "
                      "probe).", ""]
    commands = sorted({r.get("command", "") for r in proxy})
    lines += ["Commands:", "", "```", *commands, "```", ""]
    text = "\n".join(lines)
    update_section(args.markdown, "proxy-model", text)
    return text


def _own_plans(proxy: list[dict], own: list[dict], name: str, neuron_model: str, model: str,
               regime: str) -> tuple[int, int, dict]:
    """How many proxy cells annotated exactly the items of ``neuron_model``'s own cell of the same pipeline (same
    set, budget, seed, pool and test sample), of how many had one; and that own cell's accuracy on the proxy's
    test items, per (set, budget)."""
    fields = ("pipeline", "set", "budget", "seed", "pool_size", "test_size", "k")
    mine = {tuple(r[f] for f in fields): r for r in own
            if r["model"] == neuron_model and r["regime"] == regime and not r.get("validation")}
    same = checked = 0
    acc = defaultdict(list)
    for r in proxy:
        theirs = mine.get(tuple(r[f] for f in fields))
        if proxy_name(r) != name or r["model"] != model or r["regime"] != regime or theirs is None:
            continue
        checked += 1
        same += list(theirs["ids"]) == list(r["ids"])
        acc[(r["set"], r["budget"])].append(head_to_head._scores(theirs["correct"][:r.get("test_items")]).mean())
    return same, checked, {key: float(np.mean(v)) for key, v in acc.items()}


def main(argv: list[str] | None = None) -> None:
    main_loop(parse_args(argv), run, summarize)


if __name__ == "__main__":
    main()
