"""neuroshot: neuron-aware active few-shot learning for locally hosted LLMs.

Probe an unlabeled pool on a local causal LM, read which feed-forward neurons it uses for the
task, and plan which few items to annotate as few-shot demonstrations.

The public names are imported lazily, so ``neuroshot --help`` and input checks do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    # Data and task
    "Record": "data", "load_records": "data",
    "Task": "task", "Demonstration": "task",
    "NeuroshotError": "errors",
    # Models
    "LanguageModel": "models", "ModelLike": "models", "load_model": "models", "resolve_model": "models",
    "model_lock": "models",
    # Probing and neurons
    "probe": "probing", "ProbeResult": "probing",
    "CriticalNeurons": "signatures",
    "predict_proba": "scoring",
    "embed": "embeddings", "with_embeddings": "embeddings",
    # Planning (which items to annotate)
    "Strategy": "strategies", "Plan": "strategies", "Pick": "strategies", "get_strategy": "strategies",
    "register": "strategies",
    "active_plan": "active", "ActivePlan": "active",
    # Retrieval (which annotated items each prompt shows)
    "Retriever": "retrieval", "Retrieved": "retrieval", "get_retriever": "retrieval",
    "NeuronRetriever": "retrieval", "EmbeddingRetriever": "retrieval", "HybridRetriever": "retrieval",
    "RandomRetriever": "retrieval",
    # Pipelines (a strategy and a retriever under one name)
    "Pipeline": "pipelines", "PIPELINES": "pipelines", "get_pipeline": "pipelines",
    "order_demonstrations": "ordering", "order_planned": "ordering",
    "plan_annotations": "workflow", "AnnotationPlan": "workflow",
    # Annotation
    "Annotator": "data", "AnnotationItem": "annotation", "AnnotationLog": "annotation",
    "SimulatedAnnotator": "annotation",
    "export_for_annotation": "annotation", "read_annotations": "annotation",
    # Evaluation and experiments
    "evaluate_static": "evaluate", "evaluate_per_query": "evaluate", "predict_proba_static": "evaluate",
    "predict_proba_per_query": "evaluate", "predict_proba_prompts": "evaluate", "EvalResult": "evaluate", "metrics": "evaluate",
    "Experiment": "experiment", "ExperimentRecord": "experiment", "run_experiment": "experiment",
    "write_records": "experiment",
    "learning_curves": "experiment", "label_efficiency": "experiment",
    "PairedDifference": "stats", "paired_difference": "stats", "mean_difference": "stats", "compare_records": "stats",
    # Plots
    "plot_learning_curves": "plots", "plot_critical_neurons": "plots", "plot_forest": "plots",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first use
    from .data import Annotator, Record, load_records
    from .task import Demonstration, Task
    from .errors import NeuroshotError
    from .models import LanguageModel, ModelLike, load_model, model_lock, resolve_model
    from .probing import ProbeResult, probe
    from .signatures import CriticalNeurons
    from .scoring import predict_proba
    from .embeddings import embed, with_embeddings
    from .strategies import Pick, Plan, Strategy, get_strategy, register
    from .active import ActivePlan, active_plan
    from .retrieval import (EmbeddingRetriever,
                            HybridRetriever, NeuronRetriever, RandomRetriever, Retrieved, Retriever, get_retriever)
    from .pipelines import PIPELINES, Pipeline, get_pipeline
    from .ordering import order_demonstrations, order_planned
    from .workflow import AnnotationPlan, plan_annotations
    from .annotation import AnnotationItem, AnnotationLog, SimulatedAnnotator, export_for_annotation, read_annotations
    from .evaluate import (EvalResult,
                           evaluate_per_query, evaluate_static, metrics, predict_proba_per_query,
                           predict_proba_prompts, predict_proba_static)
    from .experiment import (Experiment, ExperimentRecord, label_efficiency, learning_curves, run_experiment,
                             write_records)
    from .stats import PairedDifference, compare_records, mean_difference, paired_difference
    from .plots import plot_critical_neurons, plot_forest, plot_learning_curves


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'neuroshot' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
