"""Getting labels from people: export a plan, read labels back, and a crash-safe terminal session.

One module a step, each described in its own docstring: ``labels`` (the item shown, the label
set), ``files`` (export for a spreadsheet or Label Studio, read the filled-in file back), ``log``
and ``session`` (``neuroshot annotate``: a killed session keeps every label given), ``simulated``
(gold labels, for evaluation only). Deliberately light: no torch, no transformers.
"""

from __future__ import annotations

from ..data import Annotator
from .files import (FORMATS, export_for_annotation, labelstudio_config_path, read_annotation_items,
                    read_annotations)
from .labels import AnnotationItem
from .log import AnnotationLog
from .session import run_annotation_session
from .simulated import SimulatedAnnotator

__all__ = [
    "FORMATS",
    "AnnotationItem",
    "AnnotationLog",
    "Annotator",
    "SimulatedAnnotator",
    "export_for_annotation",
    "labelstudio_config_path",
    "read_annotation_items",
    "read_annotations",
    "run_annotation_session",
]
