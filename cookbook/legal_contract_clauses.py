"""Legal contract clauses: which clauses should a lawyer label so that a local model tells the
clause type of new ones? CUAD, the 10 most frequent clause types: by default the shipped sample
``cookbook/data/cuad_clause_types_top10`` (170 pool and 100 test clauses); the full set with
``--data ../shared/data/cuad_clause_types_top10``. Clauses are cut to their first 64 tokens in the prompt.

    .venv/bin/python cookbook/legal_contract_clauses.py
    .venv/bin/python cookbook/legal_contract_clauses.py --quick    # the smallest run: what the tests run

The integration demo gives the planned, annotated clauses to DSPy: ``NeuronAwareFewShot``
(per query) compiles a ``dspy.Predict`` program run on the same local model (``local_lm``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipe  # noqa: E402

from neuroshot import Task  # noqa: E402


def make_task(labels) -> Task:
    """Name the type of a contract clause (CUAD categories, e.g. Governing Law, Cap On Liability)."""
    return Task(labels=tuple(labels), instruction="Classify the contract clause by its type: {labels}.",
                input_template="Clause: {text}\nType:", demo_template="Clause: {text}\nType: {label}",
                max_text_tokens=64)


RECIPE = _recipe.Recipe(name="legal_contract_clauses", dataset="cuad_clause_types_top10", make_task=make_task,
                        pool_size=150, validation_size=20, test_size=50, budgets=(8, 24), seeds=(0,), k=2)


def dspy_demo(result: _recipe.RecipeResult) -> None:
    """The annotated clauses as a DSPy program's per-query demonstrations, on the same local model."""
    import dspy
    from dspy_neuroshot import NeuronAwareFewShot, local_lm

    labels = result.split.task.labels
    Clause = dspy.make_signature({"clause": (str, dspy.InputField()),
                                  "clause_type": (Literal[tuple(labels)], dspy.OutputField())},
                                 "Classify the contract clause by its type.")
    trainset = [dspy.Example(clause=e["text"], clause_type=e["label"]).with_inputs("clause") for e in result.examples]
    teleprompter = NeuronAwareFewShot(k=result.args.k, model=result.lm, per_query=True, max_text_tokens=64,
                                      progress=False)
    with dspy.context(lm=local_lm(result.lm, max_new_tokens=16)):
        program = teleprompter.compile(dspy.Predict(Clause), trainset=trainset)
        queries = _recipe.demo_queries(result)
        answers = [program(clause=r.text).clause_type for r in queries]
        print(f"DSPy: NeuronAwareFewShot(per_query=True, k={result.args.k}) over the {len(trainset)} annotated clauses, "
              "dspy.Predict on local_lm(the same model)")
        for record, answer in zip(queries, answers):
            print(f"  {'ok ' if answer == record.label else 'MISS'} {answer!s:<26} gold {record.label:<26} {_recipe._short(record.text, 50)}")
        print(f"why these demonstrations for test item {queries[0].id}:")
        for demo, reason in program.retrieve(clause=queries[0].text):
            print(f"  [{demo.clause_type}] {_recipe._short(demo.clause, 60)}\n     {reason.why()}")
    result.summary["dspy"] = [dict(id=r.id, gold=r.label, answer=str(a)) for r, a in zip(queries, answers)]


def main(argv=None) -> _recipe.RecipeResult:
    return _recipe.main(RECIPE, argv, demo=dspy_demo)


if __name__ == "__main__":
    main()
