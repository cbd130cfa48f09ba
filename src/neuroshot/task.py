"""The classification task: instruction, labels, verbalizers and prompt templates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._io import atomic_write
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
        labels = tuple(str(x) for x in self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "verbalizers", dict(self.verbalizers))
        if len(set(labels)) < 2:
            raise NeuroshotError(f"a task needs at least two distinct labels, got {list(labels)}")
        unknown = set(self.verbalizers) - set(labels)
        if unknown:
            raise NeuroshotError(f"verbalizers for unknown labels: {sorted(unknown)}")
        if len(set(self.verbalized)) != len(labels):
            raise NeuroshotError("two labels share the same verbalizer; the model could not tell them apart")
        if "{text}" not in self.input_template or "{text}" not in self.demo_template:
            raise NeuroshotError("input_template and demo_template must contain {text}")
        if "{label}" not in self.demo_template:
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
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NeuroshotError(f"task file not found: {path}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise NeuroshotError(f"task file {path} is not valid JSON: {exc}") from None
        if not isinstance(spec, dict) or "labels" not in spec:
            raise NeuroshotError(f"task file {path} must be a JSON object with a 'labels' list")
        try:
            return cls(**spec)
        except TypeError as exc:
            raise NeuroshotError(f"task file {path}: {exc}") from None
