"""Medical abstracts: which abstracts should a clinician label so that a local model names the
disease class of new ones? Five classes: by default the shipped sample ``cookbook/data/medical_abstracts``
(140 pool and 100 test abstracts, each cut to 700 characters); the full set with
``--data ../shared/data/medical_abstracts``. Abstracts are cut to their first 64 tokens (title and
opening) in the prompt.

    .venv/bin/python cookbook/medical_abstracts.py
    .venv/bin/python cookbook/medical_abstracts.py --quick    # the smallest run: what the tests run

The integration demo puts the planned, annotated abstracts into a LangChain chain with a
*static* neuron-aware selector (one planned set of ``k`` demonstrations for every query, no model
call per query for selection).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipe  # noqa: E402

from neuroshot import Task  # noqa: E402


def make_task(labels) -> Task:
    """Name the disease class a medical abstract is about (neoplasms, cardiovascular, ...)."""
    return Task(labels=tuple(labels), instruction="Classify the medical abstract by the disease class it is about: {labels}.",
                input_template="Abstract: {text}\nClass:", demo_template="Abstract: {text}\nClass: {label}",
                max_text_tokens=64)


RECIPE = _recipe.Recipe(name="medical_abstracts", dataset="medical_abstracts", make_task=make_task,
                        pool_size=120, validation_size=20, test_size=50, budgets=(8, 24), seeds=(0,), k=2,
                        # each candidate costs a scoring pass over the validation slice; with all five and a pool
                        # of 150 the default run took 16.5 min on 2 idle cores (--embedding-candidates to widen)
                        embedding_candidates=("kmeans", "fast_votek", "ideal"))


def langchain_static_demo(result: _recipe.RecipeResult) -> None:
    """The annotated abstracts in a local LangChain chain; the selector plans one static set of k from them."""
    from langchain_neuroshot import LabelOutputParser, NeuronAwareExampleSelector, few_shot_prompt, neuroshot_pipeline

    task = result.split.task
    selector = NeuronAwareExampleSelector.from_examples(result.examples, model=result.lm, task=task,
                                                        k=result.args.k, mode="static")
    chain = (few_shot_prompt(task, selector) | neuroshot_pipeline(selector, max_new_tokens=8)
             | LabelOutputParser.from_task(task, fallback="(unparsed)"))
    queries = _recipe.demo_queries(result)
    answers = chain.batch([{"text": r.text} for r in queries])
    print(f"LangChain: static NeuronAwareExampleSelector (k={result.args.k} planned from the {len(result.examples)} "
          "annotated abstracts) | neuroshot_pipeline | LabelOutputParser")
    for e in selector.explain({"text": queries[0].text}):
        print(f"  demo [{e.example['label']}] {_recipe._short(e.example['text'], 60)}\n     {e.why()}")
    for record, answer in zip(queries, answers):
        print(f"  {'ok ' if answer == record.label else 'MISS'} {answer:<32} gold {record.label:<32} {_recipe._short(record.text, 40)}")
    result.summary["langchain"] = [dict(id=r.id, gold=r.label, answer=a) for r, a in zip(queries, answers)]


def main(argv=None) -> _recipe.RecipeResult:
    return _recipe.main(RECIPE, argv, demo=langchain_static_demo)


if __name__ == "__main__":
    main()
