"""neuroshot: neuron-aware active few-shot learning for locally hosted LLMs.

Probe an unlabeled pool on a local causal LM, read which feed-forward neurons it uses for the
task, and plan which few items to annotate as few-shot demonstrations.

The public names are imported lazily, so ``neuroshot --help`` and input checks do not wait for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "AnnotationLog": "annotation", "SimulatedAnnotator": "annotation", "export_for_annotation": "annotation",
    "read_annotations": "annotation", "Record": "data", "load_records": "data", "NeuroshotError": "errors",
    "evaluate_static": "evaluate", "LanguageModel": "models", "load_model": "models", "ProbeResult": "probing",
    "probe": "probing", "predict_proba": "scoring", "NeuronRetriever": "retrieval", "RandomRetriever": "retrieval",
    "Retriever": "retrieval", "get_retriever": "retrieval", "Plan": "strategies", "Strategy": "strategies",
    "get_strategy": "strategies", "register": "strategies", "Demonstration": "task", "Task": "task",
    "embed": "embeddings", "with_embeddings": "embeddings", "EmbeddingRetriever": "retrieval",
    "EvalResult": "evaluate", "evaluate_per_query": "evaluate", "predict_proba_static": "evaluate",
    "predict_proba_per_query": "evaluate", "metrics": "evaluate",
    "Experiment": "experiment", "ExperimentRecord": "experiment", "run_experiment": "experiment",
    "label_efficiency": "experiment", "learning_curves": "experiment",
    "active_plan": "active", "ActivePlan": "active",
    "plot_learning_curves": "plots", "plot_critical_neurons": "plots", "plot_forest": "plots",
    "Pipeline": "pipelines", "PIPELINES": "pipelines", "get_pipeline": "pipelines", "HybridRetriever": "retrieval",
    "PairedDifference": "stats", "paired_difference": "stats", "mean_difference": "stats", "compare_records": "stats",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'neuroshot' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
