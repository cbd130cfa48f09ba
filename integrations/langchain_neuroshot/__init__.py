"""LangChain integration of neuroshot: neuron-aware few-shot example selection on a local LLM.

Two lines put neuron-selected demonstrations in a chain::

    selector = NeuronAwareExampleSelector.from_examples(examples, model="default", task=task, k=4)
    prompt = few_shot_prompt(task, selector)          # or any FewShot(Chat)PromptTemplate(example_selector=selector)

``neuroshot_pipeline(selector)`` gives a ``HuggingFacePipeline`` on the same model object, so
``prompt | neuroshot_pipeline(selector) | LabelOutputParser.from_task(task)`` runs fully locally;
``plan_annotations`` picks which pool items to label first. Install with ``pip install neuroshot[langchain]``.
"""

from __future__ import annotations

from neuroshot import model_lock, resolve_model
from .chain import LabelOutputParser, few_shot_prompt, neuroshot_pipeline
from .planning import plan_annotations
from .selector import ExampleExplanation, NeuronAwareExampleSelector

__all__ = [
    "ExampleExplanation", "LabelOutputParser", "NeuronAwareExampleSelector", "few_shot_prompt", "model_lock",
    "neuroshot_pipeline", "plan_annotations", "resolve_model",
]
