"""Name -> class registries for the pluggable parts (strategies, retrievers)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from .errors import NeuroshotError

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes with a ``name`` attribute, registered by a decorator and built by name with parameters."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available by its ``name``."""
        self.classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def create(self, name: str, **params: Any) -> T:
        try:
            cls = self.classes[name]
        except KeyError:
            raise NeuroshotError(f"unknown {self.kind} '{name}' (available: {', '.join(sorted(self.classes))})") from None
        try:
            return cls(**params)
        except TypeError as exc:
            raise NeuroshotError(f"{self.kind} '{name}': {exc}") from None
