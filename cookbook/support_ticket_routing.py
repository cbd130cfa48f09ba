"""Support ticket routing: which customer queries should an agent label so that a local model
routes new queries to the right intent? Banking77, a fixed 15-intent subset: by default the shipped
sample ``cookbook/data/banking77`` (240 pool and 95 test queries); the full set with
``--data ../shared/data/banking77`` (all 77 intents there with ``--all-labels``).

    .venv/bin/python cookbook/support_ticket_routing.py            # the defaults, on the shipped sample
    .venv/bin/python cookbook/support_ticket_routing.py --quick    # the smallest run: what the tests run

The integration demo puts the planned, annotated queries into a LangChain chain
(``NeuronAwareExampleSelector`` -> ``few_shot_prompt`` -> local pipeline -> ``LabelOutputParser``).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipe  # noqa: E402

from neuroshot import Task  # noqa: E402

# The same 15 intents as the benchmarks' banking77_15 (seeded choice, seed 0): card, top-up, transfer and fee queries.
INTENTS = ("atm_support", "automatic_top_up", "beneficiary_not_allowed", "card_payment_fee_charged",
           "disposable_card_limits", "extra_charge_on_statement", "get_physical_card", "passcode_forgotten",
           "pending_cash_withdrawal", "pin_blocked", "top_up_reverted", "transfer_fee_charged",
           "transfer_into_account", "verify_top_up", "visa_or_mastercard")


def make_task(intents) -> Task:
    """Route a banking customer query to its intent; intents read with spaces for the model."""
    return Task(labels=tuple(intents), instruction="Route the banking customer query to its intent: {labels}.",
                input_template="Query: {text}\nIntent:", demo_template="Query: {text}\nIntent: {label}",
                verbalizers={i: i.replace("_", " ") for i in intents})


RECIPE = _recipe.Recipe(name="support_ticket_routing", dataset="banking77", make_task=make_task, labels=INTENTS,
                        pool_size=150, validation_size=20, test_size=50, budgets=(8, 24), seeds=(0,), k=4)


def langchain_demo(result: _recipe.RecipeResult) -> None:
    """The annotated set, selected per query by neurons, in a local LangChain chain."""
    from langchain_neuroshot import LabelOutputParser, NeuronAwareExampleSelector, few_shot_prompt, neuroshot_pipeline

    # LangChain examples show their label as written: use the intents spelled out (the very same prompt text).
    task = result.split.task
    spoken = dict(zip(task.labels, task.verbalized))
    spoken_task = replace(task, labels=tuple(task.verbalized), verbalizers={})
    examples = [{"text": e["text"], "label": spoken[e["label"]]} for e in result.examples]
    selector = NeuronAwareExampleSelector.from_examples(examples, model=result.lm, task=spoken_task, k=result.args.k)
    chain = (few_shot_prompt(spoken_task, selector) | neuroshot_pipeline(selector, max_new_tokens=8)
             | LabelOutputParser.from_task(spoken_task, fallback="(unparsed)"))
    queries = _recipe.demo_queries(result)
    intent_of = {v: k for k, v in spoken.items()}
    answers = [intent_of.get(a, a) for a in chain.batch([{"text": r.text} for r in queries])]
    print(f"LangChain: few_shot_prompt | neuroshot_pipeline | LabelOutputParser, k={result.args.k} demos per query "
          f"from the {len(result.examples)} annotated queries")
    for record, answer in zip(queries, answers):
        print(f"  {'ok ' if answer == record.label else 'MISS'} {answer:<28} gold {record.label:<28} {_recipe._short(record.text, 60)}")
    first = {"text": queries[0].text}
    print(f"why these demonstrations for {queries[0].text!r}:")
    for e in selector.explain(first):
        print(f"  [{e.example['label']}] {_recipe._short(e.example['text'], 60)}\n     {e.why()}")
    result.summary["langchain"] = [dict(id=r.id, gold=r.label, answer=a) for r, a in zip(queries, answers)]


def main(argv=None) -> _recipe.RecipeResult:
    return _recipe.main(RECIPE, argv, demo=langchain_demo)


if __name__ == "__main__":
    main()
