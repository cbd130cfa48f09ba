"""The classification task: instruction, labels, verbalizers and prompt templates."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral
from pathlib import Path

from ._io import atomic_write
from ._validation import check_whole
from .errors import NeuroshotError


@dataclass(frozen=True)
class Demonstration:
    """An annotated example placed in the prompt."""

    text: str
    label: str


@dataclass(frozen=True)
class Task:
    """A text-classification task as the LLM sees it.

    The prompt is ``instruction``, then the demonstrations rendered with ``demo_template``, then
    the query rendered with ``input_template``; the model's answer is the verbalizer of a label
    (``verbalizers[label]``, default the label itself), scored after ``answer_prefix``.
    ``max_text_tokens`` cuts every text the model scores (queries and demonstrations) to its
    first that many tokens.
    """

    labels: tuple[str, ...]
    instruction: str = "Classify the text into one of these labels: {labels}."
    input_template: str = "Text: {text}\nLabel:"
    demo_template: str = "Text: {text}\nLabel: {label}"
    verbalizers: Mapping[str, str] = field(default_factory=dict)
    separator: str = "\n\n"
    answer_prefix: str = " "
    max_text_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.labels, str):
            raise NeuroshotError(f"labels must be a sequence of label names, not one string ({self.labels!r})")
        if isinstance(self.labels, Mapping) or not isinstance(self.labels, Iterable):
            raise NeuroshotError(f"labels must be a sequence of label names, got {self.labels!r:.60}")
        object.__setattr__(self, "labels", tuple(self.labels))
        for label in self.labels:
            if isinstance(label, bool) or not isinstance(label, (str, Integral)) or not str(label).strip():
                raise NeuroshotError(f"labels must be non-empty strings, got {label!r:.60}")
        labels = tuple(str(x) for x in self.labels)
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.verbalizers, Mapping):
            raise NeuroshotError(f"verbalizers must map labels to answer strings, got {type(self.verbalizers).__name__}")
        object.__setattr__(self, "verbalizers", {str(k): v for k, v in self.verbalizers.items()})
        for name in ("instruction", "input_template", "demo_template", "separator", "answer_prefix"):
            if not isinstance(getattr(self, name), str):
                raise NeuroshotError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        if self.max_text_tokens is not None:
            check_whole("max_text_tokens", self.max_text_tokens)
        if len(set(labels)) < 2:
            raise NeuroshotError(f"a task needs at least two distinct labels, got {list(labels)}")
        unknown = set(self.verbalizers) - set(labels)
        if unknown:
            raise NeuroshotError(f"verbalizers for unknown labels: {sorted(unknown)}")
        bad = [v for v in self.verbalizers.values() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise NeuroshotError(f"verbalizers must be non-empty strings, got {bad[0]!r:.60}")
        if len(set(self.verbalized)) != len(labels):
            raise NeuroshotError("two labels share the same verbalizer; the model could not tell them apart")
        _check_template("instruction", self.instruction, allowed={"labels"})
        text_input = _check_template("input_template", self.input_template, allowed={"text"})
        text_demo = _check_template("demo_template", self.demo_template, allowed={"text", "label"})
        if "text" not in text_input or "text" not in text_demo:
            raise NeuroshotError("input_template and demo_template must contain {text}")
        if "label" not in text_demo:
            raise NeuroshotError("demo_template must contain {label}")

    @property
    def verbalized(self) -> list[str]:
        """The answer string of each label, in label order."""
        return [self.verbalizers.get(label, label) for label in self.labels]

    def label_index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise NeuroshotError(f"unknown label '{label}' (labels: {', '.join(self.labels)})") from None

    def prompt(self, text: str, demos: Sequence[Demonstration] = ()) -> str:
        """The full prompt for one query, ending right before the answer."""
        parts = [self.instruction.format(labels=", ".join(self.verbalized))] if self.instruction else []
        parts += [self.demo_template.format(text=d.text, label=self.verbalized[self.label_index(d.label)])
                  for d in demos]
        parts.append(self.input_template.format(text=text))
        return self.separator.join(parts)

    def fingerprint(self) -> str:
        """A short hash of everything that changes what the model sees."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            json.dump(asdict(self), fh, indent=2)

    @classmethod
    def from_json(cls, path: str | Path) -> Task:
        """Read a task from a JSON file with the same fields as the dataclass."""
        from .data import parse_json, read_text_file

        spec = parse_json(read_text_file(Path(path), "task file"), path)
        if not isinstance(spec, dict) or "labels" not in spec:
            raise NeuroshotError(f"task file {path} must be a JSON object with a 'labels' list")
        unknown = sorted(set(spec) - {f.name for f in fields(cls)})
        if unknown:
            raise NeuroshotError(f"task file {path}: unknown field(s) {', '.join(unknown)} "
                                 f"(fields: {', '.join(f.name for f in fields(cls))})")
        try:
            return cls(**spec)
        except NeuroshotError as exc:
            raise NeuroshotError(f"task file {path}: {exc}") from None


def _check_template(name: str, template: str, allowed: set[str]) -> set[str]:
    """The fields of a prompt template, each a plain ``{field}`` among ``allowed``; else a clear error.

    Checked when the task is made, not when the first prompt is formatted: a stray brace would
    otherwise surface as a ``ValueError`` or ``KeyError`` deep inside probing.
    """
    hint = "write {{ and }} for a literal brace"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise NeuroshotError(f"{name} {template!r:.80}: {exc} ({hint})") from None
    found = set()
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in allowed or spec or conversion:
            shown = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            fields_allowed = ", ".join("{" + f + "}" for f in sorted(allowed))
            raise NeuroshotError(f"{name} {template!r:.80}: {shown} is not a field it may hold "
                                 f"(only {fields_allowed}; {hint})")
        found.add(field_name)
    return found
