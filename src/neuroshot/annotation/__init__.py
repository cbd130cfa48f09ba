"""Getting labels from people: export a plan, read labels back, and a crash-safe terminal session.

The flow behind ``neuroshot annotate``:

* :func:`export_for_annotation` writes the planned items as JSONL, CSV or a Label Studio task
  file (plus its labeling config), for annotation in a spreadsheet or in Label Studio;
* :func:`read_annotations` reads the filled-in file back, checking every label against the
  label set (case and surrounding spaces do not matter; the canonical spelling is returned);
* :class:`AnnotationLog` and :func:`run_annotation_session` label items in the terminal, one
  fsync'ed JSONL line per label, so a session killed at any moment keeps every label given
  and a rerun continues where it stopped;
* :class:`SimulatedAnnotator` plays the annotator from gold labels, for evaluation only.

One module each: ``labels`` (items, label set), ``files`` (export / import), ``log``,
``session``, ``simulated``. Deliberately light: no torch, no transformers.
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
