"""The ``neuroshot`` command: plan which items to annotate, annotate them, or run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ._validation import check_whole
from .errors import NeuroshotError

EPILOG = """examples:
  neuroshot demo
  neuroshot plan tickets.jsonl --labels billing,shipping,returns --budget 20 --out to_label.csv
  neuroshot annotate to_label.csv --labels billing,shipping,returns --out labels.jsonl
  neuroshot plan tickets.jsonl --task task.json --budget 10 --labeled labels.jsonl --out next.jsonl
  neuroshot evaluate --pool pool.jsonl --test test.jsonl --strategy random --strategy neuron_coverage \\
      --budget 10 --budget 20 --seeds 0 1 2 --out results.csv --plot curve.png
  neuroshot label-studio push tickets.jsonl --labels billing,shipping,returns --project Tickets --budget 10
  neuroshot label-studio follow tickets.jsonl --labels billing,shipping,returns --project Tickets --batch 10 --rounds 3
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


class _Help(argparse.RawDescriptionHelpFormatter):
    """Fills the registries' names into help texts ({strategies}, {retrievers}, {pipelines}) when help is
    shown: a new strategy or retriever file is listed without editing the CLI, and building the parser
    does not import torch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{" in text:
            from .pipelines import PIPELINES
            from .retrieval import RETRIEVERS
            from .strategies import STRATEGIES

            names = {"strategies": STRATEGIES, "retrievers": RETRIEVERS, "pipelines": PIPELINES}
            for key, registry in names.items():
                text = text.replace("{" + key + "}", ", ".join(sorted(registry)))
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroshot",
        description="Pick the few texts worth annotating as few-shot demonstrations, by reading which "
                    "feed-forward neurons a local LLM uses for your task.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    plan = sub.add_parser("plan", help="probe an unlabeled pool and choose the items to annotate", formatter_class=_Help,
                          description="Probe every text of DATA on the model, then choose BUDGET items to annotate "
                                      "and write them for annotators (JSONL, CSV or Label Studio JSON).")
    plan.add_argument("data", help="unlabeled pool: a .jsonl, .csv or .parquet file with one text per row")
    _task_args(plan)
    plan.add_argument("--budget", type=int, required=True, help="how many items to annotate")
    plan.add_argument("--pipeline", default="recommended",
                      help="named pipeline whose strategy plans (default: recommended; see `neuroshot evaluate`)")
    plan.add_argument("--strategy", help="a strategy instead of the pipeline's: {strategies}; 'active:NAME' plans the "
                                         "next round of NAME, re-probing with the --labeled items in context")
    plan.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="strategy parameter, e.g. --param tau=0.3 (repeatable)")
    plan.add_argument("--out", default="plan.jsonl",
                      help="output: .jsonl, .csv or .json (Label Studio tasks) [plan.jsonl]")
    plan.add_argument("--labeled", help="labels already given (JSONL/CSV/Label Studio export): not picked again")
    plan.add_argument("--seed", type=int, default=0)
    _model_args(plan)
    _probe_args(plan)
    plan.add_argument("--backend", default="local", choices=["local", "ray"],
                      help='where to probe: this process, or Ray Data actors (pip install "neuroshot[ray]") [local]')
    plan.add_argument("--ray-address", help="a running Ray cluster to join (default: start a local one)")
    plan.add_argument("--actors", type=int, default=2, help="model copies (one per Ray actor) with --backend ray [2]")
    plan.set_defaults(run=_run_plan)

    ann = sub.add_parser("annotate", help="label the planned items in the terminal",
                         description="Show each planned item and take a label by number or name. Every label is "
                                     "saved at once; rerun to continue where you stopped.")
    ann.add_argument("plan", help="the file written by 'neuroshot plan'")
    _task_args(ann)
    ann.add_argument("--out", help="labels file (JSONL), appended to [<plan>.labels.jsonl]")
    ann.set_defaults(run=_run_annotate)

    demo = sub.add_parser("demo", help="the whole loop on a built-in support-ticket set, vs random+knn",
                          description="Probe 102 built-in support tickets on the default model, plan a budget with "
                                      "the recommended pipeline, simulate annotation, show the chosen tickets and why, "
                                      "and compare per-query test accuracy with random annotation + MiniLM nearest "
                                      "neighbours, with the paired bootstrap interval of the difference.")
    demo.add_argument("--budget", type=int, default=12, help="tickets to annotate [12]")
    demo.add_argument("--k", type=int, default=4, help="demonstrations per test ticket [4]")
    demo.add_argument("--pipeline", default="recommended", help="the pipeline to show [recommended]")
    demo.add_argument("--baseline", default="random+knn", help="the pipeline it is compared with [random+knn]")
    demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    demo.add_argument("--model", default="default")
    demo.set_defaults(run=_run_demo)

    _evaluate_parser(sub)
    _label_studio_parser(sub)
    return parser


def _label_studio_parser(sub) -> None:
    ls = sub.add_parser("label-studio", help="annotate in a running Label Studio, in plan order, with active rounds",
                        description="Publish the plan to a Label Studio server (the API key comes from "
                                    "$LABEL_STUDIO_API_KEY) so that it serves tasks in plan order, and follow the "
                                    "annotations: every --batch labels, re-plan with the labels so far and publish "
                                    "the next round. docs/label-studio.md walks through it.")
    ls_sub = ls.add_subparsers(title="steps", required=True, metavar="STEP")
    push = ls_sub.add_parser("push", help="create the project, import the pool, publish round 1", formatter_class=_Help,
                             description="Create the project if absent, import the pool once (tasks carry the pool "
                                         "ids), probe and plan BUDGET items, and publish them as predictions whose "
                                         "scores make Label Studio serve them in plan order.")
    follow = ls_sub.add_parser("follow", help="log new annotations, publish a new round every --batch labels",
                               formatter_class=_Help,
                               description="Poll the project's annotations, append each new label to the annotation "
                                           "log, and after every BATCH labels re-plan the rest of the pool with the "
                                           "labels so far in context and publish the next round. Safe to kill and "
                                           "restart at any point.")
    for p in (push, follow):
        p.add_argument("data", help="the unlabeled pool (.jsonl or .csv), the same for push and follow")
        _task_args(p)
        p.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"),
                       help="Label Studio server [$LABEL_STUDIO_URL or http://localhost:8080]")
        p.add_argument("--project", required=True, help="project title (created by push if absent)")
        p.add_argument("--log", help="annotation log, one line per label; its loop state is <log>.state.json "
                                     "[<pool stem>.<project>.labels.jsonl beside the pool]")
        p.add_argument("--pipeline", default="recommended", help="pipeline whose strategy plans [recommended]")
        p.add_argument("--strategy", help="a strategy instead of the pipeline's: {strategies}")
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="strategy parameter")
        p.add_argument("--pre-annotate", action="store_true",
                       help="show the model's suggested label as a pre-annotation of each planned task")
        p.add_argument("--seed", type=int, default=0)
        _model_args(p)
        _probe_args(p)
    push.add_argument("--budget", type=int, required=True, help="items in round 1")
    follow.add_argument("--batch", type=int, required=True, help="labels per round: a new round after every BATCH")
    follow.add_argument("--rounds", type=int, required=True,
                        help="rounds in all (push's included): stop once ROUNDS are published and ROUNDS x BATCH "
                             "labels are logged")
    follow.add_argument("--interval", type=float, default=5.0, help="seconds between polls [5]")
    push.set_defaults(run=_run_label_studio)
    follow.set_defaults(run=_run_label_studio, budget=None)


def _evaluate_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="compare strategies on labelled data: plan, simulate annotation, score a test set",
        description="For every strategy, budget and seed: probe the pool on the model, plan BUDGET items, reveal "
                    "the gold labels of exactly those items (a simulated annotator; no other pool label is read), "
                    "use them as demonstrations and score the test set. Prints mean +- std over seeds and the "
                    "label efficiency against random, and writes one row per run to --out.",
        epilog="examples:\n"
               "  neuroshot evaluate --pool pool.jsonl --test test.jsonl --budget 5 --budget 10 --budget 20\n"
               "  neuroshot evaluate --pool pool.jsonl --test test.jsonl --regime per-query --k 4 \\\n"
               "      --strategy random --strategy neuron_coverage --strategy active:entropy --budget 18 --budget 50 \\\n"
               "      --calibrated --out results.csv --plot curve.png",
        formatter_class=_Help)
    ev.add_argument("--pool", required=True, help="labelled pool to plan from: .jsonl or .csv with text and label")
    ev.add_argument("--test", required=True, help="labelled test set (.jsonl or .csv); never selectable")
    _task_args(ev, required=False, labels_help="comma-separated label set (default: the labels found in the two files)")
    ev.add_argument("--pipeline", action="append", metavar="NAME",
                    help="pipeline to compare (repeatable): {pipelines}, or any strategy name (a "
                         "strategy and its retriever under one name); the first is compared with each other one, "
                         "paired over test items and seeds, with a 95%% bootstrap interval "
                         "[recommended and random+knn, when no --strategy is given]")
    ev.add_argument("--strategy", action="append", metavar="NAME",
                    help="strategy to compare (repeatable): {strategies}, with --retriever in the per-query regime; "
                         "'active:NAME' runs NAME in active rounds (re-probing with the labels so far in context)")
    ev.add_argument("--budget", type=int, action="append", required=True, metavar="N",
                    help="number of items to annotate (repeatable: one point of the learning curve each)")
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED", help="seeds [0 1 2]")
    ev.add_argument("--regime", choices=["static", "per-query"], default="static",
                    help="static: all annotated items as one prompt prefix; per-query: K of them retrieved "
                         "for each test item [static]")
    ev.add_argument("--k", type=int, default=4, help="demonstrations per test item in the per-query regime [4]")
    ev.add_argument("--retriever", default="embedding",
                    help="per-query retriever of --strategy runs: {retrievers} [embedding: MiniLM kNN, as "
                         "--pipeline NAME gives a strategy]")
    ev.add_argument("--retriever-param", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter of --retriever (repeatable; JSON values), e.g. mmr=0.5")
    ev.add_argument("--rounds", type=int, default=3, help="rounds of 'active:' strategies [3]")
    ev.add_argument("--calibrated", action="store_true",
                    help="also report contextually calibrated scores (Zhao et al. 2021)")
    ev.add_argument("--max-test", type=int, metavar="N", help="score only the first N test items")
    ev.add_argument("--out", default="results.csv", help="results, one row per run: .csv or .jsonl [results.csv]")
    ev.add_argument("--plot", help="also draw the learning curves into this .png file")
    _model_args(ev)
    _probe_args(ev)
    ev.add_argument("--label-field", default="label")
    ev.set_defaults(run=_run_evaluate)


def _task_args(p: argparse.ArgumentParser, required: bool = True,
               labels_help: str = "comma-separated label set, e.g. billing,shipping,returns") -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--labels", help=labels_help)
    group.add_argument("--task", help="task JSON: labels, instruction, templates, verbalizers")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M, offline), a model folder, a .gguf file or a hub id")
    p.add_argument("--adapter", help="LoRA adapter folder (PEFT)")
    p.add_argument("--max-text-tokens", type=int, help="truncate each text to this many tokens")


def _probe_args(p: argparse.ArgumentParser) -> None:
    """How the pool is probed and read (plan and evaluate); the choices are attribution's METHODS and
    OBJECTIVES, written out so that building the parser imports no torch."""
    p.add_argument("--method", default="direct_logit", choices=["direct_logit", "grad_x_act", "integrated_gradients"],
                   help="neuron attribution method [direct_logit]")
    p.add_argument("--objective", default="logprob", choices=["logprob", "margin", "entropy"],
                   help="what grad_x_act / integrated_gradients attribute [logprob]")
    p.add_argument("--top-k", type=int, default=64, help="neurons kept per layer in each signature [64]")
    p.add_argument("--critical-fraction", type=float, default=0.01,
                   help="fraction of all neurons kept as task-critical [0.01]")
    p.add_argument("--store", help="signature store folder (default: the user cache); reruns reuse it")
    p.add_argument("--on-damage", default="error", choices=["error", "recompute"],
                   help="a store chunk failing its checksum: stop with an error naming it, or probe its items "
                        "again [error]")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="id")
    p.add_argument("--batch-size", type=int, default=16)


def _probe_kwargs(args) -> dict:
    """The ``probe`` settings of the options of :func:`_probe_args`."""
    from .models import cache_dir

    return dict(method=args.method, objective=args.objective, top_k=args.top_k,
                critical_fraction=args.critical_fraction, batch_size=args.batch_size,
                store=args.store or cache_dir() / "signatures", on_damage=args.on_damage)


def _task(args):
    from .task import Task

    if args.task:
        task = Task.from_json(args.task)
    else:
        task = Task(labels=tuple(x.strip() for x in args.labels.split(",") if x.strip()))
    if getattr(args, "max_text_tokens", None):
        from dataclasses import replace

        task = replace(task, max_text_tokens=args.max_text_tokens)
    return task


def _params(pairs: list[str], option: str = "--param") -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NeuroshotError(f"{option} expects KEY=VALUE, got '{pair}'")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _run_plan(args) -> int:
    from .annotation import AnnotationItem, export_for_annotation, read_annotations
    from .data import load_records
    from .models import load_model
    from .pipelines import get_pipeline
    from .probing import probe
    from .strategies.active import ActiveStrategy

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
    check_whole("--budget", args.budget)
    if args.budget > len(records) - len(labeled):
        raise NeuroshotError(f"--budget {args.budget} is larger than the {len(records) - len(labeled)} "
                             f"unlabeled items in {args.data}")
    pipeline = get_pipeline(args.pipeline).customized(strategy=args.strategy, strategy_params=_params(args.param))
    strategy = pipeline.make_strategy()
    _check_probe_args(args)
    check_whole("--batch-size", args.batch_size)
    check_whole("--actors", args.actors)
    _quiet_transformers()
    lm = load_model(args.model, adapter=args.adapter)
    probe_kwargs = _probe_kwargs(args)
    if isinstance(strategy, ActiveStrategy):  # the next round: the rest re-probed with --labeled in context
        strategy.lm, strategy.probe_kwargs, strategy.progress = lm, probe_kwargs, True
    ray_source = dict(pool_source=args.data, text_field=args.text_field) if args.backend == "ray" else {}
    texts = [r.text for r in records]
    result = probe(lm, task, texts, ids=[r.id for r in records], backend=args.backend,
                   actors=args.actors, ray_address=args.ray_address, **ray_source, **probe_kwargs)
    plan = strategy.plan(result, args.budget, labeled={index[i]: lab for i, lab in labeled.items()}, seed=args.seed)
    items = [AnnotationItem(records[p.index].id, texts[p.index], p.rank, p.why()) for p in plan.picks]
    export_for_annotation(items, out, task.labels)
    print(plan.explain(texts))
    print(f"\nwrote {len(items)} items to annotate to {out}")
    return 0


def _run_label_studio(args) -> int:
    from .annotation.label_studio import Follower, LabelStudioClient, RoundPlanner, push
    from .data import load_records
    from .models import load_model
    from .pipelines import get_pipeline

    task = _task(args)
    records = load_records(args.data, text_field=args.text_field, id_field=args.id_field, label_field=None)
    follow = args.budget is None
    for name in ("batch", "rounds") if follow else ("budget",):
        check_whole(f"--{name}", getattr(args, name))
    if not follow and args.budget > len(records):
        raise NeuroshotError(f"--budget {args.budget} is larger than the {len(records)} items in {args.data}")
    strategy = get_pipeline(args.pipeline).customized(strategy=args.strategy,
                                                      strategy_params=_params(args.param)).make_strategy()
    _check_probe_args(args)
    slug = "".join(c if c.isalnum() else "-" for c in args.project).strip("-").lower() or "project"
    log = Path(args.log) if args.log else Path(args.data).with_name(f"{Path(args.data).stem}.{slug}.labels.jsonl")
    client = LabelStudioClient(args.url)
    client.check()  # a wrong URL or key fails before the model loads
    _quiet_transformers()
    lm = load_model(args.model, adapter=args.adapter)
    planner = RoundPlanner(lm, task, [r.id for r in records], [r.text for r in records], strategy, seed=args.seed,
                           probe_kwargs=_probe_kwargs(args))
    if follow:
        follower = Follower(client, args.project, planner, log, batch=args.batch, rounds=args.rounds,
                            pre_annotate=args.pre_annotate)
        print(f"following project {args.project!r} at {args.url}: {len(follower.log)} labels logged in {log}, "
              f"round {len(follower.state.rounds)} published; a new round every {args.batch} labels", flush=True)
        follower.run(interval=args.interval)
        print(f"done: {len(follower.state.rounds)} rounds published, {len(follower.log)} labels in {log}")
        return 0
    result = push(client, args.project, planner, args.budget, log, pre_annotate=args.pre_annotate)
    print(f"project {args.project!r} (id {result.project_id}) at {args.url}: {result.imported} tasks imported; "
          f"round {result.round.round} published as {result.round.model_version}, {len(result.round.ids)} tasks "
          f"in plan order; labels will be logged in {log}")
    return 0


def _check_probe_args(args) -> None:
    from .probing import check_probe_settings

    check_probe_settings(method=args.method, objective=args.objective, top_k=args.top_k,
                         critical_fraction=args.critical_fraction)


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
    from .pipelines import get_pipeline

    for name in (args.pipeline, args.baseline):
        get_pipeline(name)  # fail before loading the model
    check_whole("--budget", args.budget)
    check_whole("--k", args.k)
    run_demo(model=args.model, budget=args.budget, pipeline=args.pipeline, baseline=args.baseline, k=args.k,
             seeds=args.seeds)
    return 0


def _run_evaluate(args) -> int:
    from .data import label_set, load_records

    out = Path(args.out)
    if out.suffix.lower() not in {".csv", ".jsonl"}:
        raise NeuroshotError(f"--out must end in .csv or .jsonl, got '{out.name}'")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise NeuroshotError(f"--plot must end in .png, got '{Path(args.plot).name}'")
    for name in ("k", "rounds", "batch_size"):
        check_whole(f"--{name.replace('_', '-')}", getattr(args, name))
    _check_probe_args(args)
    fields = dict(text_field=args.text_field, id_field=args.id_field, label_field=args.label_field)
    pool, test = load_records(args.pool, **fields), load_records(args.test, **fields)
    if args.max_test is not None:
        check_whole("--max-test", args.max_test)
        test = test[:args.max_test]
    for path, records in ((args.pool, pool), (args.test, test)):
        unlabeled = [r.id for r in records if r.label is None]
        if unlabeled:
            raise NeuroshotError(f"{path}: {len(unlabeled)} item(s) without a '{args.label_field}' "
                                 f"(e.g. {unlabeled[0]!r}): evaluation needs gold labels")
    if not args.labels and not args.task:
        args.labels = ",".join(label_set([*pool, *test]))
    task = _task(args)
    from .pipelines import get_pipeline

    default = [] if args.strategy else ["recommended", "random+knn"]
    pipelines = [get_pipeline(name) for name in args.pipeline or default]
    strategies = args.strategy or []
    budgets = sorted(set(args.budget))
    check_whole("--budget", budgets[0])
    if budgets[-1] > len(pool):
        raise NeuroshotError(f"--budget {budgets[-1]} is larger than the {len(pool)} items in {args.pool}")
    from .experiment import Experiment, label_efficiency, learning_curves, write_records
    from .models import load_model
    from .strategies import get_strategy

    for name in strategies + [p.strategy for p in pipelines]:
        get_strategy(name)  # fail early
    for pipeline in pipelines:
        pipeline.make_retriever()  # fail before probing
    from .retrieval import get_retriever

    retriever_params = _params(args.retriever_param, "--retriever-param")
    get_retriever(args.retriever, **retriever_params)  # fail before loading the model
    _quiet_transformers()
    lm = load_model(args.model, adapter=args.adapter)
    probe_kwargs = _probe_kwargs(args)
    exp = Experiment(lm, task, pool, test, regime=args.regime, k=args.k, retriever=args.retriever,
                     retriever_params=retriever_params, calibrated=args.calibrated, rounds=args.rounds, probe_kwargs=probe_kwargs,
                     batch_size=args.batch_size)
    finished: list = []

    def save(record) -> None:  # after every run: an interrupted evaluation keeps its results
        finished.append(record)
        write_records(out, finished)

    records = exp.run([*pipelines, *strategies], budgets, args.seeds, on_record=save)
    print(_results_table(records, args.calibrated))
    metrics = ["accuracy"] + (["accuracy_calibrated"] if args.calibrated else [])
    names = [p.name for p in pipelines] + strategies
    baseline = next((b for b in ("random", "random+knn") if b in names), None)
    for metric in metrics if baseline else []:
        eff = label_efficiency(learning_curves(records, metric), baseline=baseline)
        top = eff[baseline]
        print(f"\nlabel efficiency ({metric.replace('_', ' ')}; target: {baseline} at {top.baseline_budget} labels, "
              f"{top.target:.3f}):")
        for name in names:
            print(f"  {eff[name]}")
    if len(names) > 1:
        print(_comparison_table(records, [r.label for r in test], names[0], args.calibrated))
    print(f"\nwrote {len(records)} runs to {out}")
    if args.plot:
        from .plots import plot_learning_curves

        plot = Path(args.plot)
        for metric in metrics:
            path = plot if metric == "accuracy" else plot.with_name(plot.stem + "_calibrated.png")
            plot_learning_curves(records, path, metric=metric,
                                 title=f"{Path(args.test).name}: {metric.replace('_', ' ')} vs labels ({args.regime})")
            print(f"wrote the learning curves to {path}")
    return 0


def _comparison_table(records, gold, reference: str, calibrated: bool) -> str:
    """Paired differences of ``reference`` minus each other pipeline, per budget and over budgets."""
    from .stats import compare_records

    lines = [f"\n{reference} minus each other, paired over test items and seeds (95% bootstrap interval):"]
    for metric, cal in [("accuracy", False)] + ([("calibrated accuracy", True)] if calibrated else []):
        for c in compare_records(records, gold, reference, calibrated=cal):
            where = "all budgets" if c.budget is None else f"budget {c.budget}"
            lines.append(f"  {metric:<19}  {c.other:<24} {where:<12} {c.difference}")
    return "\n".join(lines)


def _results_table(records, calibrated: bool) -> str:
    import numpy as np

    from .stats import mean_std

    groups: dict[tuple[str, int], list] = {}
    for r in records:
        groups.setdefault((r.pipeline or r.strategy, r.budget), []).append(r)
    width = max(8, *(len(s) for s, _ in groups))
    head = f"{'strategy':<{width}}  budget  seeds  {'accuracy':<13}  {'macro-F1':<13}"
    head += f"  {'calibr. acc.':<13}  {'calibr. F1':<13}" if calibrated else ""
    lines = [f"{records[0].regime} regime, {records[0].n_test} test items; mean ± std over seeds", "",
             head + "  s / run"]
    metrics = ["accuracy", "macro_f1"] + (["accuracy_calibrated", "macro_f1_calibrated"] if calibrated else [])
    for (strategy, budget), rs in groups.items():
        line = f"{strategy:<{width}}  {budget:>6}  {len(rs):>5}  " + "  ".join(
            f"{mean_std([getattr(r, m) for r in rs]):<13}" for m in metrics)
        lines.append(line + f"  {np.mean([r.seconds for r in rs]):7.1f}")
    return "\n".join(lines)


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
