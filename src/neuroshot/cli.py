"""The ``neuroshot`` command: plan which items to annotate, annotate them, or run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import NeuroshotError

EPILOG = """examples:
  neuroshot demo
  neuroshot plan tickets.jsonl --labels billing,shipping,returns --budget 20 --out to_label.csv
  neuroshot annotate to_label.csv --labels billing,shipping,returns --out labels.jsonl
  neuroshot plan tickets.jsonl --task task.json --budget 10 --labeled labels.jsonl --out next.jsonl
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="neuroshot: warning: %(message)s")
    try:
        return args.run(args) or 0
    except NeuroshotError as exc:
        print(f"neuroshot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nneuroshot: interrupted; finished work is kept (rerun to continue)", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroshot",
        description="Pick the few texts worth annotating as few-shot demonstrations, by reading which "
                    "feed-forward neurons a local LLM uses for your task.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    plan = sub.add_parser("plan", help="probe an unlabeled pool and choose the items to annotate",
                          description="Probe every text of DATA on the model, then choose BUDGET items to annotate "
                                      "and write them for annotators (JSONL, CSV or Label Studio JSON).")
    plan.add_argument("data", help="unlabeled pool: a .jsonl or .csv file with one text per row")
    _task_args(plan)
    plan.add_argument("--budget", type=int, required=True, help="how many items to annotate")
    plan.add_argument("--strategy", default="neuron_coverage",
                      help="neuron_coverage (default), neufs, entropy or random")
    plan.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="strategy parameter, e.g. --param tau=0.3 (repeatable)")
    plan.add_argument("--out", default="plan.jsonl",
                      help="output: .jsonl, .csv or .json (Label Studio tasks) [plan.jsonl]")
    plan.add_argument("--labeled", help="labels already given (JSONL/CSV/Label Studio export): not picked again")
    plan.add_argument("--seed", type=int, default=0)
    _model_args(plan)
    plan.add_argument("--method", default="direct_logit", choices=["direct_logit", "grad_x_act", "integrated_gradients"],
                      help="neuron attribution method [direct_logit]")
    plan.add_argument("--objective", default="logprob", choices=["logprob", "margin", "entropy"],
                      help="what grad_x_act / integrated_gradients attribute [logprob]")
    plan.add_argument("--top-k", type=int, default=64, help="neurons kept per layer in each signature [64]")
    plan.add_argument("--critical-fraction", type=float, default=0.01,
                      help="fraction of all neurons kept as task-critical [0.01]")
    plan.add_argument("--store", help="signature store folder (default: the user cache); reruns reuse it")
    plan.add_argument("--text-field", default="text")
    plan.add_argument("--id-field", default="id")
    plan.add_argument("--batch-size", type=int, default=16)
    plan.set_defaults(run=_run_plan)

    ann = sub.add_parser("annotate", help="label the planned items in the terminal",
                         description="Show each planned item and take a label by number or name. Every label is "
                                     "saved at once; rerun to continue where you stopped.")
    ann.add_argument("plan", help="the file written by 'neuroshot plan'")
    _task_args(ann)
    ann.add_argument("--out", help="labels file (JSONL), appended to [<plan>.labels.jsonl]")
    ann.set_defaults(run=_run_annotate)

    demo = sub.add_parser("demo", help="the whole loop on a built-in support-ticket set, vs random picks",
                          description="Probe 102 built-in support tickets on the default model, plan a budget, "
                                      "simulate annotation, show the chosen demonstrations and why, and compare "
                                      "test accuracy with random picks.")
    demo.add_argument("--budget", type=int, default=6)
    demo.add_argument("--strategy", default="neuron_coverage")
    demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    demo.add_argument("--model", default="default")
    demo.set_defaults(run=_run_demo)
    return parser


def _task_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--labels", help="comma-separated label set, e.g. billing,shipping,returns")
    group.add_argument("--task", help="task JSON: labels, instruction, templates, verbalizers")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M, offline), a model folder, a .gguf file or a hub id")
    p.add_argument("--adapter", help="LoRA adapter folder (PEFT)")
    p.add_argument("--max-text-tokens", type=int, help="truncate each text to this many tokens")


def _task(args):
    from .task import Task

    if args.task:
        task = Task.from_json(args.task)
    else:
        labels = [x.strip() for x in args.labels.split(",") if x.strip()]
        task = Task(labels=tuple(labels))
    if getattr(args, "max_text_tokens", None):
        from dataclasses import replace

        task = replace(task, max_text_tokens=args.max_text_tokens)
    return task


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NeuroshotError(f"--param expects KEY=VALUE, got '{pair}'")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _run_plan(args) -> int:
    from .annotation import AnnotationItem, export_for_annotation, read_annotations
    from .data import load_records
    from .models import cache_dir, load_model
    from .probing import probe
    from .strategies import get_strategy

    task = _task(args)
    out = Path(args.out)
    if out.suffix.lower() not in {".jsonl", ".csv", ".json"}:
        raise NeuroshotError(f"--out must end in .jsonl, .csv or .json (Label Studio), got '{out.name}'")
    records = load_records(args.data, text_field=args.text_field, id_field=args.id_field, label_field=None)
    labeled = read_annotations(args.labeled, task.labels) if args.labeled else {}
    index = {r.id: i for i, r in enumerate(records)}
    unknown = [i for i in labeled if i not in index]
    if unknown:
        raise NeuroshotError(f"{args.labeled}: ids not in {args.data}: {', '.join(unknown[:5])}")
    if args.budget < 1:
        raise NeuroshotError(f"--budget must be at least 1, got {args.budget}")
    if args.budget > len(records) - len(labeled):
        raise NeuroshotError(f"--budget {args.budget} is larger than the {len(records) - len(labeled)} "
                             f"unlabeled items in {args.data}")
    strategy = get_strategy(args.strategy, **_params(args.param))
    _quiet_transformers()
    lm = load_model(args.model, adapter=args.adapter)
    result = probe(lm, task, [r.text for r in records], method=args.method, objective=args.objective,
                   top_k=args.top_k, critical_fraction=args.critical_fraction, batch_size=args.batch_size,
                   store=args.store or cache_dir() / "signatures", ids=[r.id for r in records])
    plan = strategy.plan(result, args.budget, labeled={index[i]: lab for i, lab in labeled.items()}, seed=args.seed)
    items = [AnnotationItem(records[p.index].id, records[p.index].text, p.rank, p.why()) for p in plan.picks]
    export_for_annotation(items, out, task.labels)
    print(plan.explain([r.text for r in records]))
    print(f"\nwrote {len(items)} items to annotate to {out}")
    return 0


def _run_annotate(args) -> int:
    from .annotation import AnnotationLog, read_annotation_items, run_annotation_session

    task = _task(args)
    items = read_annotation_items(args.plan)
    out = Path(args.out) if args.out else Path(args.plan).with_suffix(".labels.jsonl")
    log = AnnotationLog(out, task.labels)
    run_annotation_session(items, task.labels, log, input_fn=lambda prompt: input(prompt))
    print(f"labels are in {out}")
    return 0


def _run_demo(args) -> int:
    from .demo import run_demo

    _quiet_transformers()
    run_demo(model=args.model, budget=args.budget, strategy=args.strategy, seeds=args.seeds)
    return 0


def _quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and notices; neuroshot shows its own progress."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
