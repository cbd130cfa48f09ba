"""From a DSPy signature to a ``neuroshot.Task``: which fields are the input text, which is the label."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dspy

from neuroshot import NeuroshotError, Task


@dataclass(frozen=True)
class SignatureTask:
    """How a signature maps to a classification task: input fields -> text, one output field -> label."""

    input_fields: tuple[str, ...]
    output_field: str
    task: Task

    @classmethod
    def from_signature(cls, signature: type[dspy.Signature], *, output_field: str | None = None,
                       labels: Sequence[str] | None = None, trainset_labels: Sequence[str] = (),
                       max_text_tokens: int | None = None) -> SignatureTask:
        """Build the task. Labels come from ``labels``, else the output field's ``Literal[...]``
        values, else the distinct labels of a labeled trainset (first-seen order)."""
        inputs = tuple(signature.input_fields)
        if not inputs:
            raise NeuroshotError("the program's signature has no input field")
        field = output_field or label_field(signature)
        if field not in signature.output_fields:
            raise NeuroshotError(f"'{field}' is not an output field of the signature "
                                 f"(output fields: {', '.join(signature.output_fields)})")
        if labels is None:
            labels = literal_choices(signature.output_fields[field].annotation)
        if labels is None:
            labels = list(dict.fromkeys(str(x) for x in trainset_labels if x is not None and str(x).strip()))
        if len(set(labels)) < 2:
            raise NeuroshotError(f"cannot tell the labels of '{field}': type it Literal[...], pass labels=, "
                                 "or give a labeled trainset with at least two labels")
        instruction = " ".join((signature.instructions or "").split()).replace("{", "{{").replace("}", "}}")
        instruction = f"{instruction} Answer with one of: {{labels}}.".strip()
        answer = _title(field)
        if len(inputs) == 1:
            name = _title(inputs[0])
            input_template, demo_template = f"{name}: {{text}}\n{answer}:", f"{name}: {{text}}\n{answer}: {{label}}"
        else:
            input_template, demo_template = f"{{text}}\n{answer}:", f"{{text}}\n{answer}: {{label}}"
        task = Task(labels=tuple(str(x) for x in labels), instruction=instruction, input_template=input_template,
                    demo_template=demo_template, max_text_tokens=max_text_tokens)
        return cls(inputs, field, task)

    def text(self, values: Mapping[str, typing.Any], where: str = "input") -> str:
        """The text the model is probed on: the input field's value, or one ``Name: value`` line per field."""
        missing = [f for f in self.input_fields if f not in values or values[f] is None]
        if missing:
            raise NeuroshotError(f"{where} has no value for input field(s) {', '.join(missing)}")
        if len(self.input_fields) == 1:
            return str(values[self.input_fields[0]])
        return "\n".join(f"{_title(f)}: {values[f]}" for f in self.input_fields)

    def label_of(self, example: dspy.Example, where: str) -> str:
        """The example's label, checked against the task's labels (case and outer spaces ignored)."""
        value = example.get(self.output_field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise NeuroshotError(f"{where} has no '{self.output_field}': label every trainset example, or pass "
                                 "annotator= or export_path= for active mode")
        return self.canonical(value, where)

    def canonical(self, value: typing.Any, where: str) -> str:
        by_key = {label.casefold(): label for label in self.task.labels}
        label = by_key.get(str(value).strip().casefold())
        if label is None:
            raise NeuroshotError(f"{where}: unknown label {value!r} (labels: {', '.join(self.task.labels)})")
        return label

    def example(self, values: Mapping[str, typing.Any], label: str) -> dspy.Example:
        """A demo: the input fields and the label, inputs marked."""
        fields = {f: values[f] for f in self.input_fields}
        return dspy.Example(**fields, **{self.output_field: label}).with_inputs(*self.input_fields)


def literal_choices(annotation: typing.Any) -> list[str] | None:
    """The values of a ``Literal[...]`` annotation as strings, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return None


def label_field(signature: type[dspy.Signature]) -> str:
    """The one ``Literal``-typed output field, else the last output field."""
    fields = signature.output_fields
    literal = [name for name, f in fields.items() if literal_choices(f.annotation) is not None]
    if len(literal) == 1:
        return literal[0]
    return list(fields)[-1]


def _title(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def program_signature(program: dspy.Module) -> type[dspy.Signature]:
    """The signature of the program's first predictor (the one the task is read from)."""
    predictors = program.named_predictors()
    if not predictors:
        raise NeuroshotError(f"{type(program).__name__} has no predictors to give demonstrations to")
    return predictors[0][1].signature
