"""DSPy integration of neuroshot: neuron-aware demonstrations and a local in-process engine.

- :class:`NeuronAwareFewShot`: a teleprompter that picks few-shot demos by the FFN neurons the
  local model uses for the task (static or per-query; from a labeled trainset, or active: it
  plans which unlabeled examples to annotate).
- :class:`NeuronFewShotProgram`: the per-query program it returns (demos retrieved per call).
- :class:`LocalEngine` / :func:`local_lm`: ``dspy.LM("local/...", engine=LocalEngine(...))`` runs
  DSPy programs on the same local Hugging Face model, offline.

Install with ``pip install 'neuroshot[dspy]'``.
"""

from .engine import LocalEngine, OutputField, local_lm, output_fields
from .program import AnnotatedSet, NeuronFewShotProgram
from .teleprompter import AnnotationPending, NeuronAwareFewShot

__all__ = ["AnnotatedSet", "AnnotationPending", "LocalEngine", "NeuronAwareFewShot", "NeuronFewShotProgram",
           "OutputField", "local_lm", "output_fields"]
