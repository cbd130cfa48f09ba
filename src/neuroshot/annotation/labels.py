"""The planned item an annotator sees and the label set its answers are checked against."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import NeuroshotError


@dataclass(frozen=True)
class AnnotationItem:
    """One planned item shown to an annotator.

    ``rank`` is the 1-based position in the plan; ``why`` is a one-line reason it was chosen.
    """

    id: str
    text: str
    rank: int
    why: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"AnnotationItem.id must be a non-empty string, got {self.id!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"AnnotationItem.rank must be an integer >= 1, got {self.rank!r}")


class _LabelSet:
    """The allowed labels, matched case-insensitively with surrounding whitespace ignored."""

    def __init__(self, labels: Iterable[str]) -> None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of label names, not a single string")
        self._by_key: dict[str, str] = {}
        for raw in labels:
            if not isinstance(raw, str) or not raw.strip():
                raise NeuroshotError(f"labels must be non-empty strings, got {raw!r}")
            name = raw.strip()
            key = name.casefold()
            if key in self._by_key:
                given = ", ".join(self._by_key.values())
                raise NeuroshotError(f"label {name!r} is given twice (labels are matched ignoring case): {given}")
            self._by_key[key] = name
        if not self._by_key:
            raise NeuroshotError("no labels given: pass the label set, e.g. --labels positive,negative")
        self.names: tuple[str, ...] = tuple(self._by_key.values())

    def __str__(self) -> str:
        return ", ".join(self.names)

    def lookup(self, value: Any) -> str | None:
        """The canonical spelling of ``value``, or None if it is not a label."""
        if isinstance(value, (dict, list, bool)) or value is None:
            return None
        return self._by_key.get(str(value).strip().casefold())

    def resolve(self, value: Any, where: str) -> str | None:
        """Canonical label for ``value``; None if it is empty (not annotated yet); else an error."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        name = self.lookup(value)
        if name is None:
            raise NeuroshotError(f"{where}: unknown label {value!r}; allowed labels: {self}")
        return name
